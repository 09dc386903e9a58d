-- The extensions Spilo creates in every database (the optional ones only
-- where the major ships them), and what admin may run of them.
-- psql variables: admin.

CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;
-- pg_stat_kcache refuses to load unless preloaded.
SELECT pg_catalog.format('CREATE EXTENSION %I SCHEMA public', name)
  FROM pg_catalog.pg_available_extensions
 WHERE installed_version IS NULL
   AND (name = 'set_user'
        OR (name = 'pg_stat_kcache'
            AND name = ANY (pg_catalog.string_to_array(
                    pg_catalog.translate(pg_catalog.current_setting('shared_preload_libraries'), ' "', ''),
                    ','))))
 ORDER BY name
\gexec
SELECT pg_catalog.format('ALTER EXTENSION %I UPDATE', name)
  FROM pg_catalog.pg_available_extensions
 WHERE name = 'set_user' AND installed_version <> default_version
\gexec

-- set_user(text) switches to a role that is no superuser; every
-- pg_stat_statements_reset (its arguments differ between versions of the
-- extension); pg_switch_wal. Only the extensions' own functions, whatever
-- else shares their schema.
SELECT pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::pg_catalog.regprocedure, :'admin')
  FROM pg_catalog.pg_proc AS p
  JOIN pg_catalog.pg_depend AS d
    ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
   AND d.objid = p.oid
   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
   AND d.deptype = 'e'
  JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
 WHERE (e.extname = 'set_user' AND p.proname = 'set_user' AND p.proargtypes = '25'::pg_catalog.oidvector)
    OR (e.extname = 'pg_stat_statements' AND p.proname = 'pg_stat_statements_reset')
 ORDER BY 1
\gexec
GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO :"admin";
