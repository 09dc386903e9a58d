-- The csv logs as tables, in the database Patroni connects to:
-- public.postgres_log holds no rows of its own; its children
-- postgres_log_0 ... postgres_log_7 read postgresql-0.csv ... -7.csv in
-- log_directory (log_filename postgresql-%u.log with csvlog writes one
-- file per ISO weekday, 1 to 7; 0 is Sunday for %w, as Spilo has it), and
-- failed_authentication_N shows that day's refused logins.
-- psql variables: admin.

CREATE EXTENSION IF NOT EXISTS file_fdw SCHEMA public;
CREATE SERVER IF NOT EXISTS pglog FOREIGN DATA WRAPPER file_fdw;
CREATE TABLE IF NOT EXISTS public.postgres_log (
    CONSTRAINT postgres_log_check CHECK (false) NO INHERIT
);

-- csvlog's fields, in the order the server writes them (file_fdw reads by
-- position), each with the first server_version_num that writes it; the
-- running server's are added to the table, and so to every child, where
-- missing (a table of an older major gets the newer ones at the end).
-- A field a new major adds is one more row here.
DO $columns$
DECLARE
    field record;
BEGIN
    FOR field IN
        SELECT f.name, f.type
          FROM (VALUES
                    (1, 'log_time', 'timestamp(3) with time zone', 0),
                    (2, 'user_name', 'text', 0),
                    (3, 'database_name', 'text', 0),
                    (4, 'process_id', 'integer', 0),
                    (5, 'connection_from', 'text', 0),
                    (6, 'session_id', 'text', 0),
                    (7, 'session_line_num', 'bigint', 0),
                    (8, 'command_tag', 'text', 0),
                    (9, 'session_start_time', 'timestamp with time zone', 0),
                    (10, 'virtual_transaction_id', 'text', 0),
                    (11, 'transaction_id', 'bigint', 0),
                    (12, 'error_severity', 'text', 0),
                    (13, 'sql_state_code', 'text', 0),
                    (14, 'message', 'text', 0),
                    (15, 'detail', 'text', 0),
                    (16, 'hint', 'text', 0),
                    (17, 'internal_query', 'text', 0),
                    (18, 'internal_query_pos', 'integer', 0),
                    (19, 'context', 'text', 0),
                    (20, 'query', 'text', 0),
                    (21, 'query_pos', 'integer', 0),
                    (22, 'location', 'text', 0),
                    (23, 'application_name', 'text', 0),
                    (24, 'backend_type', 'text', 130000),
                    (25, 'leader_pid', 'integer', 140000),
                    (26, 'query_id', 'bigint', 140000)
               ) AS f (position, name, type, since)
         WHERE f.since <= pg_catalog.current_setting('server_version_num')::integer
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                            WHERE attrelid = 'public.postgres_log'::pg_catalog.regclass
                              AND attname = f.name
                              AND NOT attisdropped)
         ORDER BY f.position
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.postgres_log ADD COLUMN %I %s', field.name, field.type);
    END LOOP;
END
$columns$;
GRANT SELECT ON TABLE public.postgres_log TO :"admin";

-- Per weekday: the foreign table, its grant, the failed logins view. A
-- child reads its file through a program that gives nothing while the
-- file does not exist yet (with file_fdw's filename every query of
-- postgres_log would fail until each day has had its log, and so would
-- ANALYZE of the whole database, vacuumdb's too), and that ANALYZE skips.
-- A child of an older setup (Spilo's filename, another log_directory) is
-- pointed at the program.
WITH day AS (
    SELECT n,
           pg_catalog.format('postgres_log_%s', n) AS log_table,
           pg_catalog.format('failed_authentication_%s', n) AS failed_view,
           -- the file's path in single quotes for the shell
           pg_catalog.format('''%s''', pg_catalog.replace(
               pg_catalog.format('%s/postgresql-%s.csv', pg_catalog.current_setting('log_directory'), n),
               '''', '''\''''')) AS file
      FROM pg_catalog.generate_series(0, 7) AS n
),
wanted AS (
    SELECT day.*, pg_catalog.format('[ ! -e %1$s ] || exec cat %1$s', day.file) AS program
      FROM day
)
SELECT CASE
           WHEN ft.ftrelid IS NULL THEN pg_catalog.format(
               'CREATE FOREIGN TABLE public.%I () INHERITS (public.postgres_log) SERVER pglog OPTIONS (program %L, format %L)',
               w.log_table, w.program, 'csv')
           WHEN ft.ftoptions @> ARRAY['program=' || w.program] THEN NULL
           WHEN EXISTS (SELECT FROM pg_catalog.unnest(ft.ftoptions) AS o WHERE o LIKE 'filename=%') THEN pg_catalog.format(
               'ALTER FOREIGN TABLE public.%I OPTIONS (DROP filename, ADD program %L)', w.log_table, w.program)
           ELSE pg_catalog.format(
               'ALTER FOREIGN TABLE public.%I OPTIONS (SET program %L)', w.log_table, w.program)
       END,
       pg_catalog.format('GRANT SELECT ON TABLE public.%I TO %I', w.log_table, :'admin'),
       pg_catalog.format(
           'CREATE OR REPLACE VIEW public.%I WITH (security_barrier) AS SELECT * FROM public.%I WHERE command_tag = %L AND error_severity = %L',
           w.failed_view, w.log_table, 'authentication', 'FATAL'),
       pg_catalog.format('GRANT SELECT ON TABLE public.%I TO robot_zmon', w.failed_view)
  FROM wanted AS w
  LEFT JOIN pg_catalog.pg_foreign_table AS ft
    ON ft.ftrelid = pg_catalog.to_regclass(pg_catalog.format('public.%I', w.log_table))
 ORDER BY w.n
\gexec
