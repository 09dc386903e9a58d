//! `pam_oauth2`: a PAM module that accepts an OAuth2 access token as the
//! password and checks it against a tokeninfo endpoint.
//!
//! ```text
//! auth    sufficient pam_oauth2.so <tokeninfo URL> <login field> [key=value ...] [option=value ...]
//! account sufficient pam_oauth2.so
//! ```
//!
//! The token (PAM_AUTHTOK) is URL-encoded and appended to the URL, which is
//! fetched over HTTPS. Access is granted only if the JSON answer's login
//! field equals the PAM user and every `key=value` claim matches. See the
//! crate's README.md for the options and the log messages.
//!
//! Every entry point catches panics, so none crosses the FFI boundary.

use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub mod http;
pub mod pam;
pub mod verify;

/// The module's arguments, parsed by a crate of their own that
/// `spilo configure` shares.
pub use pam_oauth2_args as config;

pub use config::{Config, ConfigError};
pub use http::FetchError;
pub use verify::Mismatch;

use pam::{Handle, PamHandle};

/// Longest token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a login was not granted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("empty token")]
    EmptyToken,
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLong,
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Denied(#[from] Mismatch),
    #[error("{0}")]
    Pam(#[from] pam::PamError),
}

impl AuthError {
    /// The PAM return code for this outcome.
    pub fn pam_code(&self) -> c_int {
        match self {
            AuthError::Config(_) => pam::PAM_SERVICE_ERR,
            AuthError::Fetch(f) if f.is_setup() => pam::PAM_SERVICE_ERR,
            AuthError::Fetch(FetchError::Status(_) | FetchError::TooLarge(_)) => pam::PAM_AUTH_ERR,
            AuthError::Fetch(_) => pam::PAM_AUTHINFO_UNAVAIL,
            AuthError::Pam(p) => p.code(),
            AuthError::EmptyToken | AuthError::TokenTooLong | AuthError::Denied(_) => {
                pam::PAM_AUTH_ERR
            }
        }
    }

    /// The syslog priority this outcome is logged at.
    pub fn log_priority(&self) -> c_int {
        match self.pam_code() {
            pam::PAM_AUTH_ERR => pam::LOG_NOTICE,
            pam::PAM_AUTHINFO_UNAVAIL => pam::LOG_WARNING,
            _ => pam::LOG_ERR,
        }
    }
}

/// The URL that is fetched for `token`.
pub fn request_url(config: &Config, token: &str) -> String {
    let mut url = String::with_capacity(config.url.len() + token.len() * 3);
    url.push_str(&config.url);
    url.push_str(&http::url_encode(token));
    url
}

/// Decide a login: fetch the tokeninfo for `token` (through the shared,
/// cached agent) and check it against `user` and the claims.
pub fn authenticate(config: &Config, user: &str, token: &str) -> Result<(), AuthError> {
    check_token(token)?;
    let agent = http::shared_agent(config)?;
    authenticate_with(&agent, config, user, token)
}

/// [`authenticate`] with a given agent (benchmarks use it for cold starts).
pub fn authenticate_with(
    agent: &ureq::Agent,
    config: &Config,
    user: &str,
    token: &str,
) -> Result<(), AuthError> {
    check_token(token)?;
    let body = http::fetch(agent, &request_url(config, token), config.max_body)?;
    verify::check_answer(config, user, &body)?;
    Ok(())
}

fn check_token(token: &str) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenTooLong);
    }
    Ok(())
}

/// Make `message` safe to log: every occurrence of the token (raw or
/// URL-encoded) is replaced, and control characters are escaped.
pub fn redact(message: &str, token: Option<&str>) -> String {
    let mut out = message.to_owned();
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        out = out.replace(t, "[token]");
        let enc = http::url_encode(t);
        if enc != t {
            out = out.replace(&enc, "[token]");
        }
    }
    out.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// A user name as it appears in log lines (escaped, at most 128 chars).
fn user_for_log(user: &str) -> String {
    let mut s: String = user.chars().take(128).collect();
    if s.len() < user.len() {
        s.push('…');
    }
    redact(&s, None)
}

