//! The HTTPS GET to the tokeninfo endpoint.
//!
//! A blocking `ureq` agent over `rustls` (ring), verified against the system
//! CA store (or the one `SSL_CERT_FILE`/`SSL_CERT_DIR` name) or a
//! `cafile=`. No async runtime, no extra threads (ureq spawns a
//! short-lived thread only to bound a DNS lookup by the connect timeout).
//! Agents are cached per (cafile, timeouts) for [`AGENT_TTL`], so a
//! long-lived process (pgbouncer) reuses parsed roots and keep-alive
//! connections, and still picks up CA changes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::Config;

/// How long a cached agent (its roots and idle connections) is reused.
pub const AGENT_TTL: Duration = Duration::from_secs(300);
/// Largest CA file read.
const MAX_CAFILE: u64 = 4 * 1024 * 1024;
/// Cap on distinct cached agents (distinct module configurations).
const MAX_AGENTS: usize = 16;

/// Errors talking to the tokeninfo endpoint. Messages never contain the
/// request URL (it carries the token) nor the answer body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read cafile {path}: {source}")]
    CaFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cafile {0} is larger than 4 MiB")]
    CaFileTooLarge(PathBuf),
    #[error("cafile {0} holds no usable PEM certificate")]
    CaFileEmpty(PathBuf),
    #[error("no CA certificates found in the system store")]
    NoSystemRoots,
    #[error("no CA certificates found in SSL_CERT_FILE or SSL_CERT_DIR")]
    NoEnvRoots,
    #[error("tokeninfo answered HTTP {0}")]
    Status(u16),
    #[error("tokeninfo answer is larger than {0} bytes")]
    TooLarge(u64),
    #[error("request timed out ({0})")]
    Timeout(String),
    #[error("cannot resolve the tokeninfo host")]
    HostNotFound,
    #[error("cannot connect to the tokeninfo host")]
    ConnectionFailed,
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("HTTP error: {0}")]
    Http(String),
}

impl FetchError {
    /// Whether this is a local setup problem rather than the endpoint's.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            FetchError::CaFileRead { .. }
                | FetchError::CaFileTooLarge(_)
                | FetchError::CaFileEmpty(_)
                | FetchError::NoSystemRoots
                | FetchError::NoEnvRoots
        )
    }
}

/// Everything an agent depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AgentKey {
    cafile: Option<PathBuf>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl AgentKey {
    fn of(config: &Config) -> AgentKey {
        AgentKey {
            cafile: config.cafile.clone(),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
        }
    }
}

struct Cached {
    agent: Agent,
    born: Instant,
}

/// The agents, and the process they were made in.
struct Cache {
    pid: u32,
    agents: HashMap<AgentKey, Cached>,
}

