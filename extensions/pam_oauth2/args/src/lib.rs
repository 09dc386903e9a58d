//! The `pam_oauth2` module's arguments: `<tokeninfo URL> <login field>
//! [option=value | key=value ...]`.
//!
//! A crate of its own, without libpam, TLS or an HTTP client, so that
//! `spilo configure` checks `PAM_OAUTH2` with the module's very parser
//! and refuses exactly what the module would refuse at every login.

use std::path::PathBuf;
use std::time::Duration;

/// Default time allowed to open the TCP connection (and resolve the name).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time allowed for the whole request, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on the tokeninfo answer's body.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Upper bounds accepted for the options.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_MAX_BODY: u64 = 16 * 1024 * 1024;

/// Arguments that libpam's `pam_get_authtok` reads itself; accepted and
/// otherwise ignored here.
const PAM_AUTHTOK_FLAGS: &[&str] = &["use_first_pass", "try_first_pass", "use_authtok"];

/// Prefix that forces an argument to be a claim even if its name is one of
/// the module's options (e.g. `claim:timeout=30`).
pub const CLAIM_PREFIX: &str = "claim:";

/// Longest pam.d line (newline excluded) that libpam before 1.6 reads
/// whole: it reads lines with `fgets` into a 1024-byte buffer, so a longer
/// line is cut there and its rest is read as a line of its own (Debian 12
/// ships libpam 1.5.2). Whoever writes a line for this module should keep
/// it within this length.
pub const PAM_MAX_LINE: usize = 1023;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected at least two arguments: <tokeninfo URL> <login field>")]
    TooFewArguments,
    #[error("module argument {0} is not valid UTF-8")]
    NotUtf8(usize),
    #[error("the tokeninfo URL must start with https:// (got {0})")]
    NotHttps(String),
    #[error("the tokeninfo URL {0} is not a valid URL")]
    BadUrl(String),
    #[error("the login field must be a plain field name, got {0:?}")]
    BadLoginField(String),
    #[error("unknown module argument {0:?} (claims are written key=value)")]
    UnknownArgument(String),
    #[error("empty claim name in {0:?}")]
    EmptyClaimName(String),
    #[error("option {0} given twice")]
    Duplicate(&'static str),
    #[error("invalid value for {option}: {value:?} ({reason})")]
    BadValue {
        option: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "'#' starts a comment in a PAM configuration line: libpam would drop the rest of the line"
    )]
    Comment,
    #[error("a trailing '\\' would continue the PAM configuration line onto the next line")]
    Continuation,
    #[error("a line break or NUL would end the PAM configuration line early")]
    LineBreak,
}

/// One `key=value` claim that the tokeninfo answer must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub value: String,
}

/// Parsed module configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The tokeninfo URL; the URL-encoded token is appended to it verbatim.
    pub url: String,
    /// Field of the JSON answer that must equal the PAM user name.
    pub login_field: String,
    /// Further fields that must match.
    pub claims: Vec<Claim>,
    /// PEM file of CA certificates to trust instead of the system store.
    pub cafile: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_body: u64,
    /// Log successful logins and a little more detail (never the token).
    pub debug: bool,
}

