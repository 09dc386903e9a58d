//! Checking the tokeninfo JSON answer against the user and the claims.

use serde_json::Value;

use crate::config::Config;

/// Why a tokeninfo answer does not grant access. The messages name fields,
/// never their values (the answer may echo the token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mismatch {
    #[error("tokeninfo answer is not valid JSON")]
    MalformedJson,
    #[error("tokeninfo answer is not a JSON object")]
    NotAnObject,
    #[error("tokeninfo answer has no field {0:?}")]
    MissingField(String),
    #[error("tokeninfo field {0:?} has a JSON type that cannot be compared")]
    WrongType(String),
    #[error("tokeninfo field {0:?} does not match the user name")]
    WrongUser(String),
    #[error("tokeninfo field {0:?} does not match the configured value")]
    WrongClaim(String),
}

/// Grant access only if `body` is a JSON object whose login field equals
/// `user` and whose fields match every configured claim.
pub fn check_answer(config: &Config, user: &str, body: &[u8]) -> Result<(), Mismatch> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| Mismatch::MalformedJson)?;
    let Value::Object(fields) = answer else {
        return Err(Mismatch::NotAnObject);
    };
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| Mismatch::MissingField(name.to_owned()))
    };

    let login = field(&config.login_field)?;
    if !matches!(login, Value::String(_) | Value::Number(_)) {
        return Err(Mismatch::WrongType(config.login_field.clone()));
    }
    if !value_matches(login, user) {
        return Err(Mismatch::WrongUser(config.login_field.clone()));
    }

    for claim in &config.claims {
        let v = field(&claim.name)?;
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(Mismatch::WrongType(claim.name.clone()));
        }
        if !value_matches(v, &claim.value) {
            return Err(Mismatch::WrongClaim(claim.name.clone()));
        }
    }
    Ok(())
}

/// A JSON string matches its exact text; a number matches its JSON text
/// (`5` matches "5", `5.0` does not); a boolean matches `true`/`false`.
pub fn value_matches(v: &Value, expected: &str) -> bool {
    match v {
        Value::String(s) => s == expected,
        Value::Number(n) => n.to_string() == expected,
        Value::Bool(b) => expected == if *b { "true" } else { "false" },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(claims: &[&str]) -> Config {
        let mut args = vec!["https://h/t?access_token=", "uid"];
        args.extend_from_slice(claims);
        Config::parse(&args).expect("config")
    }

    #[test]
    fn good_answer() {
        let c = config(&["realm=/employees", "n=5", "s=5", "active=true"]);
        let body =
            br#"{"uid":"alice","realm":"/employees","n":5,"s":"5","active":true,"scope":["a"]}"#;
        assert_eq!(check_answer(&c, "alice", body), Ok(()));
    }

    #[test]
    fn numeric_login() {
        let c = config(&[]);
        assert_eq!(check_answer(&c, "1000", br#"{"uid":1000}"#), Ok(()));
        assert_eq!(
            check_answer(&c, "1000", br#"{"uid":1000.0}"#),
            Err(Mismatch::WrongUser("uid".into()))
        );
    }

    #[test]
    fn denials() {
        let c = config(&["realm=/employees"]);
        let cases: &[(&[u8], Mismatch)] = &[
            (b"{not json", Mismatch::MalformedJson),
            (b"", Mismatch::MalformedJson),
            (
                br#"{"uid":"alice","realm":"/employees"} trailing"#,
                Mismatch::MalformedJson,
            ),
            (br#"["uid","alice"]"#, Mismatch::NotAnObject),
            (br#""alice""#, Mismatch::NotAnObject),
            (
                br#"{"realm":"/employees"}"#,
                Mismatch::MissingField("uid".into()),
            ),
            (
                br#"{"uid":"bob","realm":"/employees"}"#,
                Mismatch::WrongUser("uid".into()),
            ),
            (
                br#"{"uid":"Alice","realm":"/employees"}"#,
                Mismatch::WrongUser("uid".into()),
            ),
            (
                br#"{"uid":["alice"],"realm":"/employees"}"#,
                Mismatch::WrongType("uid".into()),
            ),
            (
                br#"{"uid":null,"realm":"/employees"}"#,
                Mismatch::WrongType("uid".into()),
            ),
            (
                br#"{"uid":true,"realm":"/employees"}"#,
                Mismatch::WrongType("uid".into()),
            ),
            (
                br#"{"uid":"alice"}"#,
                Mismatch::MissingField("realm".into()),
            ),
            (
                br#"{"uid":"alice","realm":"/services"}"#,
                Mismatch::WrongClaim("realm".into()),
            ),
            (
                br#"{"uid":"alice","realm":{"x":1}}"#,
                Mismatch::WrongType("realm".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                check_answer(&c, "alice", body).as_ref(),
                Err(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn messages_carry_no_values() {
        let c = config(&["realm=/employees"]);
        let e =
            check_answer(&c, "alice", br#"{"uid":"secret-token-value"}"#).expect_err("mismatch");
        assert!(!e.to_string().contains("secret-token-value"));
    }
}
