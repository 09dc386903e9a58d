//! What the server says before the hooks change anything: which databases
//! get the helpers, whether pg_cron is there, whether a promoted server
//! accepts writes yet.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::HookError;
use super::psql::Psql;

const QUERY: &str = include_str!("../../../image/sql/facts.sql");

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Facts {
    pub(crate) in_recovery: bool,
    /// Every database that takes connections, template1 included.
    pub(crate) databases: Vec<String>,
    /// Where pg_cron's scheduler reads its jobs; None when the major lacks
    /// pg_cron or the server does not preload it.
    pub(crate) cron_database: Option<String>,
}

impl Facts {
    pub(crate) fn read(psql: &Psql) -> Result<Facts, HookError> {
        let answer = psql.value("the server's facts", QUERY)?;
        serde_json::from_str(&answer).map_err(|source| HookError::Facts { answer, source })
    }

    /// Right after a promotion the server may still be in recovery, or
    /// briefly refuse connections: asks again each second until it takes
    /// writes, for at most `within`.
    pub(crate) fn when_writable(psql: &Psql, within: Duration) -> Result<Facts, HookError> {
        let started = Instant::now();
        loop {
            let last = match Facts::read(psql) {
                Ok(facts) if !facts.in_recovery => return Ok(facts),
                Ok(_) => HookError::InRecovery(within),
                // psql itself cannot run: asking again cannot help.
                Err(e @ HookError::Run { .. }) => return Err(e),
                Err(e) => e,
            };
            if started.elapsed() >= within {
                return Err(last);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
