//! Backups and restores with pgBackRest, from Spilo's variables: which
//! store (S3, GCS, Azure or a mounted directory), where in it (Spilo's
//! `spilo/{prefix}{scope}{suffix}/` naming), the schedule and retention;
//! a restore of another cluster's repository into this new one
//! (`CLONE_METHOD=CLONE_WITH_WALE`, the `CLONE_`-prefixed store); and the
//! source's repository a standby cluster replays (`STANDBY_`-prefixed).

use std::path::{Path, PathBuf};

use super::env::{Env, parse_bool};
use super::error::ConfigError;
use crate::backup::calendar;
use crate::backup::cron::Schedule;

/// This cluster's own backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backup {
    pub(crate) repository: Repository,
    /// pgBackRest's stanza: the cluster's SCOPE.
    pub(crate) stanza: String,
    /// BACKUP_SCHEDULE, checked: five cron fields in UTC.
    pub(crate) schedule: String,
    /// BACKUP_NUM_TO_RETAIN: full backups kept.
    pub(crate) retain_full: u32,
    pub(crate) process_max: u32,
    pub(crate) compress_type: String,
    pub(crate) compress_level: Option<i32>,
    /// WALG_BACKUP_FROM_REPLICA: files are read on a streaming replica,
    /// through its pgBackRest TLS server.
    pub(crate) from_replica: bool,
}

/// A restore from a repository into this new cluster, as its bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restore {
    pub(crate) repository: Repository,
    /// The source cluster's stanza: CLONE_SCOPE.
    pub(crate) stanza: String,
    /// CLONE_TARGET_TIME as pgBackRest and PostgreSQL read it.
    pub(crate) target_time: Option<String>,
    /// CLONE_TARGET_INCLUSIVE (default true, as PostgreSQL's).
    pub(crate) target_inclusive: bool,
    /// CLONE_TARGET_TIMELINE (default `latest`).
    pub(crate) target_timeline: String,
    /// USE_PAUSE_AT_RECOVERY_TARGET: recovery pauses at the target, for
    /// someone to look before promoting, instead of promoting.
    pub(crate) pause_at_target: bool,
}

/// Another cluster's repository this one reads and never writes: a
/// standby cluster's source archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archive {
    pub(crate) repository: Repository,
    /// The source cluster's stanza.
    pub(crate) stanza: String,
}

/// A pgBackRest repository: the store and the path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    pub(crate) store: Store,
    /// `repo1-path`.
    pub(crate) path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Store {
    S3(S3),
    Gcs {
        bucket: String,
        /// A service account's key file; None: the instance's account.
        key_file: Option<PathBuf>,
    },
    Azure {
        account: String,
        container: String,
        key: AzureKey,
    },
    /// A local or mounted directory.
    Posix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3 {
    pub(crate) bucket: String,
    pub(crate) region: String,
    /// No AWS_REGION and no endpoint naming one: us-east-1.
    pub(crate) region_guessed: bool,
    /// Host of an S3-compatible store (None: AWS's own endpoint).
    pub(crate) endpoint: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) path_style: bool,
    pub(crate) credentials: S3Credentials,
    /// Server-side encryption with this KMS key.
    pub(crate) kms_key_id: Option<String>,
    /// The CA that signed the store's certificate.
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum S3Credentials {
    Shared {
        key: String,
        secret: String,
        token: Option<String>,
    },
    /// AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, which pgBackRest
    /// reads from its environment.
    WebIdentity,
    /// The instance profile.
    Instance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AzureKey {
    Shared(String),
    Sas(String),
}

/// The variables that pick a store, in the order they are tried.
const STORES: [&str; 4] = [
    "WAL_S3_BUCKET",
    "WAL_GS_BUCKET",
    "AZURE_STORAGE_ACCOUNT",
    "WAL_LOCAL_PATH",
];

/// The variables of the web identity pgBackRest reads itself.
pub(crate) const WEB_IDENTITY: [&str; 2] = ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"];

/// The compression types and the levels pgBackRest takes for each (it
/// checks them at every command, archive-push's too).
const COMPRESS_TYPES: [(&str, Option<(i32, i32)>); 5] = [
    ("zst", Some((-7, 22))),
    ("lz4", Some((-5, 12))),
    ("gz", Some((-1, 9))),
    ("bz2", Some((1, 9))),
    ("none", None),
];

/// Prefixed variables (`CLONE_` for a restore's source), read as set and
/// not empty.
struct Prefixed<'a> {
    env: &'a Env,
    prefix: &'a str,
}

impl Prefixed<'_> {
    fn name(&self, var: &str) -> String {
        format!("{}{var}", self.prefix)
    }

    fn get(&self, var: &str) -> Option<(String, &str)> {
        let name = self.name(var);
        let value = self.env.get(&name)?;
        Some((name, value))
    }

    /// Set, even to an empty value (the scope prefix and suffix).
    fn raw(&self, var: &str) -> Option<&str> {
        self.env.raw(&self.name(var))
    }
}

