//! TLS material for PostgreSQL and the Patroni REST API: where the files
//! are and, when given in variables, what to write into them.

use std::path::{Path, PathBuf};

use super::env::{Vars, set};
use super::error::ConfigError;

/// One certificate, its key and optionally a CA bundle and a CRL. A
/// `Some` content is written to its path; `None` means the file is
/// expected there already (mounted, or generated for PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) crl_file: Option<PathBuf>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) ca: Option<String>,
    pub(crate) crl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ssl {
    pub(crate) postgres: Tls,
    /// Only when some SSL_RESTAPI_* variable is given.
    pub(crate) restapi: Option<Tls>,
}

/// The names of one family of variables (plain or SSL_RESTAPI_).
struct Names {
    prefix: &'static str,
    cert_default: &'static str,
    key_default: &'static str,
    ca_default: &'static str,
}

impl Ssl {
    pub(crate) fn from_vars(vars: &Vars, certs_dir: &Path) -> Result<Self, ConfigError> {
        let postgres = tls(
            &Names {
                prefix: "SSL_",
                cert_default: "server.crt",
                key_default: "server.key",
                ca_default: "ca.crt",
            },
            certs_dir,
            [
                &vars.ssl_certificate_file,
                &vars.ssl_private_key_file,
                &vars.ssl_ca_file,
                &vars.ssl_crl_file,
            ],
            [
                &vars.ssl_certificate,
                &vars.ssl_private_key,
                &vars.ssl_ca,
                &vars.ssl_crl,
            ],
        )?;
        let restapi_vars = [
            &vars.ssl_restapi_certificate_file,
            &vars.ssl_restapi_private_key_file,
            &vars.ssl_restapi_ca_file,
            &None,
        ];
        let restapi_contents = [
            &vars.ssl_restapi_certificate,
            &vars.ssl_restapi_private_key,
            &vars.ssl_restapi_ca,
            &None,
        ];
        let restapi = if restapi_vars
            .iter()
            .chain(restapi_contents.iter())
            .any(|v| set(v).is_some())
        {
            let names = Names {
                prefix: "SSL_RESTAPI_",
                cert_default: "rest-api-server.crt",
                key_default: "rest-api-server.key",
                ca_default: "rest-api-ca.crt",
            };
            let tls = tls(&names, certs_dir, restapi_vars, restapi_contents)?;
            if set(&vars.ssl_restapi_certificate_file).is_none() && tls.cert.is_none() {
                return Err(ConfigError::inconsistent(
                    "SSL_RESTAPI_CERTIFICATE",
                    "REST API TLS needs SSL_RESTAPI_CERTIFICATE or SSL_RESTAPI_CERTIFICATE_FILE",
                ));
            }
            Some(tls)
        } else {
            None
        };
        Ok(Ssl { postgres, restapi })
    }
}

