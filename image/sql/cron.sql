-- pg_cron, in the database its scheduler reads, set up so that the members
-- of cron_admin see and manage each other's jobs and never a superuser's.
-- Run only where the major ships pg_cron and the server preloads it.

-- Spilo once had a cron.schedule(p_schedule, p_database, p_command) of
-- its own, which stands in the way of pg_cron's schedule(job_name,
-- schedule, command) on update: it becomes schedule_in_database (below),
-- or goes when that exists already.
SELECT CASE WHEN pg_catalog.to_regprocedure('cron.schedule_in_database(text,text,text)') IS NULL
            THEN 'ALTER FUNCTION cron.schedule(text, text, text) RENAME TO schedule_in_database'
            ELSE 'DROP FUNCTION cron.schedule(text, text, text)'
       END
  FROM pg_catalog.pg_proc AS p
 WHERE p.oid = pg_catalog.to_regprocedure('cron.schedule(text,text,text)')
   AND p.proargnames = ARRAY['p_schedule', 'p_database', 'p_command']
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid
                      AND d.deptype = 'e')
\gexec
CREATE EXTENSION IF NOT EXISTS pg_cron SCHEMA pg_catalog;
SELECT 'ALTER EXTENSION pg_cron UPDATE'
  FROM pg_catalog.pg_available_extensions
 WHERE name = 'pg_cron' AND installed_version <> default_version
\gexec

-- A row is visible (and, with the grants below, changeable) to its owner,
-- and to any member of cron_admin when the owner is a member too and not a
-- superuser. The owner is looked up instead of passed to pg_has_role by
-- name, so that a job left behind by a dropped role fails nobody's query.
CREATE OR REPLACE FUNCTION cron.visible_to_current_user(owner_name text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT owner_name = CURRENT_USER
        OR (pg_catalog.pg_has_role(CURRENT_USER, 'cron_admin', 'MEMBER')
            AND EXISTS (SELECT FROM pg_catalog.pg_roles AS owner
                         WHERE owner.rolname = owner_name
                           AND NOT owner.rolsuper
                           AND pg_catalog.pg_has_role(owner.oid, 'cron_admin', 'MEMBER')))
$body$;
ALTER POLICY cron_job_policy ON cron.job
    USING (cron.visible_to_current_user(username));
ALTER POLICY cron_job_run_details_policy ON cron.job_run_details
    USING (cron.visible_to_current_user(username));

-- Spilo's helper (same name and arguments): a job of the caller's that runs
-- in another database, over the local socket. Not SECURITY DEFINER: the job
-- must belong to the caller, who therefore needs to be able to log in.
CREATE OR REPLACE FUNCTION cron.schedule_in_database(p_schedule text, p_database text, p_command text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path TO pg_catalog, pg_temp
AS $body$
DECLARE
    new_job bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER AND rolcanlogin) THEN
        RAISE EXCEPTION 'role "%" cannot log in, so pg_cron could not run its job', CURRENT_USER;
    END IF;
    new_job := cron.schedule(p_schedule, p_command);
    UPDATE cron.job SET database = p_database, nodename = '' WHERE jobid = new_job;
    RETURN new_job;
END
$body$;
COMMENT ON FUNCTION cron.schedule_in_database(text, text, text) IS
    'Schedules a job of the current user that runs in the given database; returns its id';

-- Only cron_admin uses pg_cron. Its members may pause, reschedule and move
-- each other's jobs (UPDATE, under the policy); the command stays its
-- owner's to change, and a job its owner's to remove. No table-wide DELETE
-- or UPDATE: cron.unschedule and cron.alter_job take either for leave to
-- act on any job, the superuser's included, as they read the table past
-- its policy. REVOKE from cron_admin too, for a volume that granted more.
REVOKE ALL ON TABLE cron.job, cron.job_run_details FROM PUBLIC, cron_admin;
GRANT SELECT ON TABLE cron.job, cron.job_run_details TO cron_admin;
GRANT UPDATE (schedule, active, database, nodename) ON TABLE cron.job TO cron_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cron FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cron TO cron_admin;
-- The policies' test, for whoever reads the tables.
GRANT EXECUTE ON FUNCTION cron.visible_to_current_user(text) TO PUBLIC;
GRANT USAGE ON SCHEMA cron TO cron_admin;