/// The locked cache. After a fork the child must not touch the parent's
/// kept-alive TLS connections (closing one would write a close_notify into
/// the parent's session), so a child forgets the inherited agents unread.
fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut guard = CACHE
        .get_or_init(|| {
            Mutex::new(Cache {
                pid: std::process::id(),
                agents: HashMap::new(),
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if guard.pid != pid {
        std::mem::forget(std::mem::take(&mut guard.agents));
        guard.pid = pid;
    }
    guard
}

/// A cached agent for `config`, building one if needed.
pub fn shared_agent(config: &Config) -> Result<Agent, FetchError> {
    let key = AgentKey::of(config);
    {
        let map = &cache().agents;
        if let Some(c) = map.get(&key) {
            if c.born.elapsed() < AGENT_TTL {
                return Ok(c.agent.clone());
            }
        }
    }
    // Built outside the lock: reading the CA store takes up to a millisecond.
    let agent = new_agent(config)?;
    let mut guard = cache();
    let map = &mut guard.agents;
    map.retain(|_, c| c.born.elapsed() < AGENT_TTL);
    if map.len() >= MAX_AGENTS {
        map.clear();
    }
    map.insert(
        key,
        Cached {
            agent: agent.clone(),
            born: Instant::now(),
        },
    );
    Ok(agent)
}

/// Drop all cached agents (tests and benchmarks use this to measure cold
/// starts).
pub fn clear_agent_cache() {
    cache().agents.clear();
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The trusted roots: the cafile's certificates, or the system store.
pub fn root_certs(cafile: Option<&Path>) -> Result<Vec<Certificate<'static>>, FetchError> {
    match cafile {
        Some(path) => load_cafile(path),
        None => system_roots(),
    }
}

/// The system CA store, found as OpenSSL-style tools find it:
///
/// * If `SSL_CERT_FILE` or `SSL_CERT_DIR` names an existing file or
///   directory, those are the store, as rustls-native-certs has it: the
///   file's certificates plus those of every file in each directory of
///   `SSL_CERT_DIR` (a `:`-separated list), and nothing else. A name that
///   does not exist is ignored, as openssl-probe ignores it.
/// * Otherwise the distribution's bundle file that openssl-probe finds
///   (e.g. Debian's /etc/ssl/certs/ca-certificates.crt) is read alone. It
///   holds the same certificates as the hashed directory beside it, and
///   reading one file instead of ~300 cuts a fresh backend's start-up from
///   ~3 ms to a fraction of a millisecond.
/// * Without a usable bundle file, rustls-native-certs loads the store its
///   usual way (the hashed directories).
fn system_roots() -> Result<Vec<Certificate<'static>>, FetchError> {
    let from_env = env_store(
        std::env::var_os(ENV_CERT_FILE).as_deref(),
        std::env::var_os(ENV_CERT_DIR).as_deref(),
    );
    if let Some((file, dirs)) = from_env {
        return env_roots(file.as_deref(), &dirs);
    }
    if let Some(bundle) = openssl_probe::probe().cert_file {
        if let Ok(certs) = load_cafile(&bundle) {
            return Ok(certs);
        }
    }
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<_> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(FetchError::NoSystemRoots);
    }
    Ok(certs)
}

/// The variables that name a CA bundle file and CA directories.
const ENV_CERT_FILE: &str = "SSL_CERT_FILE";
const ENV_CERT_DIR: &str = "SSL_CERT_DIR";

/// The existing file and directories that `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` (given as `file` and `dir`) name, or `None` when they
/// name nothing that exists.
fn env_store(file: Option<&OsStr>, dir: Option<&OsStr>) -> Option<(Option<PathBuf>, Vec<PathBuf>)> {
    let file = file
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .filter(|f| f.exists());
    let dirs: Vec<PathBuf> = dir
        .map(|d| std::env::split_paths(d).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    (file.is_some() || !dirs.is_empty()).then_some((file, dirs))
}

/// The certificates of `file` and of every regular file (symlinks
/// followed, each file read once) in `dirs`, without duplicates. A file
/// that cannot be read or holds no certificate is skipped, so a hashed
/// directory's CRLs and stray files do no harm.
fn env_roots(
    file: Option<&Path>,
    dirs: &[PathBuf],
) -> Result<Vec<Certificate<'static>>, FetchError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = std::collections::HashSet::new();
    let mut certs = Vec::new();
    let files = file.map(Path::to_path_buf).into_iter().chain(
        dirs.iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path())),
    );
    for path in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            certs.extend(load_cafile(&path).unwrap_or_default());
        }
    }
    certs.sort_unstable_by(|a, b| a.der().cmp(b.der()));
    certs.dedup_by(|a, b| a.der() == b.der());
    if certs.is_empty() {
        return Err(FetchError::NoEnvRoots);
    }
    Ok(certs)
}

fn load_cafile(path: &Path) -> Result<Vec<Certificate<'static>>, FetchError> {
    let read_err = |source| FetchError::CaFileRead {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut pem = Vec::new();
    file.take(MAX_CAFILE + 1)
        .read_to_end(&mut pem)
        .map_err(read_err)?;
    if pem.len() as u64 > MAX_CAFILE {
        return Err(FetchError::CaFileTooLarge(path.to_owned()));
    }
    let certs = pem_certificates(&pem);
    if certs.is_empty() {
        return Err(FetchError::CaFileEmpty(path.to_owned()));
    }
    Ok(certs)
}

