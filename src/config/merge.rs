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
    let map = match parse_yaml(var, raw)? {
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

/// A variable's value as YAML, refused before parsing when it nests
/// flow collections so deep that the parser would take time quadratic in
/// the depth before its own recursion limit stops it.
pub(crate) fn parse_yaml(
    var: &str,
    raw: &str,
) -> Result<serde_yaml_ng::Result<Value>, ConfigError> {
    if flow_depth(raw) > MAX_FLOW_DEPTH {
        return Err(ConfigError::invalid(
            var,
            raw,
            format!("nests [ and {{ deeper than {MAX_FLOW_DEPTH} levels"),
        ));
    }
    Ok(serde_yaml_ng::from_str(raw))
}

const MAX_FLOW_DEPTH: usize = 100;

/// The deepest nesting of `[` and `{` outside quoted strings.
fn flow_depth(raw: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in raw.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
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

    #[test]
    fn large_deep_and_self_repeating_input_is_bounded() {
        // 1 MiB of parameters: parsed whole.
        let mut big = String::from("postgresql:\n  parameters:\n");
        let mut n = 0;
        while big.len() < 1 << 20 {
            big.push_str(&format!("    custom.p{n}: '{}'\n", "x".repeat(40)));
            n += 1;
        }
        let parsed = parse(Some(&big), None).unwrap().unwrap();
        let parameters = parsed["postgresql"]["parameters"].as_object().unwrap();
        assert_eq!(parameters.len(), n);
        // Nesting deeper than the parser's recursion limit, as flow and
        // block YAML and as JSON: one error, no stack overflow.
        let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let block: String = (0..10_000)
            .map(|d| format!("{}k:\n", " ".repeat(d)))
            .collect();
        let json = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(flow_depth(r#"{a: "[[{", b: '{{', c: [[1]]}"#), 3);
        for deep in [flow, block, json] {
            let err = parse(Some(&deep), None).unwrap_err().to_string();
            assert!(err.starts_with("SPILO_CONFIGURATION="), "{err}");
            assert!(err.len() < 400, "{err}");
        }
        // Aliases that would expand to billions of nodes.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let prev = format!("*l{}", level - 1).replace("*l0", "*a");
            bomb.push_str(&format!(
                "l{level}: &l{level} [{}]\n",
                vec![prev; 10].join(", ")
            ));
        }
        let err = parse(Some(&bomb), None).unwrap_err().to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