impl Backup {
    /// None when no store is configured (archiving stays off).
    pub(crate) fn from_env(
        env: &Env,
        scope: &str,
        namespace: Option<&str>,
        cpus: usize,
    ) -> Result<Option<Self>, ConfigError> {
        let vars = Prefixed { env, prefix: "" };
        // Spilo names a non-default namespace's folders after it.
        let default_prefix = namespace
            .filter(|n| *n != "default")
            .map(|n| format!("{n}-"))
            .unwrap_or_default();
        let Some(repository) = Repository::from_vars(&vars, scope, &default_prefix)? else {
            return Ok(None);
        };
        stanza_name("SCOPE", scope)?;
        let schedule = env.get("BACKUP_SCHEDULE").unwrap_or("0 1 * * *").trim();
        Schedule::parse(schedule)
            .map_err(|reason| ConfigError::invalid("BACKUP_SCHEDULE", schedule, reason))?;
        let retain_full = number(env, "BACKUP_NUM_TO_RETAIN", 1..=9_999_999)?.unwrap_or(5);
        let default_processes = (cpus / 2).clamp(1, 8) as u32;
        let process_max = number(env, "BACKUP_PROCESS_MAX", 1..=999)?.unwrap_or(default_processes);
        let compress_type = env.get("BACKUP_COMPRESS_TYPE").unwrap_or("zst").trim();
        let Some((_, levels)) = COMPRESS_TYPES.iter().find(|(t, _)| *t == compress_type) else {
            let names: Vec<&str> = COMPRESS_TYPES.iter().map(|(t, _)| *t).collect();
            return Err(ConfigError::invalid(
                "BACKUP_COMPRESS_TYPE",
                compress_type,
                format!("expected one of {}", names.join(", ")),
            ));
        };
        let compress_level = compress_level(env, compress_type, *levels)?;
        let from_replica = parse_bool(
            "WALG_BACKUP_FROM_REPLICA",
            &env.get("WALG_BACKUP_FROM_REPLICA").map(str::to_owned),
        )?;
        // The members' certificates for pgBackRest's TLS server derive
        // from the secret they all share (render::backup_tls).
        if from_replica && env.get("PGPASSWORD_STANDBY").is_none() {
            return Err(ConfigError::invalid(
                "WALG_BACKUP_FROM_REPLICA",
                "true",
                "needs PGPASSWORD_STANDBY: the members' pgBackRest certificates derive from it",
            ));
        }
        Ok(Some(Backup {
            repository,
            stanza: scope.to_owned(),
            schedule: schedule.to_owned(),
            retain_full,
            process_max,
            compress_type: compress_type.to_owned(),
            compress_level,
            from_replica,
        }))
    }
}

impl Backup {
    /// AWS's own S3 with no region given: us-east-1 is a guess.
    pub(crate) fn guesses_region(&self) -> bool {
        matches!(&self.repository.store, Store::S3(s3) if s3.region_guessed)
    }
}

impl Restore {
    /// The restore CLONE_METHOD=CLONE_WITH_WALE asks for; None for any
    /// other method (those are not this module's).
    pub(crate) fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        if env.get("CLONE_METHOD") != Some("CLONE_WITH_WALE") {
            return Ok(None);
        }
        let stanza = env.get("CLONE_SCOPE").ok_or_else(|| {
            ConfigError::inconsistent(
                "CLONE_SCOPE",
                "CLONE_METHOD=CLONE_WITH_WALE needs the scope of the cluster to restore",
            )
        })?;
        stanza_name("CLONE_SCOPE", stanza)?;
        let vars = Prefixed {
            env,
            prefix: "CLONE_",
        };
        let repository = Archive::from_vars(&vars)?
            .ok_or_else(|| {
                ConfigError::inconsistent(
                    "CLONE_METHOD",
                    "CLONE_WITH_WALE needs the source's store: CLONE_WAL_S3_BUCKET, CLONE_WAL_GS_BUCKET, CLONE_AZURE_STORAGE_ACCOUNT, CLONE_WAL_LOCAL_PATH or the operator's CLONE_WALE_S3_PREFIX",
                )
            })?
            .repository;
        let target_time = env
            .get("CLONE_TARGET_TIME")
            .map(|t| {
                let (text, unix) = target_time(t.trim())?;
                not_in_the_future(t, unix)?;
                Ok::<_, ConfigError>(text)
            })
            .transpose()?;
        let target_inclusive = match env.get("CLONE_TARGET_INCLUSIVE") {
            None => true,
            value => parse_bool("CLONE_TARGET_INCLUSIVE", &value.map(str::to_owned))?,
        };
        let pause_at_target = match env.get("USE_PAUSE_AT_RECOVERY_TARGET") {
            None => false,
            value => parse_bool("USE_PAUSE_AT_RECOVERY_TARGET", &value.map(str::to_owned))?,
        };
        let target_timeline = env
            .get("CLONE_TARGET_TIMELINE")
            .unwrap_or("latest")
            .trim()
            .to_owned();
        if target_timeline != "latest"
            && target_timeline != "current"
            && target_timeline.parse::<u32>().is_err()
        {
            return Err(ConfigError::invalid(
                "CLONE_TARGET_TIMELINE",
                &target_timeline,
                "expected latest, current or a timeline number",
            ));
        }
        Ok(Some(Restore {
            repository,
            stanza: stanza.to_owned(),
            target_time,
            target_inclusive,
            target_timeline,
            pause_at_target,
        }))
    }
}

