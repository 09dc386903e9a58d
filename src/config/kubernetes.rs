//! The Kubernetes a pod runs on (KUBERNETES_SERVICE_HOST set): where its
//! API server is, which namespace the pod is in, its service account and
//! the role label the operator selects pods by.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::env::{Vars, parse_port, set};
use super::error::ConfigError;

/// Where Kubernetes mounts the pod's service account (token, ca.crt,
/// namespace).
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The label the operator selects a cluster's pods by role with.
pub(crate) const DEFAULT_ROLE_LABEL: &str = "spilo-role";

/// The operator waits for `spilo-role=master`; Patroni 4's own default is
/// `primary`.
pub(crate) const DEFAULT_LEADER_LABEL_VALUE: &str = "master";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kubernetes {
    /// KUBERNETES_SERVICE_HOST: an address (IPv4 or IPv6) or a name.
    pub(crate) api_host: String,
    /// KUBERNETES_SERVICE_PORT, 443 by default.
    pub(crate) api_port: u16,
    /// POD_NAMESPACE, else the service account's, else `default`.
    pub(crate) namespace: String,
    pub(crate) role_label: String,
    pub(crate) leader_label_value: String,
    pub(crate) standby_leader_label_value: String,
    /// SPILO_SERVICE_ACCOUNT_DIR (tests move it), else the standard mount.
    pub(crate) service_account_dir: PathBuf,
}

impl Kubernetes {
    /// None when not on Kubernetes. Reads the service account's namespace
    /// file when POD_NAMESPACE is not set, as Spilo does.
    pub(crate) fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let Some(api_host) = set(&vars.kubernetes_service_host) else {
            return Ok(None);
        };
        let api_port = parse_port(
            "KUBERNETES_SERVICE_PORT",
            &vars.kubernetes_service_port,
            443,
        )?;
        let service_account_dir = match set(&vars.spilo_service_account_dir) {
            Some(dir) if Path::new(dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => {
                return Err(ConfigError::invalid(
                    "SPILO_SERVICE_ACCOUNT_DIR",
                    dir,
                    "must be an absolute path",
                ));
            }
            None => PathBuf::from(SERVICE_ACCOUNT_DIR),
        };
        let namespace = match set(&vars.pod_namespace) {
            Some(ns) => ns.trim().to_owned(),
            None => namespace_file(&service_account_dir.join("namespace"))?
                .unwrap_or_else(|| "default".to_owned()),
        };
        let value = |v: &Option<String>, default: &str| set(v).unwrap_or(default).to_owned();
        Ok(Some(Kubernetes {
            api_host: api_host.trim().to_owned(),
            api_port,
            namespace,
            role_label: value(&vars.kubernetes_role_label, DEFAULT_ROLE_LABEL),
            leader_label_value: value(
                &vars.kubernetes_leader_label_value,
                DEFAULT_LEADER_LABEL_VALUE,
            ),
            standby_leader_label_value: value(
                &vars.kubernetes_standby_leader_label_value,
                DEFAULT_LEADER_LABEL_VALUE,
            ),
            service_account_dir,
        }))
    }
}

/// The first line of the namespace file; None when there is none (no
/// service account mounted).
fn namespace_file(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .next()
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn from(pairs: &[(&str, &str)]) -> Result<Option<Kubernetes>, ConfigError> {
        Kubernetes::from_vars(&Env::from_pairs(pairs.iter().copied()).vars().unwrap())
    }

    #[test]
    fn only_on_kubernetes() {
        assert_eq!(from(&[("POD_NAMESPACE", "x")]).unwrap(), None);
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().display().to_string();
        let k = from(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("SPILO_SERVICE_ACCOUNT_DIR", &sa),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            k,
            Kubernetes {
                api_host: "10.96.0.1".into(),
                api_port: 443,
                namespace: "default".into(),
                role_label: "spilo-role".into(),
                leader_label_value: "master".into(),
                standby_leader_label_value: "master".into(),
                service_account_dir: dir.path().to_owned(),
            }
        );
        std::fs::write(dir.path().join("namespace"), "acid\n").unwrap();
        let k = from(&[
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            ("SPILO_SERVICE_ACCOUNT_DIR", &sa),
            ("KUBERNETES_ROLE_LABEL", "role"),
            ("KUBERNETES_LEADER_LABEL_VALUE", "leader"),
            ("KUBERNETES_STANDBY_LEADER_LABEL_VALUE", "standby"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (k.api_port, k.namespace.as_str(), k.role_label.as_str()),
            (6443, "acid", "role")
        );
        assert_eq!(
            (
                k.leader_label_value.as_str(),
                k.standby_leader_label_value.as_str()
            ),
            ("leader", "standby")
        );
        let k = from(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("SPILO_SERVICE_ACCOUNT_DIR", &sa),
            ("POD_NAMESPACE", "prod"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(k.namespace, "prod");
    }

    #[test]
    fn bad_values() {
        let err = from(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "https"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("KUBERNETES_SERVICE_PORT=https:"),
            "{err}"
        );
        let err = from(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("SPILO_SERVICE_ACCOUNT_DIR", "relative"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SPILO_SERVICE_ACCOUNT_DIR=relative:"),
            "{err}"
        );
    }
}
