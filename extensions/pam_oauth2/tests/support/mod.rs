//! Test fixtures shared by the integration tests, the benchmark and the leak
//! check: a throw-away CA, an HTTPS tokeninfo server on 127.0.0.1, PAM
//! service files under /etc/pam.d, pamtester, and a syslog listener.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use std::ffi::{CStr, CString, OsStr, c_int, c_void};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;

use pam_oauth2::pam;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Lock a mutex, ignoring poisoning (a failed test must not cascade).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A throw-away certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Write the CA certificate to `dir/<file>` and return its path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).expect("write CA file");
        path
    }

    /// A server certificate for 127.0.0.1 and localhost signed by this CA.
    pub fn leaf(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tokeninfo test server");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// What the server answers for one token.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub extra_headers: String,
}

impl Reply {
    pub fn json(body: &str) -> Reply {
        Reply::status(200, body)
    }
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            extra_headers: String::new(),
        }
    }
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    pub fn header(mut self, line: &str) -> Reply {
        self.extra_headers.push_str(line);
        self.extra_headers.push_str("\r\n");
        self
    }
}

/// Something the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request, with the decoded `access_token` query parameter.
    Request { path: String, token: Option<String> },
    /// A failed TLS handshake (the client rejected our certificate, ...).
    TlsError(String),
}

#[derive(Default)]
struct State {
    replies: Mutex<HashMap<String, Reply>>,
    events: Mutex<Vec<Event>>,
    stop: AtomicBool,
    quiet: AtomicBool,
    connections: AtomicUsize,
}

/// A tokeninfo server on 127.0.0.1:<random port>. HTTPS with a certificate
/// from the given CA, or plain HTTP with [`Server::plain`]. Unknown tokens
/// get a 401. Stops accepting when dropped.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
}

impl Server {
    pub fn start(ca: &Ca) -> Server {
        let (cert, key) = ca.leaf();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server cert");
        Server::spawn(Some(Arc::new(config)))
    }

