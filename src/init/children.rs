//! The supervised tree for a configuration: the embedded etcd when no DCS
//! is configured, Patroni, and pgbouncer when configured. This is the
//! one place that knows what the children are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::backup::WEB_IDENTITY;
use crate::config::dcs::EMBEDDED_ETCD;
use crate::config::{Config, DcsKind, Env};

use super::account::Account;
use super::supervisor::{ChildSpec, Ready, Restart};

/// The programs to run, found on PATH unless given as paths.
#[derive(Debug, Clone)]
pub struct Programs {
    pub patroni: PathBuf,
    pub etcd: PathBuf,
    pub pgbouncer: PathBuf,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables passed through to the children: the rest of ours (the Spilo
/// contract, secrets) is not theirs to see.
const PASSED: [&str; 4] = ["LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// The API server's address, which Patroni's Kubernetes DCS reads for its
/// in-cluster configuration: harmless to pass whenever Kubernetes sets it.
const KUBERNETES_API: [&str; 2] = ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"];

const RESTART: Restart = Restart {
    limit: 5,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(30),
    stable_after: Duration::from_secs(60),
};

/// Patroni's spec among the children (always there).
pub(crate) fn patroni(specs: &[ChildSpec]) -> Option<&ChildSpec> {
    specs.iter().find(|s| s.name == PATRONI)
}

const PATRONI: &str = "patroni";

/// The child specs in start order. `extra_env` is added to every child
/// (nss_wrapper, a packed major's libraries). The backup scheduler is
/// this program (`config.program`).
pub(crate) fn specs(
    config: &Config,
    env: &Env,
    account: &Account,
    programs: &Programs,
    extra_env: &[(String, String)],
) -> Vec<ChildSpec> {
    let mut base = vec![
        (
            "PATH".to_owned(),
            env.get("PATH").unwrap_or(DEFAULT_PATH).to_owned(),
        ),
        ("HOME".to_owned(), config.paths.pghome.display().to_string()),
        ("USER".to_owned(), account.name.clone()),
        ("LOGNAME".to_owned(), account.name.clone()),
    ];
    base.extend(
        PASSED
            .iter()
            .chain(&KUBERNETES_API)
            // pgBackRest reads a web identity from its environment:
            // Patroni's, which PostgreSQL's archive_command inherits.
            .chain(&WEB_IDENTITY)
            .filter_map(|name| Some((name.to_string(), env.get(name)?.to_owned()))),
    );
    base.extend(extra_env.iter().cloned());
    let child = |name: &str, program: &PathBuf, args: Vec<String>, stop_stage| ChildSpec {
        name: name.to_owned(),
        program: program.clone(),
        args: args.into_iter().map(Into::into).collect(),
        env: base.clone(),
        user: account.switch_to(),
        dir: config.paths.pgroot.clone(),
        ready: None,
        restart: RESTART,
        stop_stage,
        stop_signal: Signal::SIGTERM,
    };

    let mut specs = Vec::new();
    if config.dcs.kind == DcsKind::Embedded {
        let client = format!("http://{EMBEDDED_ETCD}");
        let peer = "http://127.0.0.1:2380";
        let args = [
            "--name",
            "spilo",
            "--data-dir",
            &config.paths.etcd_data().display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            &format!("spilo={peer}"),
            // One member and no network between peers: elect at once
            // (ready in about 0.1 s instead of 0.8 s).
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ];
        // etcd must outlive Patroni, which releases its leader key there.
        let mut etcd = child("etcd", &programs.etcd, args.map(str::to_owned).to_vec(), 2);
        if let Ok(addr) = EMBEDDED_ETCD.parse::<SocketAddr>() {
            etcd.ready = Some(Ready::Http {
                addr,
                path: "/health".into(),
                within: Duration::from_secs(30),
                first_start: Some(config.paths.etcd_first_start()),
            });
        }
        specs.push(etcd);
    }
    specs.push(child(
        PATRONI,
        &programs.patroni,
        vec![config.paths.patroni_config().display().to_string()],
        0,
    ));
    if config.pgbouncer.is_some() {
        let ini = config.paths.pgbouncer_ini();
        let mut pgbouncer = child(
            "pgbouncer",
            &programs.pgbouncer,
            vec![ini.display().to_string()],
            1,
        );
        // pgbouncer's SIGTERM is an immediate exit with status 1; SIGINT
        // is its clean shutdown.
        pgbouncer.stop_signal = Signal::SIGINT;
        specs.push(pgbouncer);
    }
    if let Some(backup) = &config.backup {
        // Backups failing must never stop the database: restarted for as
        // long as it takes.
        let forever = Restart {
            limit: u32::MAX,
            max_delay: Duration::from_secs(300),
            ..RESTART
        };
        let spec = config.paths.backup_spec().display().to_string();
        let args = ["backup", "schedule", "--spec", &spec].map(str::to_owned);
        let mut scheduler = child(BACKUP, &config.program, args.to_vec(), 0);
        scheduler.restart = forever;
        specs.push(scheduler);
        if backup.from_replica {
            // Where the primary's backup reads this member's files while
            // it is a replica.
            let config_file = format!("--config={}", config.paths.pgbackrest_config().display());
            let mut server = child(
                "pgbackrest-server",
                &PathBuf::from(crate::render::pgbackrest::PROGRAM),
                vec![config_file, "server".to_owned()],
                0,
            );
            server.restart = forever;
            specs.push(server);
        }
    }
    specs
}

const BACKUP: &str = "backup";

#[cfg(test)]
mod tests {
    use nix::unistd::{Gid, Uid};

    use super::*;
    use crate::config::System;

    /// The children planned for `vars` over a pod's least environment,
    /// for the postgres account, with `nss` added to Patroni's environment:
    /// the model too, and each child's name.
    fn children(
        vars: &[(&str, &str)],
        nss: &[(String, String)],
    ) -> (Config, Vec<ChildSpec>, Vec<String>) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("15/bin")).unwrap();
        let mut pairs = vec![
            ("HOSTNAME", "pod-0"),
            ("POD_IP", "10.0.0.5"),
            ("RW_DIR", "/run"),
            ("PATH", "/opt/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("PGPASSWORD_SUPERUSER", "secret-password"),
        ];
        pairs.extend_from_slice(vars);
        let env = Env::from_pairs(pairs.iter().copied());
        let system = System {
            postgres_root: root.path().to_owned(),
            ..System::default()
        };
        let config = Config::build(&env, &system).unwrap();
        let programs = Programs {
            patroni: "/usr/bin/patroni".into(),
            etcd: "/usr/bin/etcd".into(),
            pgbouncer: "/usr/bin/pgbouncer".into(),
        };
        let postgres = Account {
            uid: Uid::from_raw(101),
            gid: Gid::from_raw(104),
            name: "postgres".into(),
            switch: true,
            in_passwd: true,
        };
        let specs = specs(&config, &env, &postgres, &programs, nss);
        let names = specs.iter().map(|s| s.name.clone()).collect();
        (config, specs, names)
    }

    #[test]
    fn embedded_etcd_first_then_patroni_with_a_clean_environment() {
        let nss = [("LD_PRELOAD".to_owned(), "libnss_wrapper.so".to_owned())];
        let (_, specs, names) = children(&[], &nss);
        assert_eq!(names, ["etcd", "patroni"]);
        let (etcd, patroni) = (&specs[0], &specs[1]);
        assert!(matches!(etcd.ready, Some(Ready::Http { .. })));
        assert!(
            etcd.stop_stage > patroni.stop_stage,
            "etcd must outlive Patroni"
        );
        assert_eq!(patroni.args, ["/run/postgres.yml"]);
        assert_eq!(patroni.user, Some((Uid::from_raw(101), Gid::from_raw(104))));
        let keys: Vec<&str> = patroni.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LD_PRELOAD"]
        );
        assert_eq!(patroni.env[0].1, "/opt/bin:/usr/bin");
    }

    #[test]
    fn a_configured_dcs_and_pgbouncer() {
        let (_, specs, names) = children(
            &[
                ("ETCD3_HOSTS", "10.0.0.1:2379"),
                (
                    "PGBOUNCER_CONFIGURATION",
                    "[pgbouncer]\nlisten_port = 6432\n",
                ),
            ],
            &[],
        );
        assert_eq!(names, ["patroni", "pgbouncer"]);
        assert_eq!(specs[1].args, ["/run/pgbouncer/pgbouncer.ini"]);
        assert!(
            specs[1].stop_stage > specs[0].stop_stage,
            "Patroni stops first"
        );
        assert_eq!(
            specs[1].stop_signal,
            Signal::SIGINT,
            "pgbouncer's clean stop"
        );
        assert_eq!(specs[0].stop_signal, Signal::SIGTERM);
    }

    #[test]
    fn backups_add_the_scheduler_and_from_a_replica_the_tls_server() {
        let store = [("ETCD3_HOSTS", "10.0.0.1:2379"), ("WAL_LOCAL_PATH", "/tmp")];
        let (_, specs, names) = children(&store, &[]);
        assert_eq!(names, ["patroni", "backup"]);
        assert_eq!(
            specs[1].args,
            ["backup", "schedule", "--spec", "/run/backup.json"]
        );
        let mut vars = store.to_vec();
        vars.extend([
            ("WALG_BACKUP_FROM_REPLICA", "true"),
            ("PGPASSWORD_STANDBY", "standby-secret"),
        ]);
        let (_, specs, names) = children(&vars, &[]);
        assert_eq!(names, ["patroni", "backup", "pgbackrest-server"]);
        assert_eq!(specs[2].program, PathBuf::from("pgbackrest"));
        assert_eq!(
            specs[2].args,
            ["--config=/run/pgbackrest/pgbackrest.conf", "server"]
        );
        assert_eq!(specs[2].restart.limit, u32::MAX, "never given up on");
    }

    #[test]
    fn patroni_sees_the_kubernetes_api_server() {
        let (config, specs, names) = children(
            &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
                ("DCS_ENABLE_KUBERNETES_API", "true"),
            ],
            &[],
        );
        assert_eq!(config.dcs.kind, DcsKind::Kubernetes);
        assert_eq!(names, ["patroni"]);
        let env = &specs[0].env;
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "LANG",
                "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT"
            ]
        );
        assert_eq!(env[5].1, "10.96.0.1");
        assert_eq!(env[6].1, "443");
    }
}