/// The certificates of PEM text: every `BEGIN CERTIFICATE` block whose
/// body is valid base64; anything else is skipped. (A plain, fast base64
/// decoder: rustls-pki-types' constant-time one takes ~0.5 ms for a system
/// bundle, and CA certificates are public.)
pub fn pem_certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    use base64::Engine as _;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut b64 = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = find(body, END) else { break };
        b64.clear();
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', &body[..end]).chain(std::iter::once(end)) {
            b64.extend_from_slice(body[line_start..nl].trim_ascii());
            line_start = (nl + 1).min(end);
        }
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&b64) {
            out.push(Certificate::from_der(&der).to_owned());
        }
        rest = &body[end + END.len()..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// A fresh agent for `config` (roots loaded now).
pub fn new_agent(config: &Config) -> Result<Agent, FetchError> {
    let roots = root_certs(config.cafile.as_deref())?;
    Ok(agent_with_roots(config, roots))
}

/// How long an agent reuses a host name lookup (like its idle connections).
pub const DNS_REUSE: Duration = Duration::from_secs(30);

/// ureq's resolver, minus two costs: an IP-literal host is not looked up at
/// all, and a host name's addresses are reused for [`DNS_REUSE`]. ureq's
/// own resolver bounds a lookup by the connect timeout by running it on a
/// new thread for every request; under CPU load that thread costs up to
/// ~1 ms, so a warm agent (pgbouncer) skips it. A fresh process still does
/// one bounded lookup per login.
///
/// Uses ureq's "unversioned" resolver API (not covered by semver), hence
/// the `~3.5` requirement in Cargo.toml.
#[derive(Debug, Default)]
struct Resolver {
    inner: DefaultResolver,
    last: Mutex<Option<(String, ResolvedSocketAddrs, Instant)>>,
}

impl ureq::unversioned::resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let default_port = if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((k, addrs, at)) = last.as_ref() {
                if *k == key && at.elapsed() < DNS_REUSE {
                    return Ok(addrs.clone());
                }
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((key, addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

/// A fresh agent trusting exactly `roots`, with the module's HTTP settings.
pub fn agent_with_roots(config: &Config, roots: Vec<Certificate<'static>>) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(crypto_provider())
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    let http = Agent::config_builder()
        .tls_config(tls)
        .https_only(true)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(config.timeout))
        .timeout_resolve(Some(config.connect_timeout))
        .timeout_connect(Some(config.connect_timeout))
        .max_idle_connections(8)
        .max_idle_connections_per_host(4)
        .max_idle_age(Duration::from_secs(30))
        .user_agent(concat!("spilo-pam-oauth2/", env!("CARGO_PKG_VERSION")))
        .accept("application/json")
        .build();
    Agent::with_parts(http, DefaultConnector::default(), Resolver::default())
}

/// GET `url` (which already carries the token) and return the body of a
/// 2xx answer, at most `max_body` bytes.
pub fn fetch(agent: &Agent, url: &str, max_body: u64) -> Result<Vec<u8>, FetchError> {
    let mut response = agent.get(url).call().map_err(classify)?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status));
    }
    response
        .body_mut()
        .with_config()
        .limit(max_body)
        .read_to_vec()
        .map_err(classify)
}

/// Map a ureq error to a message that is safe to log: variants that carry
/// the URL are reduced to their kind.
fn classify(e: ureq::Error) -> FetchError {
    use ureq::Error as E;
    match e {
        E::StatusCode(c) => FetchError::Status(c),
        E::BodyExceedsLimit(n) => FetchError::TooLarge(n),
        E::Timeout(t) => FetchError::Timeout(t.to_string()),
        E::HostNotFound => FetchError::HostNotFound,
        E::ConnectionFailed => FetchError::ConnectionFailed,
        E::Rustls(e) => FetchError::Tls(e.to_string()),
        E::Tls(s) => FetchError::Tls(s.to_owned()),
        E::Pem(_) => FetchError::Tls("bad PEM".to_owned()),
        E::Io(e) => io_error(&e),
        E::RequireHttpsOnly(_) => FetchError::Http("only https URLs are allowed".to_owned()),
        E::BadUri(_) => FetchError::Http("invalid URL".to_owned()),
        E::Http(_) => FetchError::Http("invalid request".to_owned()),
        E::Protocol(p) => FetchError::Http(format!("protocol error: {p}")),
        E::LargeResponseHeader(..) => FetchError::Http("response header too large".to_owned()),
        E::TooManyRedirects | E::RedirectFailed => {
            FetchError::Http("redirects are not followed".to_owned())
        }
        _ => FetchError::Http("request failed".to_owned()),
    }
}

