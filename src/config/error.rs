//! Configuration errors: one line each, naming the variable (or file) and
//! the offending value, with secrets masked.

use std::path::PathBuf;

/// A bad input found while building the model from the environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable whose value cannot be used.
    #[error("{var}={value}: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
    /// A combination of variables that does not make sense.
    #[error("{var}: {reason}")]
    Inconsistent { var: String, reason: String },
    /// A file that had to be read to build the model.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file whose content is unusable.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

impl ConfigError {
    /// A bad value; masked when the variable holds a secret.
    pub(crate) fn invalid(var: &str, value: &str, reason: impl Into<String>) -> Self {
        let value = if is_secret_var(var) {
            "<redacted>".to_owned()
        } else {
            one_line(value)
        };
        ConfigError::Invalid {
            var: var.to_owned(),
            value,
            reason: reason.into(),
        }
    }

    pub(crate) fn inconsistent(var: &str, reason: impl Into<String>) -> Self {
        ConfigError::Inconsistent {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Variables whose values are never shown: passwords, private keys, the
/// pgbouncer user list and cloud credentials.
pub(crate) fn is_secret_var(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "SECRET",
        "PRIVATE_KEY",
        "TOKEN",
        "AUTHENTICATION",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name == "PGBOUNCER_AUTH"
        || name.ends_with("_ACCESS_KEY")
        || name.ends_with("_ACCOUNT_KEY")
}

/// Keeps an error on one line and of a readable length.
fn one_line(value: &str) -> String {
    const MAX: usize = 120;
    let flat: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > MAX {
        let cut: String = flat.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let e = ConfigError::invalid("PGPASSWORD_SUPERUSER", "hunter2", "bad");
        assert_eq!(e.to_string(), "PGPASSWORD_SUPERUSER=<redacted>: bad");
        let e = ConfigError::invalid("SSL_PRIVATE_KEY", "-----BEGIN", "bad");
        assert!(!e.to_string().contains("BEGIN"));
        let e = ConfigError::invalid("PGPORT", "70000", "not a port");
        assert_eq!(e.to_string(), "PGPORT=70000: not a port");
    }

    #[test]
    fn values_stay_on_one_line() {
        let e = ConfigError::invalid("SPILO_CONFIGURATION", "a:\n  - b\n", "bad");
        assert!(!e.to_string().contains('\n'));
        let long = "x".repeat(500);
        assert!(
            ConfigError::invalid("SCOPE", &long, "bad")
                .to_string()
                .len()
                < 200
        );
    }
}