/// The body of `pam_sm_authenticate`, given the handle and arguments.
fn authenticate_handle(h: &Handle, args: &[&str]) -> c_int {
    let config = match Config::parse(args) {
        Ok(c) => c,
        Err(e) => {
            h.log(pam::LOG_ERR, &redact(&AuthError::from(e).to_string(), None));
            return pam::PAM_SERVICE_ERR;
        }
    };
    let user = match h.user() {
        Ok(u) => u,
        Err(e) => {
            h.log(pam::LOG_ERR, &format!("cannot get the user name: {e}"));
            return e.code();
        }
    };
    let token = match h.authtok() {
        Ok(t) => t,
        Err(e) => {
            h.log(
                pam::LOG_NOTICE,
                &format!("user {}: cannot get the token: {e}", user_for_log(&user)),
            );
            return e.code();
        }
    };
    let started = std::time::Instant::now();
    let outcome = authenticate(&config, &user, &token);
    let took = if config.debug {
        format!(", {} ms", started.elapsed().as_millis())
    } else {
        String::new()
    };
    match outcome {
        Ok(()) => {
            h.log(
                pam::LOG_INFO,
                &format!(
                    "user {}: access granted (tokeninfo {}{took})",
                    user_for_log(&user),
                    config.url_for_log()
                ),
            );
            pam::PAM_SUCCESS
        }
        Err(e) => {
            let msg = format!(
                "user {}: access denied: {e} (tokeninfo {}{took})",
                user_for_log(&user),
                config.url_for_log()
            );
            h.log(e.log_priority(), &redact(&msg, Some(&token)));
            e.pam_code()
        }
    }
}

/// Run `f`, turning a panic into `on_panic` (and a log line if possible).
fn guarded(pamh: *mut PamHandle, on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: pamh is the handle libpam passed to the entry point.
                if let Some(h) = unsafe { Handle::from_raw(pamh) } {
                    h.log(pam::LOG_ERR, "internal error (panic); access denied");
                }
            }));
            on_panic
        }
    }
}

/// PAM `auth` entry point.
///
/// # Safety
/// Called by libpam with a valid handle and `argc` valid C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, pam::PAM_SERVICE_ERR, || {
        // SAFETY: libpam passes a valid handle for the duration of the call.
        let Some(h) = (unsafe { Handle::from_raw(pamh) }) else {
            return pam::PAM_SERVICE_ERR;
        };
        // SAFETY: libpam passes argc valid C strings.
        match unsafe { pam::args(argc, argv) } {
            Ok(args) => authenticate_handle(&h, &args),
            Err(i) => {
                h.log(
                    pam::LOG_ERR,
                    &format!("configuration error: {}", ConfigError::NotUtf8(i)),
                );
                pam::PAM_SERVICE_ERR
            }
        }
    })
}

/// PAM `auth` credential hook: nothing to set.
///
/// # Safety
/// Called by libpam.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded(pamh, pam::PAM_SERVICE_ERR, || pam::PAM_SUCCESS)
}

/// PAM `account` entry point: the token check in `auth` already decided.
///
/// # Safety
/// Called by libpam.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded(pamh, pam::PAM_SERVICE_ERR, || pam::PAM_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let tok = "abc+/=def";
        let msg = "x abc+/=def y abc%2B%2F%3Ddef z\n";
        assert_eq!(redact(msg, Some(tok)), "x [token] y [token] z\\n");
        assert_eq!(redact("plain", Some("")), "plain");
    }

    #[test]
    fn url_gets_encoded_token() {
        let c = Config::parse(&["https://h/t?access_token=", "uid"]).expect("config");
        assert_eq!(request_url(&c, "a b"), "https://h/t?access_token=a%20b");
    }

    #[test]
    fn token_checks_precede_network() {
        let c = Config::parse(&["https://127.0.0.1:1/t?access_token=", "uid"]).expect("config");
        assert!(matches!(
            authenticate(&c, "u", ""),
            Err(AuthError::EmptyToken)
        ));
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            authenticate(&c, "u", &long),
            Err(AuthError::TokenTooLong)
        ));
    }

    #[test]
    fn codes() {
        assert_eq!(
            AuthError::from(ConfigError::TooFewArguments).pam_code(),
            pam::PAM_SERVICE_ERR
        );
        assert_eq!(
            AuthError::from(FetchError::Status(401)).pam_code(),
            pam::PAM_AUTH_ERR
        );
        assert_eq!(
            AuthError::from(FetchError::HostNotFound).pam_code(),
            pam::PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(
            AuthError::from(Mismatch::MalformedJson).pam_code(),
            pam::PAM_AUTH_ERR
        );
    }

    #[test]
    fn entry_points_survive_null() {
        // SAFETY: null handles and argv are handled without dereferencing.
        unsafe {
            assert_eq!(
                pam_sm_authenticate(std::ptr::null_mut(), 0, 0, std::ptr::null()),
                pam::PAM_SERVICE_ERR
            );
            assert_eq!(
                pam_sm_setcred(std::ptr::null_mut(), 0, 0, std::ptr::null()),
                pam::PAM_SUCCESS
            );
            assert_eq!(
                pam_sm_acct_mgmt(std::ptr::null_mut(), 0, 0, std::ptr::null()),
                pam::PAM_SUCCESS
            );
        }
    }
}