impl Config {
    /// Parse the module arguments of a PAM configuration line.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Config, ConfigError> {
        let mut it = args.iter().map(AsRef::as_ref);
        let (Some(url), Some(login_field)) = (it.next(), it.next()) else {
            return Err(ConfigError::TooFewArguments);
        };
        validate_url(url)?;
        if login_field.is_empty()
            || login_field.contains('=')
            || login_field.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::BadLoginField(login_field.to_owned()));
        }
        let mut cfg = Config {
            url: url.to_owned(),
            login_field: login_field.to_owned(),
            claims: Vec::new(),
            cafile: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            debug: false,
        };
        let mut seen: Vec<&'static str> = Vec::new();
        let mut once = |name: &'static str| {
            if seen.contains(&name) {
                Err(ConfigError::Duplicate(name))
            } else {
                seen.push(name);
                Ok(())
            }
        };
        for arg in it {
            let Some((key, value)) = arg.split_once('=') else {
                match arg {
                    "debug" => cfg.debug = true,
                    a if PAM_AUTHTOK_FLAGS.contains(&a) => {}
                    _ => return Err(ConfigError::UnknownArgument(arg.to_owned())),
                }
                continue;
            };
            match key {
                "cafile" => {
                    once("cafile")?;
                    let path = PathBuf::from(value);
                    if !path.is_absolute() {
                        return Err(ConfigError::BadValue {
                            option: "cafile",
                            value: value.to_owned(),
                            reason: "must be an absolute path",
                        });
                    }
                    cfg.cafile = Some(path);
                }
                "connect_timeout" => {
                    once("connect_timeout")?;
                    cfg.connect_timeout = parse_duration("connect_timeout", value)?;
                }
                "timeout" => {
                    once("timeout")?;
                    cfg.timeout = parse_duration("timeout", value)?;
                }
                "max_body" => {
                    once("max_body")?;
                    cfg.max_body = parse_size("max_body", value)?;
                }
                // Read by pam_get_authtok itself.
                "authtok_type" => {}
                _ => {
                    let name = key.strip_prefix(CLAIM_PREFIX).unwrap_or(key);
                    if name.is_empty() {
                        return Err(ConfigError::EmptyClaimName(arg.to_owned()));
                    }
                    cfg.claims.push(Claim {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    });
                }
            }
        }
        Ok(cfg)
    }

    /// Parse the argument part of a pam.d line (what follows the module
    /// path) into the arguments libpam passes the module
    /// ([`pam_arguments`]), then check them with [`Config::parse`]. This is
    /// how a tool that writes the line can refuse exactly what the module
    /// would refuse at every login.
    pub fn parse_pam_arguments(text: &str) -> Result<Config, ConfigError> {
        Config::parse(&pam_arguments(text)?)
    }

    /// The tokeninfo URL for logging: scheme, host, port and path only;
    /// user info, query and fragment (which could hold secrets) are dropped.
    pub fn url_for_log(&self) -> String {
        url_for_log(&self.url)
    }
}

/// The module arguments libpam makes of `text`, the argument part of one
/// pam.d line, as Linux-PAM's `_pam_mkargv` splits it: words separated by
/// spaces and tabs, except that a word starting with `[` runs to the next
/// `]` (spaces included; `\]` stands for `]`, and whatever follows the
/// `]` starts the next word).
///
/// Text that libpam would not pass on as written is an error: a `#` (libpam
/// drops the rest of the line as a comment, even inside a URL or `[...]`),
/// a trailing `\` (the line would continue onto the next one), and a line
/// break or NUL. The length of the whole line is the writer's to check
/// against [`PAM_MAX_LINE`].
pub fn pam_arguments(text: &str) -> Result<Vec<String>, ConfigError> {
    if text.contains(['\n', '\0']) {
        return Err(ConfigError::LineBreak);
    }
    if text.contains('#') {
        return Err(ConfigError::Comment);
    }
    if text.trim_end_matches([' ', '\t']).ends_with('\\') {
        return Err(ConfigError::Continuation);
    }
    let delimiter = |b: u8| b == b' ' || b == b'\t';
    let bytes = text.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && delimiter(bytes[i]) {
            i += 1;
        }
        if i == bytes.len() {
            return Ok(args);
        }
        let start = i;
        if bytes[i] == b'[' {
            i += 1;
            let mut word = Vec::new();
            while i < bytes.len() && bytes[i] != b']' {
                if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
                word.push(bytes[i]);
                i += 1;
            }
            // Past the closing ']', if there is one.
            i = (i + 1).min(bytes.len());
            // Only ASCII backslashes were left out: still UTF-8.
            args.push(String::from_utf8_lossy(&word).into_owned());
        } else {
            while i < bytes.len() && !delimiter(bytes[i]) {
                i += 1;
            }
            args.push(text[start..i].to_owned());
        }
    }
}

