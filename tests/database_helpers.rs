//! The database side of Patroni's hooks against a real PostgreSQL 15 with
//! pg_cron, set_user and pg_stat_kcache preloaded and csv logs, as the
//! image runs it: `spilo hook post-init` and `spilo hook on-role-change`,
//! run as postgres the way Patroni runs them. Each test has a server of
//! its own on its own port and socket.

mod init_support;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use init_support::{PG_BIN, Scratch, psql_as, rows, spilo, tail, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};
use serde_json::json;

/// A HUMAN_ROLE and an admin password that need quoting everywhere.
const HUMAN_ROLE: &str = "Zalando's-Team$";
const ADMIN_PASSWORD: &str = "it's a \\ $secret :x";
const PRELOAD: &str = "pg_stat_statements,set_user,pg_cron,pg_stat_kcache";
/// The csv logs' directory, a name the shell must be given quoted.
const LOG_DIR: &str = "pg log's";

fn postgres_user() -> User {
    User::from_name("postgres")
        .ok()
        .flatten()
        .expect("postgres user: run tests/setup")
}

fn give_to_postgres(path: &Path) {
    let user = postgres_user();
    chown(path, Some(user.uid), Some(user.gid)).expect("chown");
}

/// A PostgreSQL 15 of its own, killed and removed on drop.
struct Server {
    scratch: Scratch,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(tag: &str, preload: &str) -> Self {
        for lib in preload.split(',') {
            let path = PathBuf::from(format!("/usr/lib/postgresql/15/lib/{lib}.so"));
            assert!(path.exists(), "{} missing: run tests/setup", path.display());
        }
        let scratch = Scratch::new(tag);
        for dir in ["data", "run", LOG_DIR] {
            let path = scratch.path.join(dir);
            fs::create_dir(&path).expect("mkdir");
            give_to_postgres(&path);
        }
        let server = Server {
            port: TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port(),
            scratch,
            child: None,
        };
        let initdb = as_postgres(Path::new(PG_BIN).join("initdb"))
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth=trust",
                "-D",
            ])
            .arg(server.data())
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        fs::write(
            server.data().join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        server.launch(preload)
    }

    /// The postmaster over the new data directory, csv logs on, as the
    /// image configures them.
    fn launch(mut self, preload: &str) -> Self {
        let log = fs::File::create(self.scratch.path.join("server.log")).expect("server log");
        let settings = [
            format!("port={}", self.port),
            "listen_addresses=127.0.0.1".into(),
            format!("unix_socket_directories={}", self.socket().display()),
            format!("shared_preload_libraries={preload}"),
            "logging_collector=on".into(),
            "log_destination=csvlog".into(),
            format!("log_directory={}", self.log_dir().display()),
            "log_filename=postgresql-%u.log".into(),
            "log_file_mode=0644".into(),
            "log_rotation_age=1d".into(),
            "log_truncate_on_rotation=on".into(),
            // Nothing analyzes behind the tests' back.
            "autovacuum=off".into(),
            "fsync=off".into(),
            "shared_buffers=16MB".into(),
            "max_connections=40".into(),
        ];
        let mut command = as_postgres(Path::new(PG_BIN).join("postgres"));
        command.arg("-D").arg(self.data());
        for setting in &settings {
            command.args(["-c", setting]);
        }
        self.child = Some(
            command
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start postgres"),
        );
        wait_for(
            "postgres accepting connections",
            Duration::from_secs(30),
            || self.psql("postgres", "postgres", "SELECT 1").ok(),
        );
        self
    }

    fn data(&self) -> PathBuf {
        self.scratch.path.join("data")
    }

    fn socket(&self) -> PathBuf {
        self.scratch.path.join("run")
    }

    fn log_dir(&self) -> PathBuf {
        self.scratch.path.join(LOG_DIR)
    }

    /// SQL over the socket as `user` in `database`; rows as text.
    fn psql(&self, user: &str, database: &str, sql: &str) -> Result<String, String> {
        psql_as(&self.socket(), self.port, user, &dbname(database), sql)
    }

    /// SQL as the superuser in postgres, which must succeed.
    fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    fn sql_in(&self, database: &str, sql: &str) -> String {
        self.psql("postgres", database, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A login over TCP with a password, as an application would.
    fn login(&self, user: &str, password: &str) -> Result<String, String> {
        rows(
            Command::new(Path::new(PG_BIN).join("psql"))
                .args(["-X", "-A", "-t", "-h", "127.0.0.1"])
                .args(["-p", &self.port.to_string(), "-U", user, "-d", "postgres"])
                .args(["-c", "SELECT current_user"])
                .env("PGPASSWORD", password)
                .env("PGCONNECT_TIMEOUT", "5"),
        )
    }

    /// The spec `spilo init` would write for this server.
    fn spec(&self) -> PathBuf {
        let path = self.scratch.path.join("hooks.json");
        let spec = json!({
            "bin_dir": PG_BIN,
            "socket_dir": self.socket(),
            "port": self.port,
            "pgpass": self.scratch.path.join("run/pgpass"),
            "superuser": "postgres",
            "admin": "admin",
            "admin_password": ADMIN_PASSWORD,
            "human_role": HUMAN_ROLE,
        });
        fs::write(&path, spec.to_string()).expect("write spec");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        give_to_postgres(&path);
        path
    }

    /// `spilo hook ARGS...` as postgres, as Patroni runs it.
    fn hook(&self, args: &[&str]) -> Output {
        as_postgres(spilo())
            .arg("hook")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .expect("run spilo hook")
    }

    fn assert_hook(&self, args: &[&str]) -> Output {
        let out = self.hook(args);
        assert!(
            out.status.success(),
            "spilo hook {args:?}: {}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.server_log(), 20)
        );
        out
    }

    /// Bootstrap's hook, with a connection string as Patroni formats it.
    fn post_init(&self) -> Output {
        let spec = self.spec();
        let connection = format!(
            "dbname=postgres user=postgres host={} port={}",
            self.socket().display(),
            self.port
        );
        self.assert_hook(&["post-init", &spec.display().to_string(), &connection])
    }

    fn role_change(&self, role: &str) -> Output {
        let spec = self.spec();
        let spec = spec.display().to_string();
        self.assert_hook(&["on-role-change", &spec, "on_role_change", role, "test"])
    }

    fn server_log(&self) -> String {
        let mut text = fs::read_to_string(self.scratch.path.join("server.log")).unwrap_or_default();
        if let Ok(entries) = fs::read_dir(self.log_dir()) {
            for entry in entries.flatten() {
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let user = postgres_user();
    let mut command = Command::new(program);
    command
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir("/");
    command
}

/// A conninfo naming `database`, whatever its characters.
fn dbname(database: &str) -> String {
    format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// A SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (standard_conforming_strings is on).
fn lit(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What the hooks own, as text: roles and memberships (password hashes
/// included), functions, relations and their grants, views, foreign
/// tables, the log table's columns, policies, extensions, schemas. Equal
/// before and after a run means the run changed nothing.
const SNAPSHOT: &str = "SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
    SELECT format('role %s %s %s %s %s %s %s %s %s', rolname, rolsuper, rolinherit, rolcreaterole,
                  rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolpassword)
      FROM pg_authid WHERE rolname !~ '^pg_'
    UNION ALL
    SELECT format('member %s %s %s', roleid::regrole, member::regrole, admin_option) FROM pg_auth_members
    UNION ALL
    SELECT format('proc %s %s %s %s %s %s %s', p.oid, p.oid::regprocedure, md5(p.prosrc), p.proconfig,
                  p.proacl, p.provolatile, p.prosecdef)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('user_management', 'metric_helpers', 'cron', 'public')
    UNION ALL
    SELECT format('rel %s %s %s %s %s', c.oid, c.oid::regclass, c.relkind, c.relacl,
                  CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('user_management', 'metric_helpers', 'cron', 'public')
    UNION ALL
    SELECT format('foreign %s %s', ftrelid::regclass, ftoptions) FROM pg_foreign_table
    UNION ALL
    SELECT format('column %s %s %s %s', attrelid::regclass, attnum, attname, atttypid::regtype)
      FROM pg_attribute WHERE attrelid = to_regclass('public.postgres_log') AND attnum > 0
    UNION ALL
    SELECT format('policy %s %s', polname, pg_get_expr(polqual, polrelid)) FROM pg_policy
    UNION ALL
    SELECT format('extension %s %s %s', extname, extversion, extnamespace::regnamespace) FROM pg_extension
    UNION ALL
    SELECT format('schema %s %s %s', oid, nspname, nspacl) FROM pg_namespace
) AS s (line)";

fn snapshot(server: &Server) -> Vec<String> {
    ["postgres", "template1"]
        .iter()
        .map(|db| server.sql_in(db, SNAPSHOT))
        .collect()
}

/// name:login:superuser:createdb:createrole:replication:bypassrls:inherit
fn attributes(server: &Server, role: &str) -> String {
    server.sql(&format!(
        "SELECT concat_ws(':', rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit) FROM pg_roles WHERE rolname = {}",
        lit(role)
    ))
}

fn is_member(server: &Server, member: &str, role: &str) -> bool {
    server.sql(&format!(
        "SELECT count(*) FROM pg_auth_members WHERE roleid = {}::regrole AND member = {}::regrole",
        lit(&ident(role)),
        lit(&ident(member))
    )) == "1"
}

#[test]
fn the_roles_are_made_and_reset_after_every_promotion() {
    let server = Server::start("hook-roles", PRELOAD);
    server.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id");
    let out = server.post_init();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "spilo hook post-init: roles ensured: admin, {HUMAN_ROLE}, cron_admin, robot_zmon, spilo_monitor"
        )),
        "{out:?}"
    );

    let nologin = "f:f:f:f:f:f:t";
    assert_eq!(attributes(&server, "admin"), "f:f:t:f:f:f:t");
    for role in ["cron_admin", HUMAN_ROLE, "robot_zmon"] {
        assert_eq!(attributes(&server, role), nologin, "{role}");
    }
    assert!(is_member(&server, "admin", "cron_admin"));
    // The monitor's role logs in and reads statistics, nothing more.
    assert_eq!(attributes(&server, "spilo_monitor"), "t:f:f:f:f:f:t");
    assert!(is_member(&server, "spilo_monitor", "pg_read_all_stats"));
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_auth_members WHERE member = 'spilo_monitor'::regrole"),
        "1"
    );
    // The admin password arrived intact (admin logs in only when allowed to).
    server.sql("ALTER ROLE admin LOGIN");
    assert_eq!(
        server.login("admin", ADMIN_PASSWORD).as_deref(),
        Ok("admin")
    );
    let hash = server.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'admin'");

    // Someone changes everything; a replica's role change touches nothing,
    // a promotion puts it all back.
    server.sql(&format!(
        "ALTER ROLE admin LOGIN CREATEROLE NOCREATEDB BYPASSRLS NOINHERIT; \
         ALTER ROLE cron_admin SUPERUSER; ALTER ROLE robot_zmon LOGIN REPLICATION; \
         REVOKE cron_admin FROM admin; DROP ROLE {}",
        ident(HUMAN_ROLE)
    ));
    let tampered = attributes(&server, "admin");
    server.role_change("replica");
    assert_eq!(attributes(&server, "admin"), tampered);
    assert!(!is_member(&server, "admin", "cron_admin"));

    // The analyze after the promotion waits for a lock on t: the hook
    // returns all the same.
    let mut holder = Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-q", "-h"])
        .arg(server.socket())
        .args([
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a psql session");
    let mut holding = holder.stdin.take().expect("stdin");
    writeln!(
        holding,
        "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 1;"
    )
    .expect("lock");
    wait_for("the lock on t", Duration::from_secs(10), || {
        (server.sql("SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND granted")
            == "1")
            .then_some(())
    });
    let started = Instant::now();
    server.role_change("primary");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    wait_for("the analyze waiting for t", Duration::from_secs(20), || {
        (server.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'spilo hook analyze' AND wait_event_type = 'Lock'",
        ) == "1")
            .then_some(())
    });
    assert_eq!(
        server.sql("SELECT last_analyze IS NULL FROM pg_stat_user_tables WHERE relname = 't'"),
        "t"
    );
    writeln!(holding, "COMMIT;").expect("unlock");
    drop(holding);
    let _ = holder.wait();
    wait_for("t analyzed", Duration::from_secs(30), || {
        (server.sql("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 't'")
            == "t")
            .then_some(())
    });

    assert_eq!(attributes(&server, "admin"), "f:f:t:f:f:f:t");
    for role in ["cron_admin", HUMAN_ROLE, "robot_zmon"] {
        assert_eq!(attributes(&server, role), nologin, "{role}");
    }
    assert!(is_member(&server, "admin", "cron_admin"));
    // A password admin has is kept.
    assert_eq!(
        server.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'admin'"),
        hash
    );

    // Again and again: nothing changes, nothing fails.
    let before = snapshot(&server);
    server.post_init();
    assert_eq!(snapshot(&server), before, "post_init changed something");
    server.role_change("master");
    assert_eq!(
        snapshot(&server),
        before,
        "on_role_change changed something"
    );

    // Nothing of the password in the server's log.
    let log = server.server_log();
    assert!(!log.contains("secret"), "{}", tail(&log, 20));
}

/// `user_management` functions a database has.
fn user_management(server: &Server, database: &str) -> String {
    server.sql_in(
        database,
        "SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text) FROM pg_proc p WHERE p.pronamespace = to_regnamespace('user_management')",
    )
}

/// The helpers a database has: extensions, metric_helpers' views.
fn helpers(server: &Server, database: &str) -> String {
    server.sql_in(
        database,
        "SELECT (SELECT string_agg(extname, ' ' ORDER BY extname) FROM pg_extension WHERE extname IN ('pg_stat_statements', 'pg_stat_kcache', 'set_user')) \
         || ' / ' || (SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class WHERE relnamespace = to_regnamespace('metric_helpers'))",
    )
}

#[test]
fn the_helpers_are_in_every_database_and_work_for_admin_and_monitoring() {
    let server = Server::start("hook-helpers", PRELOAD);
    let odd = "we'ird\\db \"x\"=y";
    server.sql(&format!("CREATE DATABASE {}", ident(odd)));
    // A function of the user's named like one of an extension's.
    server.sql(
        "CREATE FUNCTION public.pg_stat_statements_reset(integer) RETURNS void LANGUAGE sql AS ''",
    );
    server.post_init();
    server.sql("CREATE DATABASE later");

    let functions = "user_management.create_application_user(text) \
        user_management.create_application_user_or_change_password(text,text) \
        user_management.create_role(text) user_management.create_user(text) \
        user_management.drop_role(text) user_management.drop_user(text) \
        user_management.is_privileged_role(text) user_management.random_password(integer) user_management.revoke_admin(text) \
        user_management.terminate_backend(integer)";
    let views = "pg_stat_kcache pg_stat_statements set_user / \
        index_bloat nearly_exhausted_sequences pg_stat_statements table_bloat";
    for database in ["template1", "postgres", odd, "later"] {
        assert_eq!(user_management(&server, database), functions, "{database}");
        assert_eq!(helpers(&server, database), views, "{database}");
    }

    // A person of the team, as the operator creates one, manages roles.
    let human = ident(HUMAN_ROLE);
    server.sql(&format!(
        "CREATE ROLE alice LOGIN IN ROLE {human}, admin; CREATE ROLE carol LOGIN; \
         CREATE ROLE zmon LOGIN IN ROLE robot_zmon"
    ));
    let alice = |sql: &str| server.psql("alice", "postgres", sql);
    alice("SELECT user_management.create_user('bob')").expect("create_user");
    assert!(is_member(&server, "bob", HUMAN_ROLE));
    assert!(is_member(&server, "bob", "admin"));
    assert_eq!(
        server
            .sql("SELECT rolcanlogin::text || rolconfig::text FROM pg_roles WHERE rolname = 'bob'"),
        "true{log_statement=all}"
    );
    let password = alice("SELECT user_management.create_application_user('app')").expect("app");
    assert_eq!(password.len(), 20, "{password}");
    assert_eq!(server.login("app", &password).as_deref(), Ok("app"));
    alice("SELECT user_management.create_application_user_or_change_password('app', 'n3w p''w')")
        .expect("change password");
    assert_eq!(server.login("app", "n3w p'w").as_deref(), Ok("app"));
    alice("SELECT user_management.create_application_user_or_change_password('app2', 'pw2')")
        .expect("create with password");
    assert_eq!(server.login("app2", "pw2").as_deref(), Ok("app2"));
    alice("SELECT user_management.create_role('team')").expect("create_role");
    assert_eq!(
        server.sql("SELECT admin_option FROM pg_auth_members WHERE roleid = 'team'::regrole AND member = 'admin'::regrole"),
        "t"
    );
    alice("SELECT user_management.revoke_admin('bob')").expect("revoke_admin");
    assert!(!is_member(&server, "bob", "admin"));
    assert_eq!(
        alice(
            "SELECT length(user_management.random_password(64)) || ':' || (user_management.random_password(64) ~ '^[A-Za-z0-9_-]+$')"
        ),
        Ok("64:true".into())
    );
    // Never on a superuser, the replication user or a role as good as a
    // superuser.
    server.sql(
        "CREATE ROLE standby LOGIN REPLICATION; CREATE ROLE maker LOGIN CREATEROLE; \
         CREATE ROLE reader LOGIN IN ROLE pg_read_server_files",
    );
    for sql in [
        "SELECT user_management.create_application_user_or_change_password('postgres', 'mine')",
        "SELECT user_management.create_application_user_or_change_password('maker', 'mine')",
        "SELECT user_management.drop_user('standby')",
        "SELECT user_management.drop_user('reader')",
        "SELECT user_management.drop_role('postgres')",
        "SELECT user_management.revoke_admin('postgres')",
    ] {
        let err = alice(sql).expect_err(sql);
        assert!(err.contains("not managed here"), "{sql}: {err}");
    }
    assert!(server.login("maker", "mine").is_err());
    // Nor when a temporary table stands in for the catalog.
    let err = alice(
        "CREATE TEMP TABLE pg_roles (rolname name, rolsuper bool, rolreplication bool); \
         INSERT INTO pg_roles VALUES ('postgres', false, false); \
         SELECT user_management.create_application_user_or_change_password('postgres', 'x')",
    )
    .expect_err("a temporary pg_roles");
    assert!(err.contains("not managed here"), "{err}");
    let err = server
        .login("postgres", "x")
        .expect_err("the superuser's password is unchanged");
    assert!(err.contains("password authentication failed"), "{err}");
    // No superuser's session, nor a process of the server's, is ended.
    let mut superuser = sleep_as(&server, "postgres");
    let pid = sleeping_pid(&server, "postgres");
    let err = alice(&format!("SELECT user_management.terminate_backend({pid})"))
        .expect_err("a superuser's session");
    assert!(err.contains("not managed here"), "{err}");
    let launcher =
        server.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'");
    let err = alice(&format!(
        "SELECT user_management.terminate_backend({launcher})"
    ))
    .expect_err("pg_cron's launcher");
    assert!(err.contains("not a client's session"), "{err}");
    assert!(
        superuser
            .try_wait()
            .expect("the superuser's session")
            .is_none()
    );
    let _ = superuser.kill();
    let _ = superuser.wait();
    // A session that harms is ended.
    let mut sleeper = sleep_as(&server, "bob");
    let pid = sleeping_pid(&server, "bob");
    assert_eq!(
        alice(&format!("SELECT user_management.terminate_backend({pid})")),
        Ok("t".into())
    );
    assert!(sleeper.wait().map(|s| !s.success()).unwrap_or(false));
    alice("SELECT user_management.drop_user('bob')").expect("drop_user");
    alice("SELECT user_management.drop_role('team')").expect("drop_role");
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_roles WHERE rolname IN ('bob', 'team')"),
        "0"
    );
    // Nobody else may.
    let err = server
        .psql(
            "carol",
            "postgres",
            "SELECT user_management.create_user('eve')",
        )
        .expect_err("carol is no admin");
    assert!(err.contains("permission denied"), "{err}");

    // What monitoring reads: bloat that grows when half the rows go.
    server.sql(
        "CREATE TABLE bloated AS SELECT i AS id, md5(i::text) AS txt FROM generate_series(1, 20000) AS i; \
         CREATE INDEX bloated_id ON bloated (id); ANALYZE bloated",
    );
    let zmon = |sql: &str| {
        server
            .psql("zmon", "postgres", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let table = "SELECT round(t_bloat_ratio) FROM metric_helpers.table_bloat WHERE t_table_name = 'bloated' AND NOT t_is_na";
    let index = "SELECT round(i_bloat_ratio) FROM metric_helpers.index_bloat WHERE i_index_name = 'bloated_id' AND NOT i_is_na";
    let ratio = |sql: &str| {
        zmon(sql)
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert!(ratio(table) <= 3.0, "{}", ratio(table));
    assert!(ratio(index) < 15.0, "{}", ratio(index));
    server.sql("DELETE FROM bloated WHERE id % 2 = 0");
    server.sql("VACUUM ANALYZE bloated");
    assert!(ratio(table) > 35.0, "{}", ratio(table));
    assert!(ratio(index) > 35.0, "{}", ratio(index));
    assert_eq!(
        zmon(
            "SELECT count(*) > 10 FROM metric_helpers.table_bloat WHERE t_schema_name = 'pg_catalog'"
        ),
        "t"
    );
    // Sequences at 0.8 percent and more.
    server.sql(
        "CREATE SEQUENCE nearly MAXVALUE 100; CREATE SEQUENCE barely MAXVALUE 1000000; \
         CREATE SEQUENCE down INCREMENT -1 MINVALUE -10 MAXVALUE -1; \
         SELECT nextval('nearly') FROM generate_series(1, 90); SELECT nextval('barely'); \
         SELECT nextval('down') FROM generate_series(1, 5)",
    );
    assert_eq!(
        zmon(
            "SELECT string_agg(sequencename || ':' || seq_percent_used, ' ' ORDER BY sequencename) FROM metric_helpers.nearly_exhausted_sequences"
        ),
        "down:50.00 nearly:90.00"
    );
    // Every role's statements, with their text.
    assert_eq!(
        zmon(
            "SELECT count(*) > 0 FROM metric_helpers.pg_stat_statements WHERE userid = 'alice'::regrole AND query LIKE '%user_management%'"
        ),
        "t"
    );
    for sql in [
        "SELECT count(*) FROM metric_helpers.table_bloat",
        "SELECT count(*) FROM metric_helpers.pg_stat_statements",
    ] {
        let err = server.psql("carol", "postgres", sql).expect_err(sql);
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    // admin's grants on the extensions.
    assert_eq!(
        server.sql(
            "SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text) FROM pg_proc p \
             WHERE has_function_privilege('admin', p.oid, 'EXECUTE') AND p.proname IN ('set_user', 'pg_stat_statements_reset', 'pg_switch_wal') \
             AND p.oid <> 'public.pg_stat_statements_reset(integer)'::regprocedure"
        ),
        "pg_stat_statements_reset(oid,oid,bigint) pg_switch_wal() set_user(text)"
    );
    assert_eq!(
        server.sql(
            "SELECT coalesce(proacl::text, '') FROM pg_proc WHERE oid = 'public.pg_stat_statements_reset(integer)'::regprocedure"
        ),
        ""
    );
}

/// A session of `user`'s that sleeps a minute.
fn sleep_as(server: &Server, user: &str) -> Child {
    Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-q", "-h"])
        .arg(server.socket())
        .args(["-p", &server.port.to_string(), "-U", user, "-d", "postgres"])
        .args(["-c", "SELECT pg_sleep(60)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a session")
}

/// The process id of `user`'s sleeping session.
fn sleeping_pid(server: &Server, user: &str) -> String {
    wait_for("the sleeping session", Duration::from_secs(10), || {
        let pid = server.sql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE usename = {} AND wait_event = 'PgSleep'",
            lit(user)
        ));
        (!pid.is_empty()).then_some(pid)
    })
}

#[test]
fn postgres_log_reads_the_csv_logs_and_shows_failed_logins() {
    let server = Server::start("hook-logs", PRELOAD);
    server.post_init();
    server.sql("CREATE ROLE alice LOGIN PASSWORD 'right' IN ROLE admin; CREATE ROLE zmon LOGIN IN ROLE robot_zmon");
    let err = server
        .login("alice", "wrong")
        .expect_err("a wrong password");
    assert!(err.contains("password authentication failed"), "{err}");

    // Today's file, whatever day it is; the other days are empty.
    let current = server.sql("SELECT pg_current_logfile('csvlog')");
    let day = current
        .strip_suffix(".csv")
        .and_then(|p| p.rsplit('-').next())
        .unwrap_or_else(|| panic!("{current}"))
        .to_owned();
    let failed = format!(
        "SELECT count(*) FROM public.failed_authentication_{day} WHERE user_name = 'alice' AND message LIKE 'password authentication failed%'"
    );
    wait_for(
        "the failed login in the view",
        Duration::from_secs(20),
        || (server.psql("zmon", "postgres", &failed).ok()? == "1").then_some(()),
    );
    // Every line reads into the right columns (a column too many or too few
    // fails the whole query), and the parent reads every day.
    assert_eq!(
        server
            .psql(
                "alice",
                "postgres",
                &format!("SELECT count(*) > 0, count(*) = count(session_id), bool_and(backend_type IS NOT NULL) FROM public.postgres_log_{day}")
            )
            .expect("alice reads the log"),
        "t|t|t"
    );
    assert_eq!(
        server.psql("alice", "postgres", &format!(
            "SELECT (SELECT count(*) FROM public.postgres_log) = (SELECT count(*) FROM public.postgres_log_{day})"
        )),
        Ok("t".into())
    );
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.postgres_log'::regclass AND attnum > 0"),
        "26"
    );
    assert_eq!(
        server.sql(
            "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class WHERE relkind = 'f'"
        ),
        (0..=7)
            .map(|n| format!("postgres_log_{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // robot_zmon reads only the failed logins.
    let err = server
        .psql(
            "zmon",
            "postgres",
            &format!("SELECT count(*) FROM public.postgres_log_{day}"),
        )
        .expect_err("zmon may not read the log");
    assert!(err.contains("permission denied"), "{err}");
    // ANALYZE of the whole database (vacuumdb's) works with days missing.
    server.sql("ANALYZE");
    // ZMON's view of the cluster.
    let zmon = |sql: &str| {
        server
            .psql("zmon", "postgres", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        zmon(
            "SELECT string_agg(parameter || '=' || setting, ' ' ORDER BY parameter) FROM zmon_utils.get_database_cluster_information() \
              WHERE parameter IN ('is_in_recovery', 'is_streaming', 'log_filename', 'zmon_utils_version')"
        ),
        "is_in_recovery=false is_streaming=false log_filename=postgresql-%u.log zmon_utils_version=11"
    );
    assert_eq!(
        zmon(
            "SELECT setting::int > 0 FROM zmon_utils.get_database_cluster_information() WHERE parameter = 'current_connections'"
        ),
        "t"
    );
    assert_eq!(zmon("SELECT count(*) FROM zmon_utils.replay_lag"), "0");

    // A table Spilo made over its file is taken over.
    server.sql(&format!(
        "ALTER FOREIGN TABLE public.postgres_log_{day} OPTIONS (DROP program, ADD filename '{}/postgresql-{day}.csv')",
        server.log_dir().display().to_string().replace('\'', "''")
    ));
    server.post_init();
    assert_eq!(
        server.sql(&format!(
            "SELECT ftoptions::text LIKE '%program=%' FROM pg_foreign_table WHERE ftrelid = 'public.postgres_log_{day}'::regclass"
        )),
        "t"
    );
    wait_for("the view again", Duration::from_secs(10), || {
        (server.psql("zmon", "postgres", &failed).ok()? == "1").then_some(())
    });
}

#[test]
fn cron_admins_share_their_jobs_but_never_a_superusers() {
    let server = Server::start("hook-cron", PRELOAD);
    // An old volume: an old pg_cron, and Spilo's own cron.schedule with
    // three arguments, in the way of pg_cron's.
    server.sql(
        "CREATE EXTENSION pg_cron VERSION '1.0' SCHEMA pg_catalog; \
         CREATE FUNCTION cron.schedule(p_schedule text, p_database text, p_command text) RETURNS bigint \
         LANGUAGE sql AS 'SELECT 0::bigint'",
    );
    server.post_init();
    assert_eq!(
        server.sql(
            "SELECT extnamespace::regnamespace || ' ' || extversion FROM pg_extension WHERE extname = 'pg_cron'"
        ),
        "pg_catalog 1.4-1"
    );
    server.sql(
        "CREATE ROLE alice LOGIN IN ROLE admin; CREATE ROLE bob LOGIN IN ROLE admin; CREATE ROLE carol LOGIN; \
         SELECT cron.schedule('superuser', '0 0 1 1 *', 'SELECT 1'); \
         INSERT INTO cron.job (schedule, command, nodeport, username, jobname) VALUES ('0 0 1 1 *', 'SELECT 1', 5432, 'ghost', 'ghost')",
    );
    let alice = |sql: &str| server.psql("alice", "postgres", sql);
    let bob = |sql: &str| server.psql("bob", "postgres", sql);
    alice("SELECT cron.schedule('alice', '0 0 1 1 *', 'SELECT 2')").expect("alice schedules");
    let moved = alice("SELECT cron.schedule_in_database('0 0 1 1 *', 'later', 'SELECT 3')")
        .expect("schedule_in_database");
    assert_eq!(
        server.sql(&format!("SELECT username || ':' || database || ':' || nodename || ':' FROM cron.job WHERE jobid = {moved}")),
        "alice:later::"
    );

    // bob sees alice's jobs, not the superuser's (nor a dropped role's).
    assert_eq!(
        bob(
            "SELECT string_agg(coalesce(jobname, '-') || ':' || username, ' ' ORDER BY jobid) FROM cron.job"
        ),
        Ok("alice:alice -:alice".into())
    );
    assert_eq!(
        bob(
            "UPDATE cron.job SET active = false, schedule = '0 0 2 1 *' WHERE jobname = 'alice' RETURNING jobname"
        ),
        Ok("alice".into())
    );
    assert_eq!(
        bob("UPDATE cron.job SET active = false WHERE jobname = 'superuser' RETURNING jobname"),
        Ok(String::new())
    );
    let err = bob("UPDATE cron.job SET command = 'DROP TABLE x' WHERE jobname = 'alice'")
        .expect_err("the command is its owner's");
    assert!(err.contains("permission denied"), "{err}");
    // A job is its owner's to remove; pg_cron's functions, which read the
    // table past its policy, change no superuser's job.
    let err = bob(&format!("DELETE FROM cron.job WHERE jobid = {moved}"))
        .expect_err("alice's job is hers to remove");
    assert!(err.contains("permission denied"), "{err}");
    let superusers = server.sql("SELECT jobid FROM cron.job WHERE jobname = 'superuser'");
    for sql in [
        format!("SELECT cron.unschedule({superusers})"),
        format!("SELECT cron.alter_job({superusers}, active := false)"),
        format!("SELECT cron.alter_job({superusers}, command := 'SELECT 6')"),
    ] {
        let err = bob(&sql).expect_err(&sql);
        assert!(
            err.contains("permission denied") || err.contains("you don't own it"),
            "{sql}: {err}"
        );
    }
    assert_eq!(
        server.sql(&format!(
            "SELECT active::text || command FROM cron.job WHERE jobid = {superusers}"
        )),
        "trueSELECT 1"
    );
    assert_eq!(
        alice(&format!("SELECT cron.unschedule({moved})")),
        Ok("t".into())
    );
    server.sql(
        "INSERT INTO cron.job_run_details (jobid, username, command, status) VALUES (1, 'postgres', 'SELECT 1', 'succeeded'), (2, 'alice', 'SELECT 2', 'succeeded')",
    );
    assert_eq!(
        bob("SELECT string_agg(username, ' ') FROM cron.job_run_details"),
        Ok("alice".into())
    );
    // A role that cannot log in gets no job in another database.
    let err =
        alice("SET ROLE admin; SELECT cron.schedule_in_database('0 0 1 1 *', 'later', 'SELECT 4')")
            .expect_err("admin cannot log in");
    assert!(err.contains("cannot log in"), "{err}");
    // pg_cron is cron_admin's only.
    for sql in [
        "SELECT count(*) FROM cron.job",
        "SELECT cron.schedule('0 0 1 1 *', 'SELECT 5')",
    ] {
        let err = server.psql("carol", "postgres", sql).expect_err(sql);
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    assert_eq!(
        server.sql("SELECT count(*) FROM cron.job WHERE jobname = 'superuser' AND active"),
        "1"
    );
    // ZMON sees the last run of every active job, whoever's (alice's is
    // paused).
    server.sql(
        "CREATE ROLE zmon LOGIN IN ROLE robot_zmon; \
         INSERT INTO cron.job_run_details (jobid, username, command, status, start_time) \
         SELECT jobid, username, command, status, now() - age::interval FROM cron.job \
          CROSS JOIN (VALUES ('failed', '2 days'), ('succeeded', '1 day')) AS r (status, age)",
    );
    assert_eq!(
        server.sql("SELECT string_agg(j.jobname || ':' || s.status, ' ' ORDER BY j.jobname) FROM zmon_utils.last_status_active_cronjobs s JOIN cron.job j USING (jobid)"),
        "ghost:succeeded superuser:succeeded"
    );
    assert_eq!(
        server.psql(
            "zmon",
            "postgres",
            "SELECT count(*) FROM zmon_utils.last_status_active_cronjobs"
        ),
        Ok("2".into())
    );
}

#[test]
fn without_pg_cron_the_rest_is_done_all_the_same() {
    let server = Server::start("hook-nocron", "pg_stat_statements");
    server.post_init();
    server.role_change("primary");
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'cron'"),
        "0"
    );
    assert_eq!(attributes(&server, "cron_admin"), "f:f:f:f:f:f:t");
    assert_eq!(
        helpers(&server, "template1"),
        "pg_stat_statements set_user / index_bloat nearly_exhausted_sequences pg_stat_statements table_bloat"
    );
}
