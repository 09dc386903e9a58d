//! Choosing the distributed configuration store Patroni uses, from the
//! `<DCS>_<PARAM>` variables.

use serde_json::{Map, Value, json};

use super::env::{Env, Vars, parse_bool, set};
use super::error::ConfigError;
use super::kubernetes::{DEFAULT_LEADER_LABEL_VALUE, DEFAULT_ROLE_LABEL};

/// The DCS sections Patroni knows, in the order Spilo prefers them after
/// Kubernetes.
pub(crate) const DCS_NAMES: [&str; 6] = [
    "kubernetes",
    "zookeeper",
    "exhibitor",
    "consul",
    "etcd3",
    "etcd",
];

/// The etcd that `spilo init` starts inside the container when nothing
/// else is configured.
pub(crate) const EMBEDDED_ETCD: &str = "127.0.0.1:2379";

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DcsKind {
    Kubernetes,
    /// One of zookeeper, exhibitor, consul, etcd3, etcd.
    Named(&'static str),
    /// Given in SPILO_CONFIGURATION rather than in variables.
    UserConfiguration,
    /// Single member with an etcd inside the container.
    Embedded,
}

/// The chosen DCS and the top-level Patroni keys it contributes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dcs {
    pub(crate) kind: DcsKind,
    pub(crate) config: Map<String, Value>,
}

/// Variables Kubernetes injects into every pod, or that have a typed
/// meaning below: never copied into the `kubernetes` block as they are.
const KUBERNETES_RESERVED: [&str; 9] = [
    "service_host",
    "labels",
    "bootstrap_labels",
    "scope_label",
    "role_label",
    "leader_label_value",
    "standby_leader_label_value",
    "use_configmaps",
    "namespace",
];

pub(crate) struct Inputs<'a> {
    pub(crate) pod_ip: &'a str,
    pub(crate) pg_port: u16,
    /// Whether SPILO_CONFIGURATION carries a DCS section of its own.
    pub(crate) user_has_dcs: bool,
}

