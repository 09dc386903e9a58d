//! Patroni's hooks, run by Patroni as subcommands of this binary.
//! `post_init` (after bootstrap) and `on_role_change` to primary (after
//! every promotion) do for the database what Spilo's post-bootstrap does:
//! the roles of the contract, each made or reset to its attributes, pg_cron
//! shared among cron_admin's members, Spilo's helpers (user_management,
//! metric_helpers, the csv log tables) in every database, and, on
//! promotion, an analyze of every database that runs on its own. All of it
//! idempotent: a second run changes nothing.

mod analyze;
mod facts;
mod plan;
mod psql;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::files::IoError;
use crate::render::patroni::HookCommands;
use crate::render::{Output, shell_quote};

use super::pod_labels;
use facts::Facts;
use psql::Psql;

/// What the hooks need, written by `init` next to the Patroni config
/// (mode 0600: it holds the admin password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub(crate) bin_dir: PathBuf,
    pub(crate) socket_dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) pgpass: PathBuf,
    pub(crate) superuser: String,
    pub(crate) admin: String,
    pub(crate) admin_password: String,
    pub(crate) human_role: String,
    /// Labels the pod on Kubernetes when the DCS is not Kubernetes.
    #[serde(default)]
    pub pod_labels: Option<pod_labels::Target>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Read(#[from] IoError),
    #[error("{}: not a hook spec: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {source}", program.display())]
    Run {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {status} ({what})", program.display())]
    Psql {
        program: PathBuf,
        what: String,
        status: ExitStatus,
    },
    #[error("the server's facts: unexpected answer {answer:?}: {source}")]
    Facts {
        answer: String,
        source: serde_json::Error,
    },
    #[error("still in recovery {0:?} after the promotion")]
    InRecovery(Duration),
    #[error(transparent)]
    Label(#[from] pod_labels::LabelError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Steps(Vec<HookError>),
}

/// How long `on_role_change` waits for a promoted server to accept writes.
const PROMOTION_WAIT: Duration = Duration::from_secs(60);

/// What `init` installs for the hooks: the spec file, and the commands
/// Patroni calls them by (they go under the user's configuration, so that
/// SPILO_CONFIGURATION can still replace them).
pub struct Install {
    pub spec: Output,
    pub commands: HookCommands,
}

pub fn install(config: &Config) -> Result<Install, serde_json::Error> {
    let spec = Spec {
        bin_dir: config.version.bin_dir.clone(),
        socket_dir: config.paths.socket_dir(),
        port: config.identity.pg_port,
        pgpass: config.paths.pgpass(),
        superuser: config.auth.superuser.username.clone(),
        admin: config.auth.admin.username.clone(),
        admin_password: config.auth.admin.password.clone(),
        human_role: config.auth.human_role.clone(),
        pod_labels: pod_labels::Target::from_config(config),
    };
    let path = config.paths.hooks_spec();
    let command = |hook: &str| {
        format!(
            "{} hook {hook} {}",
            shell_quote(&config.program.display().to_string()),
            shell_quote(&path.display().to_string())
        )
    };
    // Labelling the pod, Spilo's role callback also runs on start and stop.
    let actions: &[&str] = match spec.pod_labels {
        Some(_) => &pod_labels::CALLBACKS,
        None => &["on_role_change"],
    };
    let commands = HookCommands {
        post_init: command("post-init"),
        callbacks: actions
            .iter()
            .map(|a| (a.to_string(), command("on-role-change").into()))
            .collect(),
    };
    Ok(Install {
        spec: Output::File {
            contents: serde_json::to_vec_pretty(&spec)?,
            path,
            mode: 0o600,
            redacted: None,
        },
        commands,
    })
}

pub fn read_spec(path: &Path) -> Result<Spec, HookError> {
    let text = std::fs::read(path).map_err(IoError::at("read", path))?;
    serde_json::from_slice(&text).map_err(|source| HookError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// `post_init`: Patroni gives a connection string for the superuser. A
/// failure fails the bootstrap, as Spilo's does.
pub fn post_init(spec: &Spec, connection: &str) -> Result<(), HookError> {
    let psql = Psql::with_connection_string(spec, connection);
    plan::apply(&psql, &Facts::read(&psql)?)
}

/// What `post_init` makes, made again over the socket: after a major
/// upgrade, which drops the helpers an extension's update replaces.
pub fn reapply(spec: &Spec) -> Result<(), HookError> {
    let psql = Psql::socket(spec);
    plan::apply(&psql, &Facts::read(&psql)?)
}

/// `on_role_change ACTION ROLE SCOPE`: on promotion the same as
/// `post_init` (a primary restored from a backup, or someone, may have
/// changed what it made), then the analyze. Other roles have nothing to do.
pub(crate) fn on_role_change(spec: &Spec, role: &str) -> Result<bool, HookError> {
    if !pod_labels::LEADER_ROLES.contains(&role) {
        return Ok(false);
    }
    let psql = Psql::socket(spec);
    let facts = Facts::when_writable(&psql, PROMOTION_WAIT)?;
    let applied = plan::apply(&psql, &facts);
    // Started last, so that Patroni killing this hook for the next
    // callback, which kills the hook's children, rarely catches it.
    let started = analyze::start(spec);
    applied.and(started).map(|()| true)
}

/// A Patroni callback (`on_start`, `on_stop`, `on_role_change`): the pod
/// label first, since the database work may wait a minute and Patroni
/// kills a callback when the next one comes; then, for a role change, the
/// database work. `log` gets a line for each thing done; a label that
/// could not be set fails the hook after the database work.
pub fn callback(
    spec: &Spec,
    action: &str,
    role: &str,
    log: &mut dyn FnMut(String),
) -> Result<(), HookError> {
    let labelled = match &spec.pod_labels {
        Some(target) => {
            let labelled = target
                .apply(action, role)
                .map(|line| log(format!("{action}: {line}")));
            // Best effort, as Spilo's: the operator may not have made the
            // Endpoints; the label is what its services select by.
            match target.point_endpoints(action, role) {
                Some(Ok(line)) => log(format!("{action}: {line}")),
                Some(Err(e)) => log(format!("{action}: warning: {e}")),
                None => {}
            }
            labelled
        }
        None => Ok(()),
    };
    let database = if action == "on_role_change" {
        on_role_change(spec, role).map(|acted| {
            if acted {
                log(format!("on-role-change to {role}: {}", summary(spec)));
            }
        })
    } else {
        Ok(())
    };
    match (labelled, database) {
        (Ok(()), result) => result,
        (Err(label), Ok(())) => Err(label.into()),
        (Err(label), Err(db)) => Err(HookError::Steps(vec![label.into(), db])),
    }
}

/// The line a hook prints when it has done its work.
pub fn summary(spec: &Spec) -> String {
    format!(
        "roles ensured: {}, {}, cron_admin, robot_zmon, spilo_monitor; database helpers in every database",
        spec.admin, spec.human_role
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            socket_dir: "/run/postgresql".into(),
            port: 5432,
            pgpass: "/run/postgresql/pgpass".into(),
            superuser: "postgres".into(),
            admin: "admin".into(),
            admin_password: "it's\\secret".into(),
            human_role: "zalandos".into(),
            pod_labels: None,
        }
    }

    #[test]
    fn replicas_have_nothing_to_do() {
        assert!(!on_role_change(&spec(), "replica").unwrap());
        assert!(!on_role_change(&spec(), "demoted").unwrap());
        assert!(!on_role_change(&spec(), "standby_leader").unwrap());
    }

    #[test]
    fn the_spec_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.json");
        std::fs::write(&path, serde_json::to_vec(&spec()).unwrap()).unwrap();
        assert_eq!(read_spec(&path).unwrap(), spec());
        let err = read_spec(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.contains("none"), "{err}");
    }

    #[test]
    fn failed_steps_are_reported_together() {
        let failed = |what: &str| HookError::Run {
            program: what.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let err = HookError::Steps(vec![failed("a"), failed("b")]).to_string();
        assert_eq!(err, "a: entity not found; b: entity not found");
    }
}
