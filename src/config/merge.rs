//! SPILO_CONFIGURATION / PATRONI_CONFIGURATION: the user's mapping, deep
//! merged over what we generate.

use serde_json::{Map, Value};

use super::env::{Vars, set};
use super::error::ConfigError;

/// Sections that must stay mappings whatever the user sends: Patroni
/// (and the operator, for bootstrap.dcs.postgresql.parameters) depend on
/// their shape.
const MAPPINGS: [&str; 7] = [
    "bootstrap",
    "bootstrap.dcs",
    "bootstrap.dcs.postgresql",
    "bootstrap.dcs.postgresql.parameters",
    "postgresql",
    "postgresql.parameters",
    "restapi",
];

/// A user configuration and the variable it came from.
pub(crate) type Sourced = (&'static str, Map<String, Value>);

/// The user's configuration, if any. SPILO_CONFIGURATION wins over
/// PATRONI_CONFIGURATION, as in Spilo.
pub(crate) fn user_configuration(vars: &Vars) -> Result<Option<Sourced>, ConfigError> {
    let (var, raw) = match (
        set(&vars.spilo_configuration),
        set(&vars.patroni_configuration),
    ) {
        (Some(raw), _) => ("SPILO_CONFIGURATION", raw),
        (None, Some(raw)) => ("PATRONI_CONFIGURATION", raw),
        (None, None) => return Ok(None),
    };
    let map = match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => return Ok(None),
        Ok(_) => {
            return Err(ConfigError::invalid(
                var,
                raw,
                "must be a YAML or JSON mapping",
            ));
        }
        Err(e) => {
            return Err(ConfigError::invalid(
                var,
                raw,
                format!("not valid YAML: {}", first_line(&e.to_string())),
            ));
        }
    };
    for path in MAPPINGS {
        let found = path.split('.').try_fold(&map, |m, key| match m.get(key) {
            Some(Value::Object(inner)) => Ok(inner),
            Some(_) => Err(true),
            None => Err(false),
        });
        if found == Err(true) {
            return Err(ConfigError::invalid(
                var,
                raw,
                format!("{path} must be a mapping"),
            ));
        }
    }
    Ok(Some((var, map)))
}

/// Mappings merge recursively; a scalar or a list from `over` replaces
/// what `base` has.
pub(crate) fn deep_merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(ours)), Value::Object(theirs)) => deep_merge(ours, theirs),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test values are objects"),
        }
    }

    #[test]
    fn mappings_merge_scalars_and_lists_replace() {
        let mut base = map(json!({
            "postgresql": { "parameters": { "a": "1", "b": "2" }, "pg_hba": ["x", "y"] },
            "bootstrap": { "initdb": ["data-checksums"], "dcs": { "ttl": 30 } },
        }));
        deep_merge(
            &mut base,
            map(json!({
                "postgresql": { "parameters": { "b": "3", "c": "4" }, "pg_hba": ["z"] },
                "bootstrap": { "initdb": [{ "auth-host": "md5" }], "dcs": "replaced" },
                "new": { "k": true },
            })),
        );
        assert_eq!(
            Value::Object(base),
            json!({
                "postgresql": { "parameters": { "a": "1", "b": "3", "c": "4" }, "pg_hba": ["z"] },
                "bootstrap": { "initdb": [{ "auth-host": "md5" }], "dcs": "replaced" },
                "new": { "k": true },
            })
        );
    }

    #[test]
    fn mapping_replaces_scalar() {
        let mut base = map(json!({ "a": 1 }));
        deep_merge(&mut base, map(json!({ "a": { "b": 2 } })));
        assert_eq!(Value::Object(base), json!({ "a": { "b": 2 } }));
    }

    fn parse(
        spilo: Option<&str>,
        patroni: Option<&str>,
    ) -> Result<Option<Map<String, Value>>, ConfigError> {
        let parsed = user_configuration(&Vars {
            spilo_configuration: spilo.map(Into::into),
            patroni_configuration: patroni.map(Into::into),
            ..Vars::default()
        })?;
        Ok(parsed.map(|(_, map)| map))
    }

    #[test]
    fn sections_we_build_on_stay_mappings() {
        for bad in [
            "{postgresql: on}",
            "{postgresql: {parameters: [a]}}",
            "{bootstrap: {dcs: {postgresql: {parameters: null}}}}",
            "{restapi: 8008}",
        ] {
            let err = parse(Some(bad), None).unwrap_err().to_string();
            assert!(err.contains("must be a mapping"), "{err}");
        }
        assert!(
            parse(
                Some("{postgresql: {pg_hba: [a]}, bootstrap: {initdb: []}}"),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn yaml_and_json() {
        let yaml = parse(Some("{bootstrap: {dcs: {ttl: 10}}}"), None)
            .unwrap()
            .unwrap();
        assert_eq!(yaml["bootstrap"]["dcs"]["ttl"], 10);
        let json = parse(Some(r#"{"postgresql":{"parameters":{"a":"b"}}}"#), None)
            .unwrap()
            .unwrap();
        assert_eq!(json["postgresql"]["parameters"]["a"], "b");
        let block = parse(None, Some("postgresql:\n  parameters:\n    a: b\n"))
            .unwrap()
            .unwrap();
        assert_eq!(block["postgresql"]["parameters"]["a"], "b");
        let both = parse(Some("a: 1"), Some("b: 2")).unwrap().unwrap();
        assert!(both.contains_key("a") && !both.contains_key("b"));
        assert_eq!(parse(None, None).unwrap(), None);
        assert_eq!(parse(Some("~"), None).unwrap(), None);
    }

    #[test]
    fn not_a_mapping() {
        for bad in ["[1, 2]", "just a string", "42"] {
            let err = parse(Some(bad), None).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("SPILO_CONFIGURATION={bad}: must be a YAML or JSON mapping")
            );
        }
        let err = parse(Some("{a: [1, 2"), None).unwrap_err().to_string();
        assert!(
            err.starts_with("SPILO_CONFIGURATION={a: [1, 2: not valid YAML"),
            "{err}"
        );
        let err = parse(None, Some("- a")).unwrap_err().to_string();
        assert!(err.starts_with("PATRONI_CONFIGURATION="), "{err}");
    }
}