impl Repository {
    /// The same repository: the same store and path.
    pub(crate) fn same_place(&self, other: &Repository) -> bool {
        let store = match (&self.store, &other.store) {
            (Store::S3(a), Store::S3(b)) => a.bucket == b.bucket && a.endpoint == b.endpoint,
            (Store::Gcs { bucket: a, .. }, Store::Gcs { bucket: b, .. }) => a == b,
            (
                Store::Azure {
                    account: a,
                    container: c,
                    ..
                },
                Store::Azure {
                    account: b,
                    container: d,
                    ..
                },
            ) => a == b && c == d,
            (Store::Posix, Store::Posix) => true,
            _ => false,
        };
        store && self.path.trim_end_matches('/') == other.path.trim_end_matches('/')
    }
}

impl Archive {
    /// A standby's source archive: the operator's STANDBY_WALE_S3_PREFIX
    /// or STANDBY_WALE_GS_PREFIX (the source's WAL-G path, beside which
    /// its pgBackRest repository is), or Spilo's STANDBY_WAL_S3_BUCKET /
    /// STANDBY_WAL_GS_BUCKET with STANDBY_SCOPE; None when none is set.
    pub(crate) fn standby_from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        Self::from_vars(&Prefixed {
            env,
            prefix: "STANDBY_",
        })
    }

    /// A source's repository from its prefixed variables: a WAL-G path, or
    /// a store with the source's SCOPE.
    fn from_vars(vars: &Prefixed) -> Result<Option<Self>, ConfigError> {
        let scope = vars.get("SCOPE");
        let prefixes: Vec<(String, &str)> = ["WALE_S3_PREFIX", "WALE_GS_PREFIX"]
            .iter()
            .filter_map(|v| vars.get(v))
            .collect();
        match prefixes.as_slice() {
            [] => {}
            [(var, value)] => return wal_prefix(vars, var, value, scope).map(Some),
            [first, second, ..] => {
                return Err(ConfigError::inconsistent(
                    &first.0,
                    format!("{} is set too: one source archive at a time", second.0),
                ));
            }
        }
        let Some((scope_var, scope)) = scope else {
            return match STORES.iter().find_map(|v| vars.get(v)) {
                Some((var, _)) => Err(ConfigError::inconsistent(
                    &var,
                    format!("needs {}SCOPE, the source cluster's name", vars.prefix),
                )),
                None => Ok(None),
            };
        };
        stanza_name(&scope_var, scope)?;
        Ok(
            Repository::from_vars(vars, scope, "")?.map(|repository| Archive {
                repository,
                stanza: scope.to_owned(),
            }),
        )
    }
}

/// The source's repository from its WAL-G path
/// (`s3://BUCKET/spilo/SCOPE[/UID]/wal[/MAJOR]`): the `pgbackrest` folder
/// beside `wal`, the stanza STANDBY_SCOPE or the folder after `spilo/`.
fn wal_prefix(
    vars: &Prefixed,
    var: &str,
    value: &str,
    scope: Option<(String, &str)>,
) -> Result<Archive, ConfigError> {
    let scheme = if var.ends_with("S3_PREFIX") {
        "s3"
    } else {
        "gs"
    };
    let bad = || {
        ConfigError::invalid(
            var,
            value,
            format!(
                "expected {scheme}://BUCKET/spilo/SCOPE[/UID]/wal[/MAJOR], the source's WAL path"
            ),
        )
    };
    let rest = value
        .trim()
        .strip_prefix(&format!("{scheme}://"))
        .ok_or_else(bad)?;
    let (bucket, path) = rest.split_once('/').ok_or_else(bad)?;
    let mut parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if parts
        .last()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        parts.pop();
    }
    if parts.pop() != Some("wal")
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == ".." || p.chars().any(char::is_whitespace))
    {
        return Err(bad());
    }
    let folder = parts
        .iter()
        .position(|p| *p == "spilo")
        .and_then(|at| parts.get(at + 1))
        .ok_or_else(bad)?;
    let (stanza_var, stanza) = match &scope {
        Some((name, scope)) => (name.as_str(), *scope),
        None => (var, *folder),
    };
    stanza_name(stanza_var, stanza)?;
    let store = match scheme {
        "s3" => Store::S3(s3(vars, var, bucket)?),
        _ => gcs(vars, var, bucket)?,
    };
    Ok(Archive {
        repository: Repository {
            store,
            path: format!("/{}/pgbackrest", parts.join("/")),
        },
        stanza: stanza.to_owned(),
    })
}