/// An I/O error: rustls errors wrapped in io::Error are unwrapped so
/// certificate problems read as such.
fn io_error(e: &std::io::Error) -> FetchError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return FetchError::Tls(tls.to_string());
    }
    FetchError::Io(e.to_string())
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn encodes_reserved() {
        assert_eq!(url_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(url_encode("a+b/c=d&e f"), "a%2Bb%2Fc%3Dd%26e%20f");
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(url_encode(""), "");
    }

    /// The reference parser: rustls-pki-types via ureq.
    fn reference(pem: &[u8]) -> Vec<Vec<u8>> {
        ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.der().to_vec()),
                _ => None,
            })
            .collect()
    }

    fn ders(certs: &[Certificate<'static>]) -> Vec<Vec<u8>> {
        certs.iter().map(|c| c.der().to_vec()).collect()
    }

    #[test]
    fn pem_parsing_matches_reference() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let one = cert.pem();
        let crlf = one.replace('\n', "\r\n");
        let mixed = format!(
            "junk\n{one}# comment\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{crlf}"
        );
        for text in [one.as_str(), crlf.as_str(), mixed.as_str()] {
            let got = ders(&pem_certificates(text.as_bytes()));
            assert_eq!(got, reference(text.as_bytes()));
            assert!(!got.is_empty());
        }
        assert!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
                .is_empty()
        );
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA").is_empty());
        // A bundle as distributions ship it: comment headers, blank lines,
        // certificates of several key types.
        let mut bundle = String::new();
        for (i, alg) in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ]
        .into_iter()
        .enumerate()
        {
            let key = rcgen::KeyPair::generate_for(alg).expect("key");
            let cert = rcgen::CertificateParams::new(vec![format!("ca{i}.example")])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            bundle.push_str(&format!("\n# Issuer: CN=ca{i}\n# Label: \"ca{i}\"\n"));
            bundle.push_str(&cert.pem());
        }
        let got = ders(&pem_certificates(bundle.as_bytes()));
        assert_eq!(got.len(), 3);
        assert_eq!(got, reference(bundle.as_bytes()));
    }

    #[test]
    fn cafile_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            load_cafile(&missing),
            Err(FetchError::CaFileRead { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem").expect("write");
        assert!(matches!(
            load_cafile(&empty),
            Err(FetchError::CaFileEmpty(_))
        ));
    }

    #[test]
    fn env_store_and_roots() {
        assert_eq!(env_store(None, None), None);
        assert_eq!(env_store(Some(OsStr::new("")), Some(OsStr::new(""))), None);
        assert_eq!(
            env_store(
                Some(OsStr::new("/nonexistent/ca.pem")),
                Some(OsStr::new("/nonexistent/a:/nonexistent/b"))
            ),
            None
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["ca.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .pem();
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir(&a).expect("dir a");
        std::fs::create_dir(&b).expect("dir b");
        let file = a.join("ca.pem");
        std::fs::write(&file, &ca).expect("CA");
        std::fs::write(b.join("same-ca.crt"), &ca).expect("copy");
        std::fs::write(b.join("junk"), [0xff, 0x00, 0x17]).expect("junk");
        let dirs = OsString::from(format!("{}::{}", a.display(), b.display()));
        let (f, d) = env_store(Some(file.as_os_str()), Some(&dirs)).expect("a store");
        assert_eq!(f.as_deref(), Some(file.as_path()));
        assert_eq!(d, vec![a.clone(), b.clone()]);
        // The same certificate from three files is trusted once.
        let roots = env_roots(f.as_deref(), &d).expect("roots");
        assert_eq!(ders(&roots), ders(&pem_certificates(ca.as_bytes())));
        // A store that exists but holds no certificate is a setup error.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("empty dir");
        let err = env_roots(None, &[empty]).expect_err("no roots");
        assert!(matches!(err, FetchError::NoEnvRoots) && err.is_setup());
    }
}