    pub fn plain() -> Server {
        Server::spawn(None)
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let is_tls = tls.is_some();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let tls = tls.clone();
                thread::spawn(move || serve(conn, tls, &st));
            }
        });
        Server {
            addr,
            tls: is_tls,
            state,
        }
    }

    pub fn reply(&self, token: &str, reply: Reply) {
        lock(&self.state.replies).insert(token.to_owned(), reply);
    }

    /// The tokeninfo URL the module is configured with.
    pub fn url(&self) -> String {
        self.url_with_host("127.0.0.1")
    }

    /// The tokeninfo URL with another host name for 127.0.0.1.
    pub fn url_with_host(&self, host: &str) -> String {
        format!(
            "{}://{host}:{}/oauth2/tokeninfo?access_token=",
            if self.tls { "https" } else { "http" },
            self.addr.port()
        )
    }

    /// Stop recording requests (long benchmark and leak-check runs).
    pub fn quiet(&self) {
        self.state.quiet.store(true, Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<Event> {
        lock(&self.state.events).clone()
    }

    /// Tokens of the requests received so far.
    pub fn tokens(&self) -> Vec<Option<String>> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Request { token, .. } => Some(token),
                Event::TlsError(_) => None,
            })
            .collect()
    }

    pub fn tls_errors(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::TlsError(m) => Some(m),
                Event::Request { .. } => None,
            })
            .collect()
    }

    /// The failed handshakes once `count` are recorded (the server records
    /// one after the client has already gone), or what there is after 5 s.
    pub fn wait_tls_errors(&self, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let errors = self.tls_errors();
            if errors.len() >= count || std::time::Instant::now() >= deadline {
                return errors;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn serve(conn: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut stream: Box<dyn Stream> = match tls {
        Some(config) => {
            let Ok(server) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(server, conn);
            while tls.conn.is_handshaking() {
                if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                    lock(&state.events).push(Event::TlsError(e.to_string()));
                    return;
                }
            }
            Box::new(tls)
        }
        None => Box::new(conn),
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let token = query_param(&path, "access_token");
        if !state.quiet.load(Ordering::SeqCst) {
            lock(&state.events).push(Event::Request {
                path: path.clone(),
                token: token.clone(),
            });
        }
        let reply = token
            .as_ref()
            .and_then(|t| lock(&state.replies).get(t).cloned())
            .unwrap_or_else(|| Reply::status(401, r#"{"error":"invalid_token"}"#));
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: keep-alive\r\n\r\n",
            reply.status,
            reply.body.len(),
            reply.extra_headers
        );
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&reply.body).is_err()
            || stream.flush().is_err()
        {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The module built next to the running test/bench/example binary:
/// `target/<profile>/libpam_oauth2.so`.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Tests and benches live in target/<profile>/deps, next to the cdylib
    // cargo builds for them; examples in target/<profile>/examples.
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    let profile_dir = exe_dir.parent().unwrap_or(Path::new("."));
    let candidates = [
        exe_dir.join("libpam_oauth2.so"),
        profile_dir.join("deps").join("libpam_oauth2.so"),
        profile_dir.join("libpam_oauth2.so"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "libpam_oauth2.so not found next to {} (looked at {:?}); \
                 build it first with `cargo build -p pam_oauth2` (same profile and target dir)",
                exe.display(),
                candidates
            )
        })
}

static SERVICE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A PAM service file /etc/pam.d/spilo-oauth2-test-<pid>-<n>, removed on drop.
pub struct Service {
    pub name: String,
    path: PathBuf,
}

impl Service {
    /// `auth <control> <module> <args>` and `account <control> <module>`.
    pub fn new(control: &str, args: &str) -> Service {
        let module = module_path();
        Service::raw(&format!(
            "auth {control} {m} {args}\naccount {control} {m}\n",
            m = module.display()
        ))
    }

    /// A service file with the given text.
    pub fn raw(text: &str) -> Service {
        let n = SERVICE_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("spilo-oauth2-test-{}-{n}", std::process::id());
        let path = Path::new("/etc/pam.d").join(&name);
        std::fs::write(&path, text).unwrap_or_else(|e| {
            panic!(
                "cannot write {} ({e}); these tests must run as root",
                path.display()
            )
        });
        Service { name, path }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Result of one pamtester run.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub output: String,
    pub elapsed: Duration,
}

/// `echo TOKEN | pamtester SERVICE USER op...`.
pub fn pamtester(service: &Service, user: &str, token: &str, ops: &[&str]) -> Outcome {
    pamtester_with(service, user, token, ops, &[])
}

/// `pamtester` with these variables set, and none of the caller's proxy
/// or CA store variables.
pub fn pamtester_with(
    service: &Service,
    user: &str,
    token: &str,
    ops: &[&str],
    env: &[(&str, &OsStr)],
) -> Outcome {
    let started = Instant::now();
    let mut cmd = Command::new("pamtester");
    cmd.arg(&service.name).arg(user).args(ops);
    for var in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    if let Some(socket) = syslog().private.clone() {
        // SAFETY: private_dev_log makes only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || private_dev_log(&socket));
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pamtester (apt-get install pamtester)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{token}");
    }
    let out = child.wait_with_output().expect("pamtester output");
    Outcome {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        elapsed: started.elapsed(),
    }
}

/// Messages the module logs while the tests run.
pub struct Syslog {
    lines: Mutex<Vec<String>>,
    /// Our socket when a syslog daemon serves /dev/log: pamtester then
    /// runs in a mount namespace with it bound over /dev/log.
    private: Option<CString>,
}

impl Syslog {
    /// Log lines that mention `needle` (e.g. a service name), waiting up
    /// to a second for at least one to arrive.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let found: Vec<String> = lock(&self.lines)
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn all(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }
}

static SOCKET: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_socket() {
    if let Some(path) = SOCKET.get() {
        let _ = std::fs::remove_file(path);
    }
}

/// Listens for what the module logs: on /dev/log when no syslog daemon
/// does, else on a socket of its own that pamtester sees as /dev/log.
/// The socket is removed when the test process exits. Panics when it
/// cannot listen: the log assertions are part of the tests.
pub fn syslog() -> &'static Syslog {
    static SYSLOG: OnceLock<&'static Syslog> = OnceLock::new();
    SYSLOG.get_or_init(|| {
        let dev_log = Path::new("/dev/log");
        let served = UnixDatagram::unbound()
            .and_then(|probe| probe.connect(dev_log))
            .is_ok();
        let path = if served {
            std::env::temp_dir().join(format!("spilo-oauth2-test-log-{}", std::process::id()))
        } else {
            dev_log.to_owned()
        };
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path)
                .unwrap_or_else(|e| panic!("remove the stale {}: {e}", path.display()));
        }
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| {
            panic!(
                "listen on {}: {e}; these tests must run as root",
                path.display()
            )
        });
        SOCKET.set(path.clone()).expect("one syslog listener");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(remove_socket);
        }
        let private = served.then(|| {
            CString::new(path.into_os_string().into_vec()).expect("socket path without NUL")
        });
        let log: &'static Syslog = Box::leak(Box::new(Syslog {
            lines: Mutex::new(Vec::new()),
            private,
        }));
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => lock(&log.lines).push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            }
        });
        log
    })
}

