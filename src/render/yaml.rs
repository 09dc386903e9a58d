//! A YAML writer for configuration trees that Patroni (PyYAML, YAML 1.1)
//! reads back exactly: every string that YAML 1.1 could take for anything
//! else (on, yes, 0644, 1e3, ...) is double-quoted, which generic
//! serializers do not guarantee.

use std::fmt::Write;

use serde_json::{Map, Value};

pub(crate) fn to_string(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    mapping(&mut out, map, 0);
    out
}

fn mapping(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        pad(out, indent);
        out.push_str(&scalar_str(key));
        out.push(':');
        block_value(out, value, indent);
    }
}

/// A value after `key:` or `-`: inline when scalar or empty, else on the
/// following lines, indented.
fn block_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key shares the dash's line.
                let mut nested = String::new();
                mapping(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            other => block_value(out, other, indent),
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_str(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string plain when nothing can mistake it, else JSON-quoted (a JSON
/// string is a valid YAML double-quoted scalar).
fn scalar_str(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        let mut quoted = String::with_capacity(s.len() + 2);
        // Writing JSON into a String cannot fail.
        let _ = write!(quoted, "{}", Value::String(s.to_owned()));
        quoted
    }
}

fn is_plain_safe(s: &str) -> bool {
    const YAML11_WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", "~",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        && !YAML11_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn emit(v: Value) -> String {
        match v {
            Value::Object(m) => to_string(&m),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn layout() {
        let text = emit(json!({
            "scope": "demo",
            "bootstrap": { "initdb": [{ "encoding": "UTF8", "x": 1 }, "data-checksums"], "empty": {} },
            "hosts": ["a:1", "b:2"],
            "nested": [["x"]],
        }));
        assert_eq!(
            text,
            "scope: demo\nbootstrap:\n  initdb:\n    - encoding: UTF8\n      x: 1\n    - data-checksums\n  empty: {}\nhosts:\n  - \"a:1\"\n  - \"b:2\"\nnested:\n  -\n    - x\n"
        );
    }

    #[test]
    fn yaml11_lookalikes_are_quoted() {
        for s in [
            "on", "OFF", "yes", "n", "true", "null", "~", "0644", "1800s", "1d2", "", "*:8008",
            "%t [%p]", "a: b", "#x", "-x",
        ] {
            assert!(scalar_str(s).starts_with('"'), "{s:?} must be quoted");
        }
        for s in [
            "demo",
            "/run/postgres.yml",
            "en_US.UTF-8",
            "data-checksums",
            "hot_standby",
        ] {
            assert_eq!(scalar_str(s), s);
        }
    }

    #[test]
    fn round_trips_through_a_yaml_parser() {
        let tree = json!({
            "a": "on", "b": 0.9, "c": true, "d": null, "e": "line\nbreak \"q\" \\ \u{1}",
            "f": [{ "g": ["h", { "i": "0644" }] }], "j": [], "k": {},
        });
        let text = emit(tree.clone());
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, tree, "{text}");
    }
}