fn tls(
    names: &Names,
    certs_dir: &Path,
    files: [&Option<String>; 4],
    contents: [&Option<String>; 4],
) -> Result<Tls, ConfigError> {
    let var = |what: &str, file: bool| {
        format!("{}{what}{}", names.prefix, if file { "_FILE" } else { "" })
    };
    let [cert_file, key_file, ca_file, crl_file] = files;
    let [cert, key, ca, crl] = contents;

    let path = |what: &str,
                value: &Option<String>,
                default: Option<&str>|
     -> Result<Option<PathBuf>, ConfigError> {
        match set(value) {
            Some(raw) if Path::new(raw).is_absolute() => Ok(Some(raw.into())),
            Some(raw) => Err(ConfigError::invalid(
                &var(what, true),
                raw,
                "must be an absolute path",
            )),
            None => Ok(default.map(|d| certs_dir.join(d))),
        }
    };
    let pem = |what: &str, value: &Option<String>| -> Result<Option<String>, ConfigError> {
        match set(value) {
            Some(text) if text.contains("-----BEGIN ") => Ok(Some(text.to_owned())),
            Some(text) => Err(ConfigError::invalid(
                &var(what, false),
                text,
                "not PEM (no -----BEGIN line)",
            )),
            None => Ok(None),
        }
    };

    let cert = pem("CERTIFICATE", cert)?;
    let key = pem("PRIVATE_KEY", key)?;
    match (&cert, &key) {
        (Some(_), None) => {
            return Err(ConfigError::inconsistent(
                &var("CERTIFICATE", false),
                format!("given without {}", var("PRIVATE_KEY", false)),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::inconsistent(
                &var("PRIVATE_KEY", false),
                format!("given without {}", var("CERTIFICATE", false)),
            ));
        }
        _ => {}
    }
    let ca = pem("CA", ca)?;
    let crl = pem("CRL", crl)?;
    Ok(Tls {
        cert_file: path("CERTIFICATE", cert_file, Some(names.cert_default))?.unwrap_or_default(),
        key_file: path("PRIVATE_KEY", key_file, Some(names.key_default))?.unwrap_or_default(),
        ca_file: path("CA", ca_file, ca.as_ref().map(|_| names.ca_default))?,
        crl_file: path("CRL", crl_file, crl.as_ref().map(|_| "server.crl"))?,
        cert,
        key,
        ca,
        crl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn ssl(f: impl FnOnce(&mut Vars)) -> Result<Ssl, ConfigError> {
        let mut vars = Vars::default();
        f(&mut vars);
        Ssl::from_vars(&vars, Path::new("/run/certs"))
    }

    #[test]
    fn defaults_are_under_rw_dir() {
        let s = ssl(|_| {}).unwrap();
        assert_eq!(s.postgres.cert_file, Path::new("/run/certs/server.crt"));
        assert_eq!(s.postgres.key_file, Path::new("/run/certs/server.key"));
        assert_eq!(s.postgres.ca_file, None);
        assert_eq!(s.postgres.cert, None);
        assert_eq!(s.restapi, None);
    }

    #[test]
    fn contents_go_to_the_file_paths() {
        let s = ssl(|v| {
            v.ssl_certificate = Some(CERT.into());
            v.ssl_private_key = Some(KEY.into());
            v.ssl_ca = Some(CERT.into());
            v.ssl_certificate_file = Some("/tls/tls.crt".into());
        })
        .unwrap();
        assert_eq!(s.postgres.cert_file, Path::new("/tls/tls.crt"));
        assert_eq!(s.postgres.cert.as_deref(), Some(CERT));
        assert_eq!(
            s.postgres.ca_file.as_deref(),
            Some(Path::new("/run/certs/ca.crt"))
        );
    }

    #[test]
    fn mounted_files() {
        let s = ssl(|v| {
            v.ssl_certificate_file = Some("/tls/tls.crt".into());
            v.ssl_private_key_file = Some("/tls/tls.key".into());
            v.ssl_ca_file = Some("/tls/ca.crt".into());
        })
        .unwrap();
        assert_eq!(s.postgres.key_file, Path::new("/tls/tls.key"));
        assert_eq!(
            s.postgres.ca_file.as_deref(),
            Some(Path::new("/tls/ca.crt"))
        );
        assert_eq!(s.postgres.cert, None);
    }

    #[test]
    fn certificate_needs_its_key() {
        let err = ssl(|v| v.ssl_certificate = Some(CERT.into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SSL_CERTIFICATE: given without SSL_PRIVATE_KEY"
        );
        let err = ssl(|v| v.ssl_private_key = Some(KEY.into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SSL_PRIVATE_KEY: given without SSL_CERTIFICATE"
        );
    }

    #[test]
    fn contents_must_be_pem_and_keys_stay_secret() {
        let err = ssl(|v| {
            v.ssl_certificate = Some(CERT.into());
            v.ssl_private_key = Some("hunter2".into());
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SSL_PRIVATE_KEY=<redacted>: not PEM (no -----BEGIN line)"
        );
    }

    #[test]
    fn restapi_only_when_given() {
        let s = ssl(|v| {
            v.ssl_restapi_certificate = Some(CERT.into());
            v.ssl_restapi_private_key = Some(KEY.into());
        })
        .unwrap();
        let r = s.restapi.unwrap();
        assert_eq!(r.cert_file, Path::new("/run/certs/rest-api-server.crt"));
        assert_eq!(r.key_file, Path::new("/run/certs/rest-api-server.key"));
        let err = ssl(|v| v.ssl_restapi_ca_file = Some("/tls/ca.crt".into())).unwrap_err();
        assert!(err.to_string().starts_with("SSL_RESTAPI_CERTIFICATE:"));
    }
}
