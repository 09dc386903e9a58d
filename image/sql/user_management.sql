-- Spilo's user management functions, with its names, arguments and
-- results: members of admin create and drop the roles of their team through
-- them, without CREATEROLE of their own. Each runs as its owner, the
-- superuser, with a fixed search_path that puts pg_temp last (so that no
-- temporary table of the caller's stands in for a catalog); the role names
-- it needs travel in its own settings (spilo.admin_role,
-- spilo.human_role), as function bodies take no psql variables. None of
-- them touches a privileged role: a superuser, a replication role, one with
-- CREATEROLE or BYPASSRLS, or a member of a role that reads or writes the
-- server's files or runs its programs (each as good as a superuser).
-- psql variables: admin, human_role.

CREATE SCHEMA IF NOT EXISTS user_management;
GRANT USAGE ON SCHEMA user_management TO :"admin";

CREATE OR REPLACE FUNCTION user_management.random_password(length integer)
RETURNS text
LANGUAGE sql
SET search_path TO pg_catalog, pg_temp
AS $body$
    -- 64 symbols, so that a random byte modulo 64 favours none; the bytes
    -- come from gen_random_uuid(), the server's strong random source (the
    -- first byte of a version 4 UUID is entirely random).
    SELECT string_agg(substr('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
                             1 + get_byte(uuid_send(gen_random_uuid()), 0) % 64, 1), '')
      FROM generate_series(1, length)
$body$;
COMMENT ON FUNCTION user_management.random_password(integer) IS
    'A random password of the given length (letters, digits, - and _)';

-- Whether a role is privileged (see above); false for one that does not
-- exist. Not callable by anyone but its owner: the functions below use it.
CREATE OR REPLACE FUNCTION user_management.is_privileged_role(username text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_roles AS r
         WHERE r.rolname = username
           AND (r.rolsuper OR r.rolreplication OR r.rolcreaterole OR r.rolbypassrls
                OR pg_catalog.pg_has_role(r.oid, 'pg_execute_server_program', 'MEMBER')
                OR pg_catalog.pg_has_role(r.oid, 'pg_write_server_files', 'MEMBER')
                OR pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'MEMBER')))
$body$;
REVOKE ALL ON FUNCTION user_management.is_privileged_role(text) FROM PUBLIC;
COMMENT ON FUNCTION user_management.is_privileged_role(text) IS
    'Whether user_management leaves this role alone: a superuser, replication, CREATEROLE or BYPASSRLS role, or one with the server''s files or programs';

CREATE OR REPLACE FUNCTION user_management.create_application_user(username text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
DECLARE
    password text := user_management.random_password(20);
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', username, password);
    RETURN password;
END
$body$;
COMMENT ON FUNCTION user_management.create_application_user(text) IS
    'Creates a role that logs in with a new random password, and returns the password';

CREATE OR REPLACE FUNCTION user_management.create_user(username text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
SET spilo.admin_role TO :'admin'
SET spilo.human_role TO :'human_role'
AS $body$
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN IN ROLE %I, %I',
                   username, current_setting('spilo.human_role'), current_setting('spilo.admin_role'));
    EXECUTE format('ALTER ROLE %I SET log_statement TO %L', username, 'all');
END
$body$;
COMMENT ON FUNCTION user_management.create_user(text) IS
    'Creates a person''s role: a member of the human role and admin, no password of its own (it logs in through PAM), every statement logged';

CREATE OR REPLACE FUNCTION user_management.create_role(rolename text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
SET spilo.admin_role TO :'admin'
AS $body$
BEGIN
    -- admin holds it WITH ADMIN OPTION: its members grant it to each other.
    EXECUTE format('CREATE ROLE %I ADMIN %I', rolename, current_setting('spilo.admin_role'));
END
$body$;
COMMENT ON FUNCTION user_management.create_role(text) IS
    'Creates a role that cannot log in, to hold privileges; members of admin may grant it';

CREATE OR REPLACE FUNCTION user_management.create_application_user_or_change_password(username text, password text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
BEGIN
    IF user_management.is_privileged_role(username) THEN
        RAISE EXCEPTION 'role "%" is a superuser, replication or otherwise privileged role, not managed here', username
            USING ERRCODE = 'insufficient_privilege';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = username) THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', username, password);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', username, password);
    END IF;
END
$body$;
COMMENT ON FUNCTION user_management.create_application_user_or_change_password(text, text) IS
    'For emergencies only, as the password shows in the statement log: creates a role that logs in with this password, or gives an existing one this password';

CREATE OR REPLACE FUNCTION user_management.revoke_admin(username text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
SET spilo.admin_role TO :'admin'
AS $body$
BEGIN
    IF user_management.is_privileged_role(username) THEN
        RAISE EXCEPTION 'role "%" is a superuser, replication or otherwise privileged role, not managed here', username
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('REVOKE %I FROM %I', current_setting('spilo.admin_role'), username);
END
$body$;
COMMENT ON FUNCTION user_management.revoke_admin(text) IS
    'Takes admin from a role (a person who should only read, say)';

CREATE OR REPLACE FUNCTION user_management.drop_user(username text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
BEGIN
    IF user_management.is_privileged_role(username) THEN
        RAISE EXCEPTION 'role "%" is a superuser, replication or otherwise privileged role, not managed here', username
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('DROP ROLE %I', username);
END
$body$;
COMMENT ON FUNCTION user_management.drop_user(text) IS
    'Drops a person''s or an application''s role (one that owns nothing: objects keep their owner)';

CREATE OR REPLACE FUNCTION user_management.drop_role(username text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT user_management.drop_user(username)
$body$;
COMMENT ON FUNCTION user_management.drop_role(text) IS
    'The same as drop_user';

CREATE OR REPLACE FUNCTION user_management.terminate_backend(pid integer)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
DECLARE
    target record;
BEGIN
    SELECT a.backend_type, a.usename
      INTO target
      FROM pg_catalog.pg_stat_activity AS a
     WHERE a.pid = terminate_backend.pid;
    IF NOT FOUND THEN
        RAISE WARNING 'PID % is not a PostgreSQL backend process', terminate_backend.pid;
        RETURN false;
    ELSIF target.backend_type IS DISTINCT FROM 'client backend' THEN
        RAISE EXCEPTION 'process % is a %, not a client''s session', terminate_backend.pid, target.backend_type
            USING ERRCODE = 'insufficient_privilege';
    ELSIF target.usename IS NULL OR user_management.is_privileged_role(target.usename) THEN
        RAISE EXCEPTION 'process % is the session of a superuser, replication or otherwise privileged role, not managed here',
                        terminate_backend.pid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN pg_catalog.pg_terminate_backend(terminate_backend.pid);
END
$body$;
COMMENT ON FUNCTION user_management.terminate_backend(integer) IS
    'Ends the client session with this process id (see pg_stat_activity), unless a privileged role''s';

REVOKE ALL ON FUNCTION
    user_management.create_application_user(text),
    user_management.create_user(text),
    user_management.create_role(text),
    user_management.create_application_user_or_change_password(text, text),
    user_management.revoke_admin(text),
    user_management.drop_user(text),
    user_management.drop_role(text),
    user_management.terminate_backend(integer)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    user_management.create_application_user(text),
    user_management.create_user(text),
    user_management.create_role(text),
    user_management.create_application_user_or_change_password(text, text),
    user_management.revoke_admin(text),
    user_management.drop_user(text),
    user_management.drop_role(text),
    user_management.terminate_backend(integer)
  TO :"admin";