impl Repository {
    fn from_vars(
        vars: &Prefixed,
        scope: &str,
        default_prefix: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let chosen: Vec<(String, &str)> = STORES.iter().filter_map(|v| vars.get(v)).collect();
        let (var, value) = match chosen.as_slice() {
            [] => return Ok(None),
            [one] => one.clone(),
            [first, second, ..] => {
                return Err(ConfigError::inconsistent(
                    &first.0,
                    format!("{} is set too: one backup store at a time", second.0),
                ));
            }
        };
        let prefix = vars
            .raw("WAL_BUCKET_SCOPE_PREFIX")
            .unwrap_or(default_prefix);
        let suffix = vars.raw("WAL_BUCKET_SCOPE_SUFFIX").unwrap_or("");
        for (name, part) in [
            ("WAL_BUCKET_SCOPE_PREFIX", prefix),
            ("WAL_BUCKET_SCOPE_SUFFIX", suffix),
        ] {
            if part.split('/').any(|p| p == "..") || part.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    &vars.name(name),
                    part,
                    "a path part without spaces or '..'",
                ));
            }
        }
        // Beside WAL-G's `wal/`, never inside it.
        let folder = format!("/spilo/{prefix}{scope}{suffix}/pgbackrest");
        let (store, path) = match var.trim_start_matches(vars.prefix) {
            "WAL_S3_BUCKET" => (Store::S3(s3(vars, &var, value)?), folder),
            "WAL_GS_BUCKET" => (gcs(vars, &var, value)?, folder),
            "AZURE_STORAGE_ACCOUNT" => (azure(vars, value)?, folder),
            _ => {
                let dir = Path::new(value);
                if !dir.is_absolute() || !dir.is_dir() {
                    return Err(ConfigError::invalid(
                        &var,
                        value,
                        "not an absolute path to a directory",
                    ));
                }
                let root = value.trim_end_matches('/');
                (Store::Posix, format!("{root}{folder}"))
            }
        };
        Ok(Some(Repository { store, path }))
    }
}

fn s3(vars: &Prefixed, var: &str, bucket: &str) -> Result<S3, ConfigError> {
    bucket_name(var, bucket)?;
    let endpoint = vars
        .get("AWS_ENDPOINT")
        .or_else(|| vars.get("WALE_S3_ENDPOINT"))
        .map(|(name, value)| endpoint(&name, value))
        .transpose()?;
    let force_path = vars
        .get("AWS_S3_FORCE_PATH_STYLE")
        .map(|(n, v)| (n, v.to_owned()));
    let path_style = match force_path {
        Some((name, value)) => parse_bool(&name, &Some(value))?,
        None => endpoint.as_ref().is_some_and(|e| e.path_style),
    };
    let named = match vars.get("AWS_REGION") {
        Some((_, region)) => Some(region.trim().to_owned()),
        None => endpoint.as_ref().and_then(|e| aws_region(&e.host)),
    };
    let region_guessed = named.is_none() && endpoint.is_none();
    let region = named.unwrap_or_else(|| "us-east-1".to_owned());
    let key = vars.get("AWS_ACCESS_KEY_ID");
    let secret = vars.get("AWS_SECRET_ACCESS_KEY");
    let credentials = match (key, secret) {
        (Some((_, key)), Some((_, secret))) => S3Credentials::Shared {
            key: key.to_owned(),
            secret: secret.to_owned(),
            token: vars.get("AWS_SESSION_TOKEN").map(|(_, t)| t.to_owned()),
        },
        (Some((name, _)), None) | (None, Some((name, _))) => {
            let other = if name.ends_with("AWS_ACCESS_KEY_ID") {
                "AWS_SECRET_ACCESS_KEY"
            } else {
                "AWS_ACCESS_KEY_ID"
            };
            return Err(ConfigError::inconsistent(
                &name,
                format!("given without {}{other}", vars.prefix),
            ));
        }
        (None, None) if WEB_IDENTITY.iter().all(|v| vars.env.get(v).is_some()) => {
            S3Credentials::WebIdentity
        }
        (None, None) => S3Credentials::Instance,
    };
    let kms_key_id = match (vars.get("WALG_S3_SSE"), vars.get("WALG_S3_SSE_KMS_ID")) {
        (_, Some((_, id))) => Some(id.to_owned()),
        (Some((name, "aws:kms")), None) => {
            return Err(ConfigError::inconsistent(
                &name,
                format!("aws:kms needs {}WALG_S3_SSE_KMS_ID", vars.prefix),
            ));
        }
        // AES256 is what S3 does to every object anyway.
        (Some((_, "AES256")), None) | (None, None) => None,
        (Some((name, sse)), None) => {
            return Err(ConfigError::invalid(
                &name,
                sse,
                "expected AES256 or aws:kms",
            ));
        }
    };
    let ca_file = vars
        .get("WALG_S3_CA_CERT_FILE")
        .map(|(name, path)| existing_file(&name, path))
        .transpose()?;
    Ok(S3 {
        bucket: bucket.to_owned(),
        region,
        region_guessed,
        port: endpoint.as_ref().and_then(|e| e.port),
        endpoint: endpoint.map(|e| e.host),
        path_style,
        credentials,
        kms_key_id,
        ca_file,
    })
}

fn gcs(vars: &Prefixed, var: &str, bucket: &str) -> Result<Store, ConfigError> {
    bucket_name(var, bucket)?;
    let key_file = vars
        .get("GOOGLE_APPLICATION_CREDENTIALS")
        .map(|(name, path)| existing_file(&name, path))
        .transpose()?;
    Ok(Store::Gcs {
        bucket: bucket.to_owned(),
        key_file,
    })
}