fn validate_url(url: &str) -> Result<(), ConfigError> {
    let lower = url.get(..8).map(str::to_ascii_lowercase);
    if lower.as_deref() != Some("https://") {
        return Err(ConfigError::NotHttps(url_for_log(url)));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains('#') {
        return Err(ConfigError::BadUrl(url_for_log(url)));
    }
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(ConfigError::BadUrl(url_for_log(url))),
    }
}

/// See [`Config::url_for_log`].
pub fn url_for_log(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("", url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = String::with_capacity(url.len());
    if !scheme.is_empty() {
        out.push_str(scheme);
        out.push_str("://");
    }
    out.push_str(host);
    out.push_str(path);
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `5`, `2.5`, `5s`, `500ms` → Duration; must be > 0 and ≤ 300 s.
fn parse_duration(option: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let bad = |reason| ConfigError::BadValue {
        option,
        value: value.to_owned(),
        reason,
    };
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else {
        (value, 1.0)
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad("expected seconds such as 5, 2.5, 5s or 500ms"));
    }
    let secs: f64 = number
        .parse::<f64>()
        .map_err(|_| bad("expected seconds such as 5, 2.5, 5s or 500ms"))?
        * scale;
    if secs.is_nan() || secs <= 0.0 || secs > MAX_TIMEOUT.as_secs_f64() {
        return Err(bad("must be more than 0 and at most 300 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
}

/// `65536`, `64k`, `64KiB`, `1M`, `1MiB` → bytes; must be 1..=16 MiB.
fn parse_size(option: &'static str, value: &str) -> Result<u64, ConfigError> {
    let bad = |reason| ConfigError::BadValue {
        option,
        value: value.to_owned(),
        reason,
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, suffix) = value.split_at(split);
    let mult: u64 = match suffix {
        "" => 1,
        "k" | "K" | "KiB" => 1024,
        "m" | "M" | "MiB" => 1024 * 1024,
        _ => return Err(bad("expected bytes such as 65536, 64k or 1M")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("expected bytes such as 65536, 64k or 1M"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| bad("must be between 1 byte and 16 MiB"))?;
    if bytes == 0 || bytes > MAX_MAX_BODY {
        return Err(bad("must be between 1 byte and 16 MiB"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://info.example.com/oauth2/tokeninfo?access_token=";

    #[test]
    fn contract_example() {
        let c = Config::parse(&[URL, "uid", "realm=/employees"]).expect("parses");
        assert_eq!(c.url, URL);
        assert_eq!(c.login_field, "uid");
        assert_eq!(
            c.claims,
            vec![Claim {
                name: "realm".into(),
                value: "/employees".into()
            }]
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.max_body, DEFAULT_MAX_BODY);
        assert_eq!(c.cafile, None);
        assert!(!c.debug);
    }

    #[test]
    fn options_and_claims() {
        let c = Config::parse(&[
            URL,
            "uid",
            "cafile=/etc/ssl/private-ca.pem",
            "connect_timeout=500ms",
            "timeout=2.5",
            "max_body=1M",
            "claim:timeout=30",
            "scope=a=b",
            "debug",
            "try_first_pass",
        ])
        .expect("parses");
        assert_eq!(
            c.cafile.as_deref(),
            Some(std::path::Path::new("/etc/ssl/private-ca.pem"))
        );
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.max_body, 1024 * 1024);
        assert!(c.debug);
        assert_eq!(c.claims.len(), 2);
        assert_eq!(c.claims[0].name, "timeout");
        assert_eq!(c.claims[0].value, "30");
        assert_eq!(c.claims[1].name, "scope");
        assert_eq!(c.claims[1].value, "a=b");
    }

    #[test]
    fn errors() {
        assert_eq!(Config::parse(&[URL]), Err(ConfigError::TooFewArguments));
        assert_eq!(
            Config::parse::<&str>(&[]),
            Err(ConfigError::TooFewArguments)
        );
        assert!(matches!(
            Config::parse(&["http://info.example.com/t?access_token=", "uid"]),
            Err(ConfigError::NotHttps(_))
        ));
        assert!(matches!(
            Config::parse(&["info.example.com", "uid"]),
            Err(ConfigError::NotHttps(_))
        ));
        assert!(matches!(
            Config::parse(&["https://", "uid"]),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            Config::parse(&[URL, "uid=x"]),
            Err(ConfigError::BadLoginField(_))
        ));
        assert!(matches!(
            Config::parse(&[URL, "uid", "bogus"]),
            Err(ConfigError::UnknownArgument(_))
        ));
        assert!(matches!(
            Config::parse(&[URL, "uid", "=x"]),
            Err(ConfigError::EmptyClaimName(_))
        ));
        assert!(matches!(
            Config::parse(&[URL, "uid", "timeout=1", "timeout=2"]),
            Err(ConfigError::Duplicate("timeout"))
        ));
        for bad in [
            "timeout=0",
            "timeout=-1",
            "timeout=abc",
            "timeout=301",
            "timeout=",
        ] {
            assert!(
                matches!(
                    Config::parse(&[URL, "uid", bad]),
                    Err(ConfigError::BadValue { .. })
                ),
                "{bad}"
            );
        }
        for bad in ["max_body=0", "max_body=17M", "max_body=1G", "max_body=x"] {
            assert!(
                matches!(
                    Config::parse(&[URL, "uid", bad]),
                    Err(ConfigError::BadValue { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Config::parse(&[URL, "uid", "cafile=relative.pem"]),
            Err(ConfigError::BadValue { .. })
        ));
    }

    #[test]
    fn pam_arguments_split_like_libpam() {
        let split = |text: &str| pam_arguments(text).expect("splits");
        assert_eq!(split("  a\tb  c "), ["a", "b", "c"]);
        assert_eq!(split(""), Vec::<String>::new());
        // A bracketed word keeps its spaces; "\]" is a literal ']'; the
        // word ends at the first other ']' and the next one starts there.
        assert_eq!(
            split("u [realm=a  b] [x=\\]y]z [] [open"),
            ["u", "realm=a  b", "x=]y", "z", "", "open"]
        );
        // A backslash elsewhere, and '[' inside a word, are plain text.
        assert_eq!(split("a\\b c[d]"), ["a\\b", "c[d]"]);
        assert_eq!(split("é ü=ß"), ["é", "ü=ß"]);

        assert_eq!(pam_arguments("u realm=a#b"), Err(ConfigError::Comment));
        assert_eq!(pam_arguments("u [realm=#]"), Err(ConfigError::Comment));
        assert_eq!(pam_arguments("u realm=a\\"), Err(ConfigError::Continuation));
        assert_eq!(
            pam_arguments("u realm=a\\ \t"),
            Err(ConfigError::Continuation)
        );
        assert_eq!(pam_arguments("u\nrealm=a"), Err(ConfigError::LineBreak));
        assert_eq!(pam_arguments("u\0"), Err(ConfigError::LineBreak));
    }

    #[test]
    fn parse_pam_arguments_is_parse_of_the_split() {
        let c = Config::parse_pam_arguments(&format!("{URL} uid [realm=/all staff] debug"))
            .expect("parses");
        assert_eq!(c.claims[0].value, "/all staff");
        assert!(c.debug);
        assert_eq!(
            Config::parse_pam_arguments(URL),
            Err(ConfigError::TooFewArguments)
        );
        assert!(matches!(
            Config::parse_pam_arguments(&format!("{URL} uid [realm=a b")),
            Ok(c) if c.claims[0].value == "a b"
        ));
    }

    #[test]
    fn https_is_case_insensitive() {
        assert!(Config::parse(&["HTTPS://info.example.com/t?a=", "uid"]).is_ok());
    }

    #[test]
    fn log_url_drops_secrets() {
        assert_eq!(
            url_for_log(
                "https://user:pw@info.example.com:8443/oauth2/tokeninfo?client_secret=s&access_token="
            ),
            "https://info.example.com:8443/oauth2/tokeninfo"
        );
        assert_eq!(url_for_log("https://h"), "https://h");
        let err = Config::parse(&["http://u:pw@h/x?secret=1", "uid"]).expect_err("http");
        assert!(!err.to_string().contains("secret"));
        assert!(!err.to_string().contains("pw"));
    }
}
