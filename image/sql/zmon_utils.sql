-- ZMON's helpers from Spilo, with their names and columns, in the
-- database Patroni connects to: the cluster's state as parameter/setting
-- rows, the last run of every active pg_cron job (where pg_cron lives in
-- this database), the replicas' replay lag. All for robot_zmon; each
-- function runs as its owner, the superuser. (Spilo's
-- get_database_cluster_system_information needs plpython3u, which the
-- image does not ship.)

CREATE SCHEMA IF NOT EXISTS zmon_utils;
GRANT USAGE ON SCHEMA zmon_utils TO robot_zmon;

CREATE OR REPLACE FUNCTION zmon_utils.get_database_cluster_information()
RETURNS TABLE (parameter text, setting text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
WITH wal AS (
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS position,
           pg_last_wal_receive_lsn() AS received
),
sessions AS (
    SELECT count(*) FILTER (WHERE state = 'active') AS active,
           count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction,
           coalesce(max(extract(epoch FROM statement_timestamp() - state_change))
                        FILTER (WHERE state = 'idle in transaction'), 0) AS idle_in_transaction_max_age,
           count(*) FILTER (WHERE wait_event_type = 'Lock') AS locked,
           count(*) AS current,
           coalesce(extract(epoch FROM statement_timestamp()
                            - min(xact_start) FILTER (WHERE backend_type <> 'autovacuum worker')), 0) AS transaction_max_age
      FROM pg_stat_activity
)
SELECT 'zmon_utils_version', '11'
UNION ALL
SELECT 'server_version_num', current_setting('server_version_num')
UNION ALL
SELECT name, setting
  FROM pg_settings
 WHERE name IN ('archive_mode', 'archive_command', 'archive_timeout', 'port', 'ssl', 'max_connections',
                'data_directory', 'fsync', 'full_page_writes', 'hba_file', 'ident_file', 'hot_standby',
                'log_destination', 'log_directory', 'log_filename', 'shared_buffers', 'synchronous_commit')
UNION ALL
SELECT 'cluster_name', current_setting('cluster_name')
UNION ALL
SELECT 'defined_databases', string_agg(quote_ident(datname), E'\n' ORDER BY datname)
  FROM pg_database
 WHERE datname <> 'postgres' AND NOT datistemplate AND datallowconn
UNION ALL
SELECT 'is_in_recovery', in_recovery::text FROM wal
UNION ALL
SELECT 'wal_bytes_from_zero', pg_wal_lsn_diff(position, '0/0')::text FROM wal
UNION ALL
SELECT 'wal_delay_seconds',
       CASE WHEN in_recovery THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::bigint::text END
  FROM wal
UNION ALL
SELECT 'is_streaming', (in_recovery AND received IS NOT NULL)::text FROM wal
UNION ALL
SELECT 'archive_nosync', EXISTS (SELECT FROM pg_ls_dir('.') AS f (name) WHERE name = 'dontsync')::text
UNION ALL
SELECT s.parameter, s.setting
  FROM sessions
 CROSS JOIN LATERAL (VALUES ('active_connections', active::text),
                            ('idle_in_transaction_connections', idle_in_transaction::text),
                            ('idle_in_transaction_max_age', idle_in_transaction_max_age::text),
                            ('locked_connections', locked::text),
                            ('current_connections', current::text),
                            ('transaction_max_age', transaction_max_age::text)) AS s (parameter, setting)
$body$;

CREATE OR REPLACE FUNCTION zmon_utils.get_replay_lag(
    OUT pid integer,
    OUT usesysid oid,
    OUT usename name,
    OUT application_name text,
    OUT replay_lag interval)
RETURNS SETOF record
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT r.pid, r.usesysid, r.usename, r.application_name, r.replay_lag
      FROM pg_stat_replication AS r
     ORDER BY r.replay_lag DESC NULLS LAST
$body$;
CREATE OR REPLACE VIEW zmon_utils.replay_lag AS
    SELECT * FROM zmon_utils.get_replay_lag();

SELECT pg_catalog.to_regclass('cron.job_run_details') IS NOT NULL AS has_cron
\gset
\if :has_cron
CREATE OR REPLACE FUNCTION zmon_utils.get_last_status_active_cronjobs(
    OUT jobid bigint,
    OUT database text,
    OUT command text,
    OUT status text,
    OUT return_message text,
    OUT start_time timestamp with time zone,
    OUT end_time timestamp with time zone)
RETURNS SETOF record
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT last.*
      FROM cron.job AS j
     CROSS JOIN LATERAL (SELECT d.jobid, d.database, d.command, d.status, d.return_message, d.start_time, d.end_time
                           FROM cron.job_run_details AS d
                          WHERE d.jobid = j.jobid
                          ORDER BY d.start_time DESC NULLS LAST
                          LIMIT 1) AS last
     WHERE j.active
     ORDER BY last.jobid
$body$;
CREATE OR REPLACE VIEW zmon_utils.last_status_active_cronjobs AS
    SELECT * FROM zmon_utils.get_last_status_active_cronjobs();
\endif

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA zmon_utils FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA zmon_utils TO robot_zmon;
REVOKE ALL ON ALL TABLES IN SCHEMA zmon_utils FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA zmon_utils TO robot_zmon;
