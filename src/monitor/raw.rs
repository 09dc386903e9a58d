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

#[derive(Debug)]
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

/// A primary with two client sessions, one waiting for the other, and a
/// replica streaming from it: what the document's and the metrics' tests
/// start from.
#[cfg(test)]
pub fn example(time_ms: i64, clock: Instant, commits: u64) -> Raw {
    use super::postgres::{Activity, Database, Replica};
    let session = |pid: u32, state: &str, query: &str| Activity {
        pid,
        backend_type: "client backend".into(),
        datname: Some("postgres".into()),
        usename: Some("app".into()),
        state: Some(state.into()),
        query: Some(query.into()),
        xact_age: Some(12.5),
        query_age: Some(3.0),
        ..Activity::default()
    };
    let mut waiting = session(11, "active", "UPDATE t SET x = 1");
    waiting.wait_event_type = Some("Lock".into());
    waiting.wait_event = Some("transactionid".into());
    waiting.blocked_by = Some(vec![10, 0]);
    let mut holder = session(10, "idle in transaction", "UPDATE t SET x = 2");
    holder.idle_age = Some(8.0);
    let sample = Sample {
        version: "17.2".into(),
        max_connections: 100,
        timeline: Some(3),
        lsn: Some(commits * 8192),
        my_pid: 99,
        activity: vec![
            holder,
            waiting,
            session(12, "idle", "SELECT 1"),
            Activity {
                pid: 20,
                backend_type: "checkpointer".into(),
                ..Activity::default()
            },
        ],
        databases: [(
            "postgres".to_owned(),
            Database {
                xact_commit: commits,
                ..Database::default()
            },
        )]
        .into(),
        replication: vec![Replica {
            application_name: "node-2".into(),
            client_addr: Some("10.0.0.2".into()),
            state: Some("streaming".into()),
            sync_state: Some("async".into()),
            lag_bytes: Some(4096),
            replay_lag: Some(0.5),
        }],
        ..Sample::default()
    };
    let stat = |utime: u64| ProcStat {
        state: 'S',
        utime,
        starttime: 7,
        uss: 2048,
        ..ProcStat::default()
    };
    Raw {
        time_ms,
        clock,
        host: Host::default(),
        cgroup: None,
        volumes: Default::default(),
        sizes: [1, 2, 3],
        postgres: Ok(sample),
        processes: [(10, stat(commits)), (11, stat(0)), (20, stat(0))].into(),
        patroni: Some(Ok(Patroni {
            state: "running".into(),
            role: "primary".into(),
            ..Patroni::default()
        })),
        backup: None,
    }
}
