//! The small part of the Linux-PAM C API this module needs, declared by hand.
//!
//! `libpam.so` comes from Debian's `libpam0g-dev` (link time) and `libpam0g`
//! (run time). Only functions and constants that exist in every Linux-PAM
//! since 1.0 are used.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

/// Opaque `pam_handle_t`.
#[repr(C)]
pub struct PamHandle {
    _private: [u8; 0],
}

/// `struct pam_message`.
#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

/// The conversation callback of `struct pam_conv`.
pub type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_BUF_ERR: c_int = 5;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_CONV_ERR: c_int = 19;

pub const PAM_AUTHTOK: c_int = 6;
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;

/// syslog priorities and the facility PAM modules log to.
pub const LOG_AUTHPRIV: c_int = 10 << 3;
pub const LOG_ERR: c_int = 3;
pub const LOG_WARNING: c_int = 4;
pub const LOG_NOTICE: c_int = 5;
pub const LOG_INFO: c_int = 6;
pub const LOG_DEBUG: c_int = 7;

#[link(name = "pam")]
unsafe extern "C" {
    // Module side.
    pub fn pam_get_user(
        pamh: *mut PamHandle,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    pub fn pam_get_authtok(
        pamh: *mut PamHandle,
        item: c_int,
        authtok: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    pub fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);

    // Application side (used by the benchmarks and the leak check).
    pub fn pam_start(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    pub fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    pub fn pam_end(pamh: *mut PamHandle, pam_status: c_int) -> c_int;
}

/// Errors from the PAM library calls.
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    #[error("pam_get_user failed with code {0}")]
    User(c_int),
    #[error("pam_get_authtok failed with code {0}")]
    Authtok(c_int),
    #[error("the PAM user name is not valid UTF-8")]
    UserNotUtf8,
    #[error("the token is not valid UTF-8")]
    TokenNotUtf8,
}

impl PamError {
    /// The PAM code to hand back for this error.
    pub fn code(&self) -> c_int {
        match self {
            PamError::User(c) | PamError::Authtok(c) if *c != PAM_SUCCESS => *c,
            _ => PAM_AUTH_ERR,
        }
    }
}

/// A borrowed, non-null PAM handle as seen by a module entry point.
pub struct Handle {
    raw: *mut PamHandle,
}

impl Handle {
    /// # Safety
    /// `raw` must be the handle libpam passed to the entry point, valid for
    /// the duration of the call.
    pub unsafe fn from_raw(raw: *mut PamHandle) -> Option<Handle> {
        if raw.is_null() {
            None
        } else {
            Some(Handle { raw })
        }
    }

    /// The user being authenticated (PAM_USER, asking if needed).
    pub fn user(&self) -> Result<String, PamError> {
        let mut user: *const c_char = std::ptr::null();
        // SAFETY: raw is a valid handle; user is a valid out pointer.
        let rc = unsafe { pam_get_user(self.raw, &mut user, std::ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(PamError::User(rc));
        }
        if user.is_null() {
            return Err(PamError::User(PAM_AUTH_ERR));
        }
        // SAFETY: libpam returns a NUL-terminated string owned by the handle.
        let user = unsafe { CStr::from_ptr(user) };
        user.to_str()
            .map(str::to_owned)
            .map_err(|_| PamError::UserNotUtf8)
    }

    /// The password, here the bearer token (PAM_AUTHTOK, asking the
    /// conversation if an earlier module has not set it). Honours the
    /// standard `use_first_pass`/`try_first_pass` module arguments.
    pub fn authtok(&self) -> Result<String, PamError> {
        let mut tok: *const c_char = std::ptr::null();
        // SAFETY: raw is a valid handle; tok is a valid out pointer; a null
        // prompt selects libpam's default prompt.
        let rc = unsafe { pam_get_authtok(self.raw, PAM_AUTHTOK, &mut tok, std::ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(PamError::Authtok(rc));
        }
        if tok.is_null() {
            return Err(PamError::Authtok(PAM_AUTH_ERR));
        }
        // SAFETY: libpam returns a NUL-terminated string owned by the handle.
        let tok = unsafe { CStr::from_ptr(tok) };
        tok.to_str()
            .map(str::to_owned)
            .map_err(|_| PamError::TokenNotUtf8)
    }

    /// Log one line through pam_syslog (facility LOG_AUTHPRIV, prefixed by
    /// libpam with `pam_oauth2(service:type)`). The message is passed as a
    /// `%s` argument, never as a format string.
    pub fn log(&self, priority: c_int, message: &str) {
        let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: raw is a valid handle; fmt and the argument are valid
        // NUL-terminated strings.
        unsafe {
            pam_syslog(
                self.raw,
                LOG_AUTHPRIV | priority,
                c"%s".as_ptr(),
                text.as_ptr(),
            );
        }
    }
}

/// The module arguments (`argc`/`argv`) as Rust strings.
///
/// # Safety
/// `argv` must point to `argc` valid NUL-terminated strings (or be null
/// with `argc == 0`).
pub unsafe fn args<'a>(argc: c_int, argv: *const *const c_char) -> Result<Vec<&'a str>, usize> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() || n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the caller guarantees argv has argc entries.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            return Err(i);
        }
        // SAFETY: each entry is a NUL-terminated string that outlives the call.
        let s = unsafe { CStr::from_ptr(p) };
        out.push(s.to_str().map_err(|_| i)?);
    }
    Ok(out)
}