/// In a forked child: a mount namespace of its own, with `socket` bound
/// over /dev/log (the daemon's socket stays untouched outside).
fn private_dev_log(socket: &CStr) -> std::io::Result<()> {
    let check = |rc: c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with valid C strings and null options;
    // nothing is allocated between fork and exec.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            socket.as_ptr(),
            c"/dev/log".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
    }
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The PAM conversation of [`pam_login`]: answers every prompt with the
/// token passed as `appdata_ptr` (a `*const CStr`).
unsafe extern "C" fn token_conv(
    num_msg: c_int,
    _msg: *mut *const pam::PamMessage,
    resp: *mut *mut pam::PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let Ok(n) = usize::try_from(num_msg) else {
        return pam::PAM_CONV_ERR;
    };
    if n == 0 || resp.is_null() || appdata_ptr.is_null() {
        return pam::PAM_CONV_ERR;
    }
    // SAFETY: appdata_ptr is the &CStr handed to pam_start by pam_login,
    // alive for the whole PAM transaction.
    let token = unsafe { &*(appdata_ptr as *const &CStr) };
    // SAFETY: libpam frees the array and each resp with free(); allocate
    // them with calloc/strdup accordingly.
    unsafe {
        let arr = libc::calloc(n, std::mem::size_of::<pam::PamResponse>()) as *mut pam::PamResponse;
        if arr.is_null() {
            return pam::PAM_BUF_ERR;
        }
        for i in 0..n {
            (*arr.add(i)).resp = libc::strdup(token.as_ptr());
            (*arr.add(i)).resp_retcode = 0;
        }
        *resp = arr;
    }
    pam::PAM_SUCCESS
}

/// One login through libpam, as PostgreSQL does it: pam_start,
/// pam_authenticate, pam_acct_mgmt, pam_end. Returns the first failing
/// PAM code, or PAM_SUCCESS.
pub fn pam_login(service: &CStr, user: &CStr, token: &CStr) -> c_int {
    let appdata: &CStr = token;
    let conv = pam::PamConv {
        conv: Some(token_conv),
        appdata_ptr: &appdata as *const &CStr as *mut c_void,
    };
    let mut h: *mut pam::PamHandle = std::ptr::null_mut();
    // SAFETY: valid C strings and conversation; h is an out pointer.
    let rc = unsafe { pam::pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut h) };
    if rc != pam::PAM_SUCCESS {
        return rc;
    }
    // SAFETY: h is the handle pam_start returned; ended exactly once.
    unsafe {
        let mut rc = pam::pam_authenticate(h, 0);
        if rc == pam::PAM_SUCCESS {
            rc = pam::pam_acct_mgmt(h, 0);
        }
        pam::pam_end(h, rc);
        rc
    }
}

/// What the leak test and the leak check log in through, many times: a
/// tokeninfo server that knows `token` as alice of /employees, and a
/// `required` PAM service pointing at it with the test CA.
pub struct Logins {
    _dir: tempfile::TempDir,
    _service_file: Service,
    pub cafile: PathBuf,
    pub server: Server,
    /// The PAM service's name, for pam_start.
    pub service: std::ffi::CString,
}

impl Logins {
    pub fn new(token: &str) -> Logins {
        let ca = Ca::new("leak check CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let cafile = ca.write(dir.path(), "ca.pem");
        let server = Server::start(&ca);
        server.quiet();
        server.reply(
            token,
            Reply::json(r#"{"uid":"alice","realm":"/employees"}"#),
        );
        let service_file = Service::new(
            "required",
            &format!(
                "{} uid realm=/employees cafile={}",
                server.url(),
                cafile.display()
            ),
        );
        let service = std::ffi::CString::new(service_file.name.clone()).expect("service name");
        Logins {
            _dir: dir,
            _service_file: service_file,
            cafile,
            server,
            service,
        }
    }
}