pub(crate) fn choose(env: &Env, vars: &Vars, inputs: &Inputs) -> Result<Dcs, ConfigError> {
    let mut params: Vec<(&'static str, Map<String, Value>)> =
        DCS_NAMES.iter().map(|&n| (n, Map::new())).collect();
    for (name, value) in env.iter() {
        let Some((prefix, param)) = name.split_once('_') else {
            continue;
        };
        let Some((dcs, block)) = params.iter_mut().find(|(dcs, _)| {
            dcs.eq_ignore_ascii_case(prefix) && prefix.bytes().all(|b| !b.is_ascii_lowercase())
        }) else {
            continue;
        };
        let param = param.to_ascii_lowercase();
        if *dcs == "kubernetes"
            && (KUBERNETES_RESERVED.contains(&param.as_str())
                || param.starts_with("service_")
                || param.starts_with("port"))
        {
            continue;
        }
        let (key, value) = parameter(name, &param, value)?;
        block.insert(key, value);
    }

    let kubernetes_api = parse_bool("DCS_ENABLE_KUBERNETES_API", &vars.dcs_enable_kubernetes_api)?;
    if set(&vars.kubernetes_service_host).is_some() && kubernetes_api {
        let block = params.swap_remove(0).1;
        return kubernetes(vars, block, inputs);
    }
    if let Some((name, block)) = params
        .into_iter()
        .skip(1)
        .find(|(_, block)| !block.is_empty())
    {
        let mut config = Map::new();
        config.insert(name.to_owned(), Value::Object(block));
        return Ok(Dcs {
            kind: DcsKind::Named(name),
            config,
        });
    }
    if inputs.user_has_dcs {
        return Ok(Dcs {
            kind: DcsKind::UserConfiguration,
            config: Map::new(),
        });
    }
    let mut config = Map::new();
    config.insert("etcd3".into(), json!({ "hosts": [EMBEDDED_ETCD] }));
    Ok(Dcs {
        kind: DcsKind::Embedded,
        config,
    })
}

/// One `<DCS>_<PARAM>` variable as a Patroni key and value.
fn parameter(var: &str, param: &str, value: &str) -> Result<(String, Value), ConfigError> {
    Ok(match param {
        "hosts" => ("hosts".into(), Value::Array(host_list(var, value)?)),
        "discovery_domain" => ("discovery_srv".into(), Value::String(value.into())),
        "port" => {
            let port = value
                .trim()
                .parse::<u16>()
                .map_err(|_| ConfigError::invalid(var, value, "not a TCP port number (1-65535)"))?;
            ("port".into(), json!(port))
        }
        _ => (param.into(), Value::String(value.into())),
    })
}

/// A host list: YAML/JSON, or comma separated (`a:2379,b:2379`, also with
/// each entry quoted as the compose examples do).
fn host_list(var: &str, value: &str) -> Result<Vec<Value>, ConfigError> {
    let trimmed = value.trim();
    let yaml = if trimmed.starts_with('-') || trimmed.contains('[') {
        trimmed.to_owned()
    } else {
        format!("[{trimmed}]")
    };
    let parsed: Value = super::merge::parse_yaml(var, &yaml)?.map_err(|_| {
        ConfigError::invalid(
            var,
            value,
            "not a host list (YAML/JSON list or comma separated)",
        )
    })?;
    let Value::Array(items) = parsed else {
        return Err(ConfigError::invalid(var, value, "not a host list"));
    };
    let hosts: Vec<Value> = items
        .into_iter()
        .map(|item| match item {
            Value::String(s) if !s.trim().is_empty() => Ok(Value::String(s.trim().to_owned())),
            _ => Err(ConfigError::invalid(
                var,
                value,
                "every host must be a non-empty string",
            )),
        })
        .collect::<Result<_, _>>()?;
    if hosts.is_empty() {
        return Err(ConfigError::invalid(var, value, "the host list is empty"));
    }
    Ok(hosts)
}

fn kubernetes(
    vars: &Vars,
    mut block: Map<String, Value>,
    inputs: &Inputs,
) -> Result<Dcs, ConfigError> {
    let labels = match set(&vars.kubernetes_labels) {
        Some(raw) => label_map("KUBERNETES_LABELS", raw)?,
        None => json!({ "application": "spilo" }),
    };
    block.insert("labels".into(), labels);
    if let Some(raw) = set(&vars.kubernetes_bootstrap_labels) {
        block.insert(
            "bootstrap_labels".into(),
            label_map("KUBERNETES_BOOTSTRAP_LABELS", raw)?,
        );
    }
    for (key, value, default) in [
        ("scope_label", &vars.kubernetes_scope_label, "version"),
        (
            "role_label",
            &vars.kubernetes_role_label,
            DEFAULT_ROLE_LABEL,
        ),
        (
            "leader_label_value",
            &vars.kubernetes_leader_label_value,
            DEFAULT_LEADER_LABEL_VALUE,
        ),
        (
            "standby_leader_label_value",
            &vars.kubernetes_standby_leader_label_value,
            DEFAULT_LEADER_LABEL_VALUE,
        ),
    ] {
        block.insert(key.into(), json!(set(value).unwrap_or(default)));
    }
    block.insert("bypass_api_service".into(), json!(true));
    if !parse_bool("KUBERNETES_USE_CONFIGMAPS", &vars.kubernetes_use_configmaps)? {
        block.insert("use_endpoints".into(), json!(true));
        block.insert("pod_ip".into(), json!(inputs.pod_ip));
        block.insert(
            "ports".into(),
            json!([{ "name": "postgresql", "port": inputs.pg_port }]),
        );
    }
    let mut config = Map::new();
    config.insert("kubernetes".into(), Value::Object(block));
    if let Some(ns) = set(&vars.pod_namespace).filter(|ns| *ns != "default") {
        config.insert("namespace".into(), json!(ns));
    }
    Ok(Dcs {
        kind: DcsKind::Kubernetes,
        config,
    })
}

/// A JSON object of string labels.
fn label_map(var: &str, raw: &str) -> Result<Value, ConfigError> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) if map.values().all(Value::is_string) => Ok(Value::Object(map)),
        Ok(_) => Err(ConfigError::invalid(
            var,
            raw,
            "must be a JSON object of string labels",
        )),
        Err(e) => Err(ConfigError::invalid(var, raw, format!("not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(pairs: &[(&str, &str)], user_has_dcs: bool) -> Result<Dcs, ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let vars = env.vars().unwrap();
        choose(
            &env,
            &vars,
            &Inputs {
                pod_ip: "10.0.0.5",
                pg_port: 5432,
                user_has_dcs,
            },
        )
    }

    const K8S: [(&str, &str); 2] = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("DCS_ENABLE_KUBERNETES_API", "true"),
    ];

    #[test]
    fn kubernetes_first_when_enabled() {
        let mut pairs = K8S.to_vec();
        pairs.push(("ETCD3_HOSTS", "a:2379"));
        pairs.push(("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"));
        let dcs = pick(&pairs, false).unwrap();
        assert_eq!(dcs.kind, DcsKind::Kubernetes);
        assert_eq!(
            Value::Object(dcs.config),
            json!({ "kubernetes": {
                "labels": { "application": "spilo" },
                "scope_label": "version",
                "role_label": "spilo-role",
                "leader_label_value": "master",
                "standby_leader_label_value": "master",
                "bypass_api_service": true,
                "use_endpoints": true,
                "pod_ip": "10.0.0.5",
                "ports": [{ "name": "postgresql", "port": 5432 }],
            }})
        );
    }

    #[test]
    fn kubernetes_needs_both_variables() {
        let dcs = pick(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")], false).unwrap();
        assert_eq!(dcs.kind, DcsKind::Embedded);
        let dcs = pick(
            &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("DCS_ENABLE_KUBERNETES_API", "false"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(dcs.kind, DcsKind::Embedded);
        let dcs = pick(&[("DCS_ENABLE_KUBERNETES_API", "true")], false).unwrap();
        assert_eq!(dcs.kind, DcsKind::Embedded);
    }

    #[test]
    fn kubernetes_configmaps_labels_and_namespace() {
        let mut pairs = K8S.to_vec();
        pairs.extend([
            ("KUBERNETES_USE_CONFIGMAPS", "true"),
            ("KUBERNETES_LABELS", r#"{"application":"db","team":"acid"}"#),
            (
                "KUBERNETES_BOOTSTRAP_LABELS",
                r#"{"critical-operation":"true"}"#,
            ),
            ("KUBERNETES_SCOPE_LABEL", "cluster-name"),
            ("POD_NAMESPACE", "prod"),
        ]);
        let dcs = pick(&pairs, false).unwrap();
        let k = &dcs.config["kubernetes"];
        assert_eq!(k["labels"], json!({"application":"db","team":"acid"}));
        assert_eq!(k["bootstrap_labels"], json!({"critical-operation":"true"}));
        assert_eq!(k["scope_label"], "cluster-name");
        assert!(k.get("use_endpoints").is_none());
        assert!(k.get("pod_ip").is_none());
        assert_eq!(dcs.config["namespace"], "prod");
    }

    #[test]
    fn bad_labels() {
        for bad in ["not json", "[1,2]", r#"{"a":1}"#] {
            let mut pairs = K8S.to_vec();
            pairs.push(("KUBERNETES_LABELS", bad));
            let err = pick(&pairs, false).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("KUBERNETES_LABELS={bad}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn order_after_kubernetes() {
        // In preference order: with the first i removed, the i-th wins.
        let all = [
            ("ZOOKEEPER_HOSTS", "z1:2181,z2:2181"),
            ("EXHIBITOR_HOSTS", "x1,x2"),
            ("CONSUL_HOST", "c:8500"),
            ("ETCD3_HOSTS", "e3:2379"),
            ("ETCD_HOST", "e:2379"),
        ];
        let expected = ["zookeeper", "exhibitor", "consul", "etcd3", "etcd"];
        for i in 0..all.len() {
            let dcs = pick(&all[i..], false).unwrap();
            assert_eq!(dcs.kind, DcsKind::Named(expected[i]));
            assert_eq!(dcs.config.len(), 1);
        }
        let dcs = pick(&all, false).unwrap();
        assert_eq!(
            dcs.config["zookeeper"]["hosts"],
            json!(["z1:2181", "z2:2181"])
        );
    }

    #[test]
    fn parameters_map_to_keys() {
        let dcs = pick(
            &[
                ("ETCD_HOST", "127.0.0.2:2379"),
                ("ETCD_DISCOVERY_DOMAIN", "example.com"),
                ("ETCD_PROTOCOL", "https"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            dcs.config["etcd"],
            json!({ "host": "127.0.0.2:2379", "discovery_srv": "example.com", "protocol": "https" })
        );
        let dcs = pick(
            &[("EXHIBITOR_HOSTS", "a"), ("EXHIBITOR_PORT", "8181")],
            false,
        )
        .unwrap();
        assert_eq!(dcs.config["exhibitor"]["port"], json!(8181));
    }

    #[test]
    fn host_lists() {
        for raw in [
            r#""a:2379","b:2379""#,
            "a:2379,b:2379",
            r#"["a:2379", "b:2379"]"#,
            "- a:2379\n- b:2379",
        ] {
            let dcs = pick(&[("ETCD3_HOSTS", raw)], false).unwrap();
            assert_eq!(
                dcs.config["etcd3"]["hosts"],
                json!(["a:2379", "b:2379"]),
                "{raw}"
            );
        }
        let deep = "[".repeat(100_000);
        for bad in ["[a, [b]]", "{a: 1}", "[", ",", &deep] {
            let err = pick(&[("ETCD3_HOSTS", bad)], false)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("ETCD3_HOSTS="), "{err}");
        }
    }

    #[test]
    fn embedded_or_user_configuration() {
        let dcs = pick(&[], false).unwrap();
        assert_eq!(dcs.kind, DcsKind::Embedded);
        assert_eq!(dcs.config["etcd3"]["hosts"], json!([EMBEDDED_ETCD]));
        let dcs = pick(&[], true).unwrap();
        assert_eq!(dcs.kind, DcsKind::UserConfiguration);
        assert!(dcs.config.is_empty());
    }
}
