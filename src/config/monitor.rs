//! The monitor on port 8080 (bg_mon's place in Spilo): where it listens,
//! how often it samples, how much history it keeps, and whether query
//! text is served.

use std::net::IpAddr;
use std::time::Duration;

use super::env::{Vars, parse_bool, parse_port, set};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Monitor {
    pub(crate) listen: IpAddr,
    pub(crate) port: u16,
    pub(crate) naptime: Duration,
    /// One-minute buckets of history kept (0: none).
    pub(crate) history_buckets: u16,
    /// Whether statements are served (off: the process list keeps its
    /// states and waits, never the SQL).
    pub(crate) query_text: bool,
}

/// bg_mon's bounds: a sample every 1 to 10 s, at most a day of history.
const NAPTIME_SECONDS: std::ops::RangeInclusive<u64> = 1..=10;
const MAX_BUCKETS: u16 = 1440;
/// Spilo's history (bg_mon's own default is 20 minutes).
const DEFAULT_BUCKETS: u16 = 120;

impl Monitor {
    /// None when BGMON_ENABLED turns it off.
    pub(crate) fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        if set(&vars.bgmon_enabled).is_some() && !parse_bool("BGMON_ENABLED", &vars.bgmon_enabled)?
        {
            return Ok(None);
        }
        let listen = match set(&vars.bgmon_listen_ip) {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(raw) => raw.trim().parse().map_err(|_| {
                ConfigError::invalid("BGMON_LISTEN_IP", raw, "expected an IPv4 or IPv6 address")
            })?,
        };
        let naptime = match set(&vars.bgmon_naptime) {
            None => 1,
            Some(raw) => raw
                .trim()
                .trim_end_matches('s')
                .parse::<u64>()
                .ok()
                .filter(|n| NAPTIME_SECONDS.contains(n))
                .ok_or_else(|| {
                    ConfigError::invalid("BGMON_NAPTIME", raw, "expected 1 to 10 seconds")
                })?,
        };
        let history_buckets = match set(&vars.bgmon_history_buckets) {
            None => DEFAULT_BUCKETS,
            Some(raw) => raw
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n <= MAX_BUCKETS)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "BGMON_HISTORY_BUCKETS",
                        raw,
                        "expected 0 to 1440 one-minute buckets",
                    )
                })?,
        };
        let query_text = set(&vars.bgmon_query_text).is_none()
            || parse_bool("BGMON_QUERY_TEXT", &vars.bgmon_query_text)?;
        Ok(Some(Monitor {
            listen,
            port: parse_port("BGMON_PORT", &vars.bgmon_port, 8080)?,
            naptime: Duration::from_secs(naptime),
            history_buckets,
            query_text,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        envy::from_iter(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_spilos() {
        let monitor = Monitor::from_vars(&Vars::default()).unwrap().unwrap();
        assert_eq!(monitor.listen.to_string(), "0.0.0.0");
        assert_eq!(monitor.port, 8080);
        assert_eq!(monitor.naptime, Duration::from_secs(1));
        assert_eq!(monitor.history_buckets, 120);
        assert!(monitor.query_text);
    }

    #[test]
    fn settings_and_their_errors() {
        let monitor = Monitor::from_vars(&vars(&[
            ("BGMON_LISTEN_IP", "127.0.0.5"),
            ("BGMON_NAPTIME", "5s"),
            ("BGMON_HISTORY_BUCKETS", "0"),
            ("BGMON_QUERY_TEXT", "off"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(monitor.listen.to_string(), "127.0.0.5");
        assert_eq!(monitor.naptime, Duration::from_secs(5));
        assert_eq!(monitor.history_buckets, 0);
        assert!(!monitor.query_text);
        assert_eq!(
            Monitor::from_vars(&vars(&[("BGMON_ENABLED", "false")])).unwrap(),
            None
        );
        for (var, value) in [
            ("BGMON_LISTEN_IP", "localhost"),
            ("BGMON_NAPTIME", "0"),
            ("BGMON_NAPTIME", "11"),
            ("BGMON_HISTORY_BUCKETS", "1441"),
            ("BGMON_PORT", "http"),
            ("BGMON_QUERY_TEXT", "maybe"),
        ] {
            let error = Monitor::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert!(error.to_string().contains(var), "{error}");
        }
    }
}
