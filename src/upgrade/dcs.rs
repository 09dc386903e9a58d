//! The DCS's initialize key: it holds the cluster's system identifier,
//! which pg_upgrade changes. Patroni writes it again (with the new one)
//! when its leader finds it missing, and every member must agree with it
//! once the cluster resumes, so the upgrade removes it while paused.
//! Patroni's own DCS layer does the removal: it knows every DCS Patroni
//! supports (etcd, Kubernetes, Consul, ZooKeeper, ...) and their TLS and
//! credentials, from the same configuration file Patroni runs with.

use std::path::Path;
use std::process::Command;

use super::UpgradeError;
use super::sql::last_line;

/// Prints the initialize key (empty when there is none); with `remove`,
/// removes it first and fails when the DCS refuses.
const SCRIPT: &str = r#"
import sys
from patroni.config import Config
from patroni.dcs import get_dcs
config = Config(sys.argv[1], validator=None).copy()
config.update({'patronictl': True, 'loop_wait': 0, 'ttl': 10, 'retry_timeout': 10})
dcs = get_dcs(config)
if sys.argv[2] == 'remove' and dcs.get_cluster().initialize and not dcs.cancel_initialization():
    sys.exit('the DCS refused to remove the initialize key')
print(dcs.get_cluster().initialize or '')
"#;

/// The system identifier the DCS has for the cluster ("" when none).
pub(crate) fn initialize_key(config: &Path) -> Result<String, UpgradeError> {
    run(config, "show")
}

/// Removes the initialize key; what it holds afterwards ("" normally).
pub(crate) fn remove_initialize_key(config: &Path) -> Result<String, UpgradeError> {
    run(config, "remove")
}

fn run(config: &Path, action: &str) -> Result<String, UpgradeError> {
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(config)
        .arg(action)
        .output()
        .map_err(UpgradeError::spawn(Path::new("python3")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(UpgradeError::Step {
            what: "the DCS's initialize key".into(),
            reason: last_line(&out.stderr),
        })
    }
}
