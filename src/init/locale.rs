//! The locale a new cluster's initdb gets (`INITDB_LOCALE`, as
//! `<locale>.UTF-8`) must exist on this system: otherwise initdb fails at
//! every one of Patroni's tries, the reason deep in its traceback. Checked
//! before anything starts, with the C library initdb uses.

use std::ffi::CString;
use std::process::Command;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
#[error(
    "INITDB_LOCALE={given}: the locale {locale} is not installed here (available: {available})"
)]
pub struct LocaleError {
    given: String,
    locale: String,
    available: String,
}

/// Checks the locale when this start runs initdb: no data yet, no clone,
/// restore or standby (those bring the source's), and no initdb options
/// of the user's (which name their own).
pub(crate) fn check(config: &Config) -> Result<(), LocaleError> {
    let copies =
        config.restore.is_some() || config.basebackup_clone.is_some() || config.standby.is_some();
    let users_initdb = config
        .user
        .get("bootstrap")
        .and_then(|b| b.get("initdb"))
        .is_some();
    if copies || users_initdb || config.paths.pgdata.join("PG_VERSION").exists() {
        return Ok(());
    }
    let locale = format!("{}.UTF-8", config.initdb_locale);
    if installed(&locale) {
        return Ok(());
    }
    Err(LocaleError {
        given: config.initdb_locale.clone(),
        locale,
        available: available(),
    })
}

/// Whether the C library can load `locale` for every category.
fn installed(locale: &str) -> bool {
    let Ok(name) = CString::new(locale) else {
        return false;
    };
    // SAFETY: newlocale reads the NUL-terminated name and returns a new
    // locale object or null; a base of null asks for a fresh one. The
    // object is freed right here and never used otherwise.
    unsafe {
        let handle =
            nix::libc::newlocale(nix::libc::LC_ALL_MASK, name.as_ptr(), std::ptr::null_mut());
        if handle.is_null() {
            return false;
        }
        nix::libc::freelocale(handle);
    }
    true
}

/// What `locale -a` lists, or why it cannot tell.
fn available() -> String {
    match Command::new("locale").arg("-a").output() {
        Ok(out) if out.status.success() => {
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        }
        _ => "`locale -a` cannot tell".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::config_on;

    #[test]
    fn c_is_always_there_and_nonsense_never() {
        assert!(installed("C.UTF-8"));
        assert!(!installed("xx_NOWHERE.UTF-8"));
        assert!(!installed("bad\0name"));
    }

    #[test]
    fn a_missing_locale_is_named_with_what_is_there() {
        let (_dir, config) = config_on(
            crate::config::System::default(),
            &[("INITDB_LOCALE", "xx_NOWHERE")],
        );
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "INITDB_LOCALE=xx_NOWHERE: the locale xx_NOWHERE.UTF-8 is not installed here (available: "
            ) && err.contains("C.utf8"),
            "{err}"
        );
        let (_dir, config) = config_on(crate::config::System::default(), &[("INITDB_LOCALE", "C")]);
        assert!(check(&config).is_ok());
        // A standby copies its source's locale; a user's initdb names its own.
        for extra in [
            ("STANDBY_HOST", "acid-source"),
            (
                "SPILO_CONFIGURATION",
                "{bootstrap: {initdb: [{locale: C.UTF-8}]}}",
            ),
        ] {
            let (_dir, config) = config_on(
                crate::config::System::default(),
                &[("INITDB_LOCALE", "xx_NOWHERE"), extra],
            );
            assert!(check(&config).is_ok(), "{extra:?}");
        }
    }
}
