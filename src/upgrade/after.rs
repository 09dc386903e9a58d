//! What follows a pg_upgrade, on the new server: its extensions updated
//! (or made again) and its statistics rebuilt. Shared by the upgrade in
//! place and the upgrade of a restored clone.

use std::path::PathBuf;

use super::sql::{self, Psql};
use super::{UpgradeError, say};

/// A running server of the new major, over its socket.
pub(crate) struct Server {
    pub(crate) major: u32,
    pub(crate) bin_dir: PathBuf,
    pub(crate) socket_dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) user: String,
}

/// ALTER EXTENSION ... UPDATE everywhere. The ones the checks found
/// re-created, and those whose updates trip over each other (`REMADE`),
/// are dropped and created again in their schema; the caller makes the
/// database helpers again after. Failures are reported, not fatal: the
/// cluster runs the new major already.
pub(crate) fn update_extensions(
    local: &Psql,
    recreated: &[(String, String)],
    new_major: u32,
) -> Result<(), UpgradeError> {
    for row in local.rows("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")? {
        let Some(database) = row.first() else {
            continue;
        };
        let db = local.database(database);
        // The helper's row type is pg_stat_statements' view, which its
        // update replaces; the helpers, made again after, bring it back.
        if let Err(e) =
            db.value("DROP FUNCTION IF EXISTS metric_helpers.pg_stat_statements(boolean) CASCADE")
        {
            say(&format!("warning: database {database}: {e}"));
        }
        let extensions: Vec<(String, String)> = db
            .rows("SELECT extname, extnamespace::regnamespace FROM pg_extension ORDER BY 1")?
            .into_iter()
            .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.clone())))
            .collect();
        let recreated = |name: &str| recreated.iter().any(|(d, e)| d == database && e == name);
        let updatable: Vec<&(String, String)> = extensions
            .iter()
            .filter(|(name, _)| !recreated(name))
            .collect();
        let stuck = retried(&updatable, |(name, _)| {
            db.script(
                "SELECT format('ALTER EXTENSION %I UPDATE', :'name') \\gexec\n",
                &[("name", name)],
            )
        });
        let mut remade: Vec<&(String, String)> = extensions
            .iter()
            .filter(|(name, _)| recreated(name))
            .collect();
        for (ext, e) in stuck {
            if REMADE.contains(&ext.0.as_str()) {
                remade.push(ext);
            } else {
                say(&format!(
                    "warning: extension {} in database {database}: {e}",
                    ext.0
                ));
            }
        }
        let not_dropped = retried(&remade, |(name, _)| {
            db.script(
                "SELECT format('DROP EXTENSION %I', :'name') \\gexec\n",
                &[("name", name)],
            )
        });
        for ((name, _), e) in &not_dropped {
            say(&format!(
                "warning: extension {name} in database {database}: {e}"
            ));
        }
        remade.retain(|ext| !not_dropped.iter().any(|(kept, _)| *kept == *ext));
        let not_made = retried(&remade, |(name, schema)| {
            db.script(
                "SELECT format('CREATE EXTENSION %I SCHEMA %I', :'name', :'schema') \\gexec\n",
                &[("name", name), ("schema", schema)],
            )
        });
        for (name, schema) in &remade {
            match not_made.iter().find(|(ext, _)| ext.0 == *name) {
                Some((_, e)) => say(&format!(
                    "warning: extension {name} in database {database} was dropped and not made again: {e}"
                )),
                None => say(&format!(
                    "extension {name} in database {database} made again in schema {schema} at PostgreSQL {}'s version",
                    new_major
                )),
            }
        }
    }
    say("extensions updated");
    Ok(())
}

/// vacuumdb --analyze-in-stages: usable statistics fast, then good
/// ones. 18 keeps the old statistics; only what is missing is made.
pub(crate) fn analyze(server: &Server, jobs: usize) -> Result<(), UpgradeError> {
    let program = server.bin_dir.join("vacuumdb");
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["--all", "--analyze-in-stages", "--quiet"])
        .arg(format!("--jobs={jobs}"))
        .arg(format!("--host={}", server.socket_dir.display()))
        .arg(format!("--port={}", server.port))
        .arg(format!("--username={}", server.user));
    if server.major >= 18 {
        cmd.arg("--missing-stats-only");
    }
    say("rebuilding statistics in stages");
    let out = cmd.output().map_err(UpgradeError::spawn(&program))?;
    if !out.status.success() {
        say(&format!(
            "warning: vacuumdb: {}",
            sql::last_line(&out.stderr)
        ));
    }
    Ok(())
}

/// Extensions whose updates trip over each other (pg_stat_kcache's views
/// stand on pg_stat_statements', and its own update script drops a view
/// another of its views needs). Their counters do not outlive a major
/// anyway: when their update fails they are dropped and made again.
const REMADE: [&str; 2] = ["pg_stat_statements", "pg_stat_kcache"];

/// Runs `action` on every item, again on those that failed for as long
/// as some succeed (one may wait for another); what still fails.
fn retried<'a, T>(
    items: &[&'a T],
    mut action: impl FnMut(&T) -> Result<String, UpgradeError>,
) -> Vec<(&'a T, UpgradeError)> {
    let mut pending: Vec<&'a T> = items.to_vec();
    loop {
        let before = pending.len();
        let mut failed = Vec::new();
        for item in pending {
            if let Err(e) = action(item) {
                failed.push((item, e));
            }
        }
        if failed.is_empty() || failed.len() == before {
            return failed;
        }
        pending = failed.into_iter().map(|(item, _)| item).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_retried_while_others_succeed() {
        // b succeeds only once a has; c never does.
        let items = ["b", "a", "c"];
        let refs: Vec<&&str> = items.iter().collect();
        let mut done = Vec::new();
        let failed = retried(&refs, |item| {
            let ready = *item == "a" || (*item == "b" && done.contains(&"a"));
            if ready {
                done.push(*item);
                Ok(String::new())
            } else {
                Err(UpgradeError::Step {
                    what: "test".into(),
                    reason: (*item).into(),
                })
            }
        });
        assert_eq!(done, ["a", "b"]);
        assert_eq!(failed.len(), 1);
        assert_eq!(*failed[0].0, "c");
    }
}
