//! One sample of everything the monitor reads, before anything is derived
//! from it: the document (`snapshot`) and the metrics (`metrics`) are both
//! made from two of these.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

use super::cgroup::Cgroup;
use super::disk::Volume;
use super::host::Host;
use super::postgres::Sample;
use super::process::ProcStat;
use crate::backup::state::State;

/// The volumes in bg_mon's order.
pub const VOLUMES: [&str; 3] = ["data", "wal", "log"];

#[derive(Debug, Clone)]
pub struct Raw {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub clock: Instant,
    pub host: Host,
    pub cgroup: Option<Cgroup>,
    pub volumes: [Volume; 3],
    /// kB per volume's directory; 0 until first walked.
    pub sizes: [u64; 3],
    pub postgres: Result<Sample, String>,
    pub processes: BTreeMap<u32, ProcStat>,
    /// None: not asked (a TLS REST API), Some(Err): did not answer.
    pub patroni: Option<Result<Patroni, String>>,
    /// None: no backups configured; Some(None): no outcome yet.
    pub backup: Option<Option<State>>,
}

/// What Patroni's `GET /patroni` says of this member.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Patroni {
    pub state: String,
    pub role: String,
    #[serde(default)]
    pub pause: bool,
    #[serde(default)]
    pub pending_restart: bool,
}
