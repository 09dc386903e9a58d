//! Patroni's timing rules for bootstrap.dcs, applied to the user's values
//! as Patroni applies them at run time, so that the rendered file says
//! what is in effect and passes `patroni --validate-config`.

use serde_json::{Map, Value, json};

use super::error::ConfigError;

const DEFAULTS: [(&str, i64, i64); 3] = [
    ("loop_wait", 10, 1),
    ("retry_timeout", 10, 3),
    ("ttl", 30, 20),
];

/// Raises values below Patroni's floors (loop_wait 1, retry_timeout 3,
/// ttl 20) and keeps loop_wait + 2 * retry_timeout <= ttl, preferring to
/// shorten loop_wait. Returns one warning per change.
pub(crate) fn adjust(user: &mut Map<String, Value>, var: &str) -> Result<Vec<String>, ConfigError> {
    let Some(Value::Object(dcs)) = user
        .get_mut("bootstrap")
        .and_then(|b| b.as_object_mut())
        .and_then(|b| b.get_mut("dcs"))
    else {
        return Ok(Vec::new());
    };
    if !DEFAULTS.iter().any(|(k, _, _)| dcs.contains_key(*k)) {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    let mut values = [0i64; 3];
    for (i, (key, default, floor)) in DEFAULTS.iter().enumerate() {
        let value = match dcs.get(*key) {
            None => *default,
            Some(v) => integer(v).ok_or_else(|| {
                ConfigError::invalid(var, &format!("bootstrap.dcs.{key}: {v}"), "not an integer")
            })?,
        };
        values[i] = value.max(*floor);
        if value < *floor {
            warnings.push(format!(
                "{var}: bootstrap.dcs.{key}={value} raised to Patroni's minimum {floor}"
            ));
            dcs.insert((*key).to_owned(), json!(floor));
        }
    }
    let [loop_wait, retry_timeout, ttl] = values;
    if 1 + 2 * retry_timeout > ttl {
        let retry = (ttl - 1) / 2;
        dcs.insert("loop_wait".into(), json!(1));
        dcs.insert("retry_timeout".into(), json!(retry));
        warnings.push(format!(
            "{var}: loop_wait + 2 * retry_timeout must not exceed ttl={ttl}: loop_wait set to 1, retry_timeout to {retry}"
        ));
    } else if loop_wait + 2 * retry_timeout > ttl {
        let wait = ttl - 2 * retry_timeout;
        dcs.insert("loop_wait".into(), json!(wait));
        warnings.push(format!(
            "{var}: loop_wait + 2 * retry_timeout must not exceed ttl={ttl}: loop_wait set to {wait}"
        ));
    }
    Ok(warnings)
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dcs: Value) -> (Value, Vec<String>) {
        let mut user = json!({ "bootstrap": { "dcs": dcs } })
            .as_object()
            .cloned()
            .unwrap();
        let warnings = adjust(&mut user, "SPILO_CONFIGURATION").unwrap();
        (user["bootstrap"]["dcs"].clone(), warnings)
    }

    #[test]
    fn valid_values_are_kept() {
        let (dcs, w) = run(json!({ "ttl": 20, "loop_wait": 2, "retry_timeout": 4 }));
        assert_eq!(
            dcs,
            json!({ "ttl": 20, "loop_wait": 2, "retry_timeout": 4 })
        );
        assert!(w.is_empty());
        let (dcs, w) = run(json!({ "synchronous_mode": true }));
        assert_eq!(dcs, json!({ "synchronous_mode": true }));
        assert!(w.is_empty());
    }

    #[test]
    fn floors_are_raised() {
        let (dcs, w) = run(json!({ "ttl": 10, "loop_wait": 2, "retry_timeout": 4 }));
        assert_eq!(
            dcs,
            json!({ "ttl": 20, "loop_wait": 2, "retry_timeout": 4 })
        );
        assert_eq!(
            w,
            ["SPILO_CONFIGURATION: bootstrap.dcs.ttl=10 raised to Patroni's minimum 20"]
        );
        let (dcs, _) = run(json!({ "loop_wait": "0", "retry_timeout": 1 }));
        assert_eq!(dcs["loop_wait"], 1);
        assert_eq!(dcs["retry_timeout"], 3);
    }

    #[test]
    fn the_sum_rule_shortens_loop_wait_first() {
        let (dcs, w) = run(json!({ "ttl": 20, "loop_wait": 10, "retry_timeout": 8 }));
        assert_eq!(dcs["loop_wait"], 4);
        assert_eq!(w.len(), 1);
        let (dcs, _) = run(json!({ "ttl": 20, "retry_timeout": 15 }));
        assert_eq!(
            (dcs["loop_wait"].clone(), dcs["retry_timeout"].clone()),
            (json!(1), json!(9))
        );
    }

    #[test]
    fn non_integers_are_errors() {
        let mut user = json!({ "bootstrap": { "dcs": { "ttl": "soon" } } })
            .as_object()
            .cloned()
            .unwrap();
        let err = adjust(&mut user, "SPILO_CONFIGURATION").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SPILO_CONFIGURATION=bootstrap.dcs.ttl: \"soon\": not an integer"
        );
    }
}
