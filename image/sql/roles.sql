-- The roles the operator and the helpers build on (the operator makes its
-- users IN ROLE the human role and admin, its infrastructure roles IN ROLE
-- robot_zmon), each created when missing and then given exactly its
-- attributes, whatever someone changed since.
-- psql variables: admin, admin_password, human_role.

-- This script carries a password: nothing of it goes to the server log
-- (neither sampled nor explained), an audit log or pg_stat_statements.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
SET log_min_duration_sample = -1;
SET log_transaction_sample_rate = 0;
-- A placeholder when auto_explain is not loaded (the superuser may set one).
SET auto_explain.log_min_duration = -1;
SET pgaudit.log = 'none';
SET pg_stat_statements.track_utility = off;

SELECT DISTINCT pg_catalog.format('CREATE ROLE %I', name)
  FROM pg_catalog.unnest(ARRAY[:'admin', 'cron_admin', :'human_role', 'robot_zmon']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = name)
\gexec

ALTER ROLE cron_admin WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE robot_zmon WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"human_role" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
-- admin last: it keeps CREATEDB even if HUMAN_ROLE names it too.
ALTER ROLE :"admin" WITH NOLOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
GRANT cron_admin TO :"admin";

-- PGPASSWORD_ADMIN for an admin without a password; one it has is kept,
-- so that a second run changes nothing (a new SCRAM salt each time would).
SELECT pg_catalog.format('ALTER ROLE %I PASSWORD %L', rolname, :'admin_password')
  FROM pg_catalog.pg_authid
 WHERE rolname = :'admin' AND rolpassword IS NULL
\gexec

-- The monitor on 8080 (spilo init) samples over the local socket as a role
-- of its own that may read every session's statistics and nothing else.
SELECT 'CREATE ROLE spilo_monitor'
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'spilo_monitor')
\gexec
ALTER ROLE spilo_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 3;
GRANT pg_read_all_stats TO spilo_monitor;