fn azure(vars: &Prefixed, account: &str) -> Result<Store, ConfigError> {
    let container = vars
        .get("WALG_AZ_PREFIX")
        .and_then(|(_, p)| p.strip_prefix("azure://"))
        .and_then(|rest| rest.split('/').next())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ConfigError::inconsistent(
                &vars.name("WALG_AZ_PREFIX"),
                format!(
                    "{}AZURE_STORAGE_ACCOUNT needs the container as azure://CONTAINER",
                    vars.prefix
                ),
            )
        })?;
    let key = match (
        vars.get("AZURE_STORAGE_ACCESS_KEY"),
        vars.get("AZURE_STORAGE_SAS_TOKEN"),
    ) {
        (Some((_, key)), _) => AzureKey::Shared(key.to_owned()),
        (None, Some((_, sas))) => AzureKey::Sas(sas.trim_start_matches('?').to_owned()),
        (None, None) => {
            return Err(ConfigError::inconsistent(
                &vars.name("AZURE_STORAGE_ACCOUNT"),
                format!(
                    "needs {p}AZURE_STORAGE_ACCESS_KEY or {p}AZURE_STORAGE_SAS_TOKEN",
                    p = vars.prefix
                ),
            ));
        }
    };
    Ok(Store::Azure {
        account: account.to_owned(),
        container: container.to_owned(),
        key,
    })
}

/// A scope that is also a stanza: the name of an INI section and a folder
/// in the repository.
fn stanza_name(var: &str, scope: &str) -> Result<(), ConfigError> {
    let ok = scope
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !scope.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            var,
            scope,
            "with backups, a cluster name of letters, digits, '.', '_' and '-' (pgBackRest's stanza)",
        ))
    }
}

/// S3's and GCS's rules for bucket names (the common part): 3 to 63
/// lower-case letters, digits, dots and hyphens (GCS: underscores too),
/// starting and ending with a letter or digit.
fn bucket_name(var: &str, name: &str) -> Result<(), ConfigError> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            var,
            name,
            "not a bucket name (3-63 lower-case letters, digits, dots and hyphens)",
        ))
    }
}

struct Endpoint {
    host: String,
    port: Option<u16>,
    path_style: bool,
}

/// AWS_ENDPOINT (`https://host[:port]`) or WAL-E's WALE_S3_ENDPOINT
/// (`https+path://host:port`).
fn endpoint(var: &str, value: &str) -> Result<Endpoint, ConfigError> {
    let bad = |reason: &str| ConfigError::invalid(var, value, reason);
    let (scheme, rest) = value.trim().split_once("://").unwrap_or(("https", value));
    // Spilo's convention: a store of one's own is addressed by path
    // unless the endpoint says `+virtualhost`.
    let path_style = match scheme {
        "https+virtualhost" => false,
        "https" | "https+path" => true,
        "http" | "http+path" | "http+virtualhost" => {
            return Err(bad("pgBackRest reaches S3 over HTTPS only"));
        }
        _ => return Err(bad("expected https://HOST[:PORT]")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad("expected https://HOST[:PORT] without a path"));
    }
    // An IPv6 address is bracketed; a port follows the bracket.
    let port_at = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].rfind(':').map(|i| i + bracket),
        None => authority.rfind(':'),
    };
    let (host, port) = match port_at.map(|i| (&authority[..i], &authority[i + 1..])) {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port is not a TCP port number"))?;
            (host, Some(port))
        }
        _ => (authority, None),
    };
    Ok(Endpoint {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path_style,
    })
}

