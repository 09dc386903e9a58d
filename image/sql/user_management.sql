-- Spilo's user management functions, with its names, arguments and
-- results: members of admin create and drop the roles of their team through
-- them, without CREATEROLE of their own. Each runs as its owner, the
-- superuser, with a fixed search_path; the role names it needs travel in
-- its own settings (spilo.admin_role, spilo.human_role), as function bodies
-- take no psql variables. psql variables: admin, human_role.

CREATE SCHEMA IF NOT EXISTS user_management;
GRANT USAGE ON SCHEMA user_management TO :"admin";

CREATE OR REPLACE FUNCTION user_management.random_password(length integer)
RETURNS text
LANGUAGE sql
SET search_path TO pg_catalog
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

CREATE OR REPLACE FUNCTION user_management.create_application_user(username text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog
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
SET search_path TO pg_catalog
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
SET search_path TO pg_catalog
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
SET search_path TO pg_catalog
AS $body$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = username AND (rolsuper OR rolreplication)) THEN
        RAISE EXCEPTION 'role "%" is a superuser or replication role, not managed here', username
            USING ERRCODE = 'insufficient_privilege';
    ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = username) THEN
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
SET search_path TO pg_catalog
SET spilo.admin_role TO :'admin'
AS $body$
BEGIN
    EXECUTE format('REVOKE %I FROM %I', current_setting('spilo.admin_role'), username);
END
$body$;
COMMENT ON FUNCTION user_management.revoke_admin(text) IS
    'Takes admin from a role (a person who should only read, say)';

CREATE OR REPLACE FUNCTION user_management.drop_user(username text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path TO pg_catalog
AS $body$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = username AND (rolsuper OR rolreplication)) THEN
        RAISE EXCEPTION 'role "%" is a superuser or replication role, not managed here', username
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
SET search_path TO pg_catalog
AS $body$
    SELECT user_management.drop_user(username)
$body$;
COMMENT ON FUNCTION user_management.drop_role(text) IS
    'The same as drop_user';

CREATE OR REPLACE FUNCTION user_management.terminate_backend(pid integer)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path TO pg_catalog
AS $body$
    SELECT pg_terminate_backend(pid)
$body$;
COMMENT ON FUNCTION user_management.terminate_backend(integer) IS
    'Ends the session with this process id (see pg_stat_activity, where admin sees every query)';

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
GRANT SELECT ON pg_catalog.pg_stat_activity TO :"admin";