/// The region in AWS's own endpoint names (`s3.eu-central-1.amazonaws.com`,
/// `s3-eu-west-1.amazonaws.com`).
fn aws_region(host: &str) -> Option<String> {
    let name = host.strip_suffix(".amazonaws.com")?;
    let region = name
        .strip_prefix("s3.")
        .or_else(|| name.strip_prefix("s3-"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

fn existing_file(var: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ConfigError::invalid(
            var,
            &path.display().to_string(),
            "no such file",
        ))
    }
}

/// BACKUP_COMPRESS_LEVEL, within what the type takes.
fn compress_level(
    env: &Env,
    compress_type: &str,
    levels: Option<(i32, i32)>,
) -> Result<Option<i32>, ConfigError> {
    const VAR: &str = "BACKUP_COMPRESS_LEVEL";
    let Some(raw) = env.get(VAR) else {
        return Ok(None);
    };
    let Some((low, high)) = levels else {
        return Err(ConfigError::invalid(
            VAR,
            raw,
            format!("BACKUP_COMPRESS_TYPE={compress_type} takes no level"),
        ));
    };
    match raw.trim().parse::<i32>() {
        Ok(level) if (low..=high).contains(&level) => Ok(Some(level)),
        _ => Err(ConfigError::invalid(
            VAR,
            raw,
            format!("{compress_type} takes a level from {low} to {high}"),
        )),
    }
}

fn number(
    env: &Env,
    var: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(None);
    };
    match raw.trim().parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::invalid(
            var,
            raw,
            format!(
                "expected a number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A timestamp with a time zone, as pgBackRest's `--target` takes it
/// (PostgreSQL reads the same): `YYYY-MM-DD HH:MM:SS[.frac]` and an
/// offset (`+HH`, `+HH:MM`, `+HHMM`) or `Z`; a `T` between date and time
/// is accepted. Also its unix time.
fn target_time(value: &str) -> Result<(String, i64), ConfigError> {
    let bad = || {
        ConfigError::invalid(
            "CLONE_TARGET_TIME",
            value,
            "expected a timestamp with time zone, e.g. 2026-12-01 10:00:00+00",
        )
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let (date, rest) = value
        .split_once([' ', 'T'])
        .filter(|(d, _)| d.len() == 10)
        .ok_or_else(bad)?;
    let date_ok = matches!(date.split('-').collect::<Vec<_>>().as_slice(),
        [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2));
    let (clock, zone) = match rest.strip_suffix(['Z', 'z']) {
        Some(clock) => (clock, "+00".to_owned()),
        None => {
            let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
            (&rest[..at], rest[at..].to_owned())
        }
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let clock_ok = matches!(whole.split(':').collect::<Vec<_>>().as_slice(),
        [h, m, s] if digits(h, 2) && digits(m, 2) && digits(s, 2))
        && (1..=6).contains(&fraction.len())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    let offset = zone[1..].replace(':', "");
    let number = |s: &str| s.parse::<i64>().unwrap_or(0);
    // Offsets from -12 to +14 hours, as pgBackRest reads them.
    let hours = offset.get(..2).and_then(|h| h.parse::<i32>().ok());
    let zone_ok = (digits(&offset, 2) || digits(&offset, 4))
        && hours.is_some_and(|h| {
            if zone.starts_with('-') {
                h <= 12
            } else {
                h <= 14
            }
        });
    if !(date_ok && clock_ok && zone_ok) {
        return Err(bad());
    }
    let field = |s: &str, at: std::ops::Range<usize>| s.get(at).map_or(0, number);
    let days = calendar::days_from_civil(calendar::Date {
        year: field(date, 0..4),
        month: field(date, 5..7) as u32,
        day: field(date, 8..10) as u32,
    });
    let offset_seconds = (field(&offset, 0..2) * 3600 + field(&offset, 2..4) * 60)
        * if zone.starts_with('-') { -1 } else { 1 };
    let unix = days * calendar::SECONDS_PER_DAY
        + field(whole, 0..2) * 3600
        + field(whole, 3..5) * 60
        + field(whole, 6..8)
        - offset_seconds;
    Ok((format!("{date} {clock}{}{offset}", &zone[..1]), unix))
}

/// A target in the future cannot be reached: recovery would replay all
/// WAL there is and fail.
fn not_in_the_future(value: &str, unix: i64) -> Result<(), ConfigError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if unix > now {
        return Err(ConfigError::invalid(
            "CLONE_TARGET_TIME",
            value,
            format!(
                "is in the future (now is {} UTC): leave it unset to restore the newest state",
                calendar::format_utc(now)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    fn backup(pairs: &[(&str, &str)]) -> Result<Option<Backup>, ConfigError> {
        Backup::from_env(&env(pairs), "acid-test", None, 4)
    }

    #[test]
    fn backups_from_a_replica_need_the_replication_password() {
        let store = ("WAL_LOCAL_PATH", "/tmp");
        let b = backup(&[store]).unwrap().unwrap();
        assert!(!b.from_replica);
        let on = ("WALG_BACKUP_FROM_REPLICA", "true");
        let b = backup(&[store, on, ("PGPASSWORD_STANDBY", "s")])
            .unwrap()
            .unwrap();
        assert!(b.from_replica);
        assert_eq!(
            backup(&[store, on]).unwrap_err().to_string(),
            "WALG_BACKUP_FROM_REPLICA=true: needs PGPASSWORD_STANDBY: the members' \
             pgBackRest certificates derive from it"
        );
        let err = backup(&[store, ("WALG_BACKUP_FROM_REPLICA", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("WALG_BACKUP_FROM_REPLICA=sometimes: not a boolean"),
            "{err}"
        );
    }

    #[test]
    fn no_store_no_backups() {
        assert_eq!(backup(&[("BACKUP_SCHEDULE", "x")]).unwrap(), None);
    }

    #[test]
    fn s3_from_the_operators_variables() {
        let b = backup(&[
            ("WAL_S3_BUCKET", "my-wal-bucket"),
            ("WAL_BUCKET_SCOPE_PREFIX", ""),
            ("WAL_BUCKET_SCOPE_SUFFIX", "/3f1c"),
            ("AWS_REGION", "eu-central-1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(b.repository.path, "/spilo/acid-test/3f1c/pgbackrest");
        assert_eq!(b.stanza, "acid-test");
        assert_eq!((b.retain_full, b.process_max), (5, 2));
        assert_eq!(b.schedule, "0 1 * * *");
        let Store::S3(s3) = b.repository.store else {
            panic!("not S3");
        };
        assert_eq!(s3.region, "eu-central-1");
        assert_eq!(s3.credentials, S3Credentials::Instance);
        assert_eq!((s3.endpoint, s3.port, s3.path_style), (None, None, false));
    }

    #[test]
    fn a_namespace_prefixes_the_folder_unless_the_prefix_is_set() {
        let e = env(&[("WAL_S3_BUCKET", "bucket")]);
        let b = Backup::from_env(&e, "c", Some("team"), 1).unwrap().unwrap();
        assert_eq!(b.repository.path, "/spilo/team-c/pgbackrest");
        let e = env(&[("WAL_S3_BUCKET", "bucket"), ("WAL_BUCKET_SCOPE_PREFIX", "")]);
        let b = Backup::from_env(&e, "c", Some("team"), 1).unwrap().unwrap();
        assert_eq!(b.repository.path, "/spilo/c/pgbackrest");
    }

    #[test]
    fn s3_compatible_endpoints() {
        let b = backup(&[
            ("WAL_S3_BUCKET", "b-1"),
            ("AWS_ENDPOINT", "https://127.0.0.5:9000/"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ])
        .unwrap()
        .unwrap();
        let Store::S3(s3) = b.repository.store else {
            panic!("not S3");
        };
        assert_eq!(s3.endpoint.as_deref(), Some("127.0.0.5"));
        assert_eq!((s3.port, s3.path_style), (Some(9000), true));
        assert_eq!(s3.region, "us-east-1");
        assert!(matches!(s3.credentials, S3Credentials::Shared { .. }));
        let b = backup(&[
            ("WAL_S3_BUCKET", "b-1"),
            (
                "WALE_S3_ENDPOINT",
                "https+path://s3.eu-west-1.amazonaws.com:443",
            ),
        ])
        .unwrap()
        .unwrap();
        let Store::S3(s3) = b.repository.store else {
            panic!("not S3");
        };
        assert_eq!((s3.region.as_str(), s3.path_style), ("eu-west-1", true));
        let b = backup(&[
            ("WAL_S3_BUCKET", "b-1"),
            ("AWS_ENDPOINT", "https://[fd00::5]"),
        ])
        .unwrap()
        .unwrap();
        let Store::S3(s3) = b.repository.store else {
            panic!("not S3");
        };
        assert_eq!((s3.endpoint.as_deref(), s3.port), (Some("fd00::5"), None));
        assert!(
            s3.path_style,
            "an endpoint of one's own is addressed by path"
        );
        assert!(!s3.region_guessed);
        let b = backup(&[
            ("WAL_S3_BUCKET", "b-1"),
            ("AWS_ENDPOINT", "https+virtualhost://[fd00::5]:9000"),
        ])
        .unwrap()
        .unwrap();
        let Store::S3(s3) = b.repository.store else {
            panic!("not S3");
        };
        assert_eq!(
            (s3.endpoint.as_deref(), s3.port, s3.path_style),
            (Some("fd00::5"), Some(9000), false)
        );
    }

    #[test]
    fn a_scope_with_backups_is_a_stanza_name() {
        let e = env(&[("WAL_S3_BUCKET", "b-1")]);
        let err = Backup::from_env(&e, "a[b]", None, 1)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SCOPE=a[b]: with backups"), "{err}");
        let e = env(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "../x"),
            ("CLONE_WAL_S3_BUCKET", "b-1"),
        ]);
        let err = Restore::from_env(&e).unwrap_err().to_string();
        assert!(err.starts_with("CLONE_SCOPE=../x: with backups"), "{err}");
    }

    #[test]
    fn bad_store_input_names_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("WAL_S3_BUCKET", "No_Such")],
                "WAL_S3_BUCKET=No_Such: not a bucket name",
            ),
            (
                &[("WAL_S3_BUCKET", "ab")],
                "WAL_S3_BUCKET=ab: not a bucket name",
            ),
            (
                &[
                    ("WAL_S3_BUCKET", "b-1"),
                    ("AWS_ENDPOINT", "http://minio:9000"),
                ],
                "AWS_ENDPOINT=http://minio:9000: pgBackRest reaches S3 over HTTPS only",
            ),
            (
                &[("WAL_S3_BUCKET", "b-1"), ("AWS_ACCESS_KEY_ID", "id")],
                "AWS_ACCESS_KEY_ID: given without AWS_SECRET_ACCESS_KEY",
            ),
            (
                &[("WAL_S3_BUCKET", "b-1"), ("WAL_GS_BUCKET", "g-1")],
                "WAL_S3_BUCKET: WAL_GS_BUCKET is set too",
            ),
            (
                &[("WAL_S3_BUCKET", "b-1"), ("WALG_S3_SSE", "aws:kms")],
                "WALG_S3_SSE: aws:kms needs WALG_S3_SSE_KMS_ID",
            ),
            (
                &[
                    ("WAL_S3_BUCKET", "b-1"),
                    ("WALG_S3_CA_CERT_FILE", "/no/ca.pem"),
                ],
                "WALG_S3_CA_CERT_FILE=/no/ca.pem: no such file",
            ),
            (
                &[
                    ("AZURE_STORAGE_ACCOUNT", "acct"),
                    ("WALG_AZ_PREFIX", "azure://c"),
                ],
                "AZURE_STORAGE_ACCOUNT: needs AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN",
            ),
            (
                &[("WAL_LOCAL_PATH", "relative/dir")],
                "WAL_LOCAL_PATH=relative/dir: not an absolute path",
            ),
            (
                &[("WAL_S3_BUCKET", "b-1"), ("BACKUP_NUM_TO_RETAIN", "0")],
                "BACKUP_NUM_TO_RETAIN=0: expected a number",
            ),
            (
                &[("WAL_S3_BUCKET", "b-1"), ("BACKUP_SCHEDULE", "61 * * * *")],
                "BACKUP_SCHEDULE=61 * * * *: ",
            ),
            (
                &[
                    ("WAL_S3_BUCKET", "b-1"),
                    ("BACKUP_COMPRESS_TYPE", "gz"),
                    ("BACKUP_COMPRESS_LEVEL", "15"),
                ],
                "BACKUP_COMPRESS_LEVEL=15: gz takes a level from -1 to 9",
            ),
            (
                &[
                    ("WAL_S3_BUCKET", "b-1"),
                    ("BACKUP_COMPRESS_TYPE", "none"),
                    ("BACKUP_COMPRESS_LEVEL", "1"),
                ],
                "BACKUP_COMPRESS_LEVEL=1: BACKUP_COMPRESS_TYPE=none takes no level",
            ),
        ];
        for (pairs, expected) in cases {
            let err = backup(pairs).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err} (expected {expected})");
        }
    }

    #[test]
    fn gcs_azure_and_posix() {
        let b = backup(&[("WAL_GS_BUCKET", "gs-bucket")]).unwrap().unwrap();
        assert_eq!(
            b.repository.store,
            Store::Gcs {
                bucket: "gs-bucket".into(),
                key_file: None
            }
        );
        let b = backup(&[
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=x"),
            ("WALG_AZ_PREFIX", "azure://backups/spilo/x"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            b.repository.store,
            Store::Azure {
                account: "acct".into(),
                container: "backups".into(),
                key: AzureKey::Sas("sv=1&sig=x".into())
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let b = backup(&[("WAL_LOCAL_PATH", root)]).unwrap().unwrap();
        assert_eq!(b.repository.store, Store::Posix);
        assert_eq!(
            b.repository.path,
            format!("{root}/spilo/acid-test/pgbackrest")
        );
    }

    #[test]
    fn a_restore_reads_the_clone_variables() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let e = env(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "old"),
            ("CLONE_WAL_LOCAL_PATH", root),
            ("CLONE_TARGET_TIME", "2026-12-01T10:11:12.5+01:00"),
            ("WAL_S3_BUCKET", "ignored-for-the-source"),
        ]);
        let r = Restore::from_env(&e).unwrap().unwrap();
        assert_eq!(r.stanza, "old");
        assert_eq!(r.repository.path, format!("{root}/spilo/old/pgbackrest"));
        assert_eq!(r.target_time.as_deref(), Some("2026-12-01 10:11:12.5+0100"));
        assert!(r.target_inclusive);
        assert_eq!(r.target_timeline, "latest");
        let no_store = env(&[("CLONE_METHOD", "CLONE_WITH_WALE"), ("CLONE_SCOPE", "old")]);
        assert!(
            Restore::from_env(&no_store)
                .unwrap_err()
                .to_string()
                .starts_with("CLONE_METHOD: CLONE_WITH_WALE needs the source's store")
        );
        let other = env(&[("CLONE_METHOD", "CLONE_WITH_BASEBACKUP")]);
        assert_eq!(Restore::from_env(&other).unwrap(), None);
        // The operator's clone from spec.clone.s3_wal_path.
        let operator = env(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "acid-old"),
            (
                "CLONE_WALE_S3_PREFIX",
                "s3://backups/spilo/acid-old/9b1e/wal/15",
            ),
            ("CLONE_WAL_BUCKET_SCOPE_PREFIX", ""),
            ("CLONE_TARGET_TIME", ""),
            ("CLONE_AWS_ENDPOINT", "https://minio.storage:9000"),
        ]);
        let r = Restore::from_env(&operator).unwrap().unwrap();
        assert_eq!(r.stanza, "acid-old");
        assert_eq!(r.repository.path, "/spilo/acid-old/9b1e/pgbackrest");
        assert_eq!(r.target_time, None);
        assert!(matches!(
            &r.repository.store,
            Store::S3(s3) if s3.bucket == "backups" && s3.endpoint.as_deref() == Some("minio.storage")
        ));
    }

    #[test]
    fn target_times() {
        for (given, read) in [
            ("2026-12-01 10:11:12+00", "2026-12-01 10:11:12+00"),
            (
                "2026-12-01 10:11:12.123456Z",
                "2026-12-01 10:11:12.123456+00",
            ),
            ("2026-12-01T10:11:12-0530", "2026-12-01 10:11:12-0530"),
        ] {
            assert_eq!(target_time(given).unwrap().0, read, "{given}");
        }
        for bad in [
            "2026-12-01 10:11:12",
            "yesterday",
            "2026-12-01 10:11+00",
            "2026-12-01 10:11:12+0",
            "2026-12-01 10:11:12.1234567+00",
            "2026-12-01 10:11:12+15",
        ] {
            let err = target_time(bad).unwrap_err().to_string();
            assert!(err.starts_with("CLONE_TARGET_TIME="), "{err}");
        }
        assert_eq!(target_time("1970-01-02 00:00:00+00").unwrap().1, 86_400);
        assert_eq!(
            target_time("2026-12-02T09:56:52.5-05:30").unwrap().1,
            1_796_205_412 + 5 * 3600 + 1800
        );
        assert_eq!(
            target_time("2026-12-02 09:56:52Z").unwrap().1,
            1_796_205_412
        );
    }

    #[test]
    fn a_target_in_the_future_is_refused() {
        let clone = |time: &str| {
            Restore::from_env(&env(&[
                ("CLONE_METHOD", "CLONE_WITH_WALE"),
                ("CLONE_SCOPE", "acid-source"),
                ("CLONE_WAL_S3_BUCKET", "bucket"),
                ("CLONE_TARGET_TIME", time),
            ]))
        };
        let err = clone("2999-01-01 00:00:00+00").unwrap_err().to_string();
        assert!(
            err.starts_with("CLONE_TARGET_TIME=") && err.contains("is in the future"),
            "{err}"
        );
        assert!(clone("2020-01-01 00:00:00+00").is_ok());
    }
}
