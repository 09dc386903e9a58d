//! The one query a sample costs: PostgreSQL's own view of itself (role,
//! WAL positions, sessions with their waits and blockers, database
//! counters, replication, archiving) as a single JSON value, read over
//! the local socket as the monitoring role.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::pgwire::{Connection, WireError};

/// The role the hooks create (image/sql/roles.sql): it may read every
/// session's statistics (pg_read_all_stats) and nothing else.
pub const ROLE: &str = "spilo_monitor";

/// Every read and write of the session, and the statement, is bounded:
/// a stuck server costs one sample, never the monitor.
const TIMEOUT: Duration = Duration::from_secs(3);
const OPTIONS: &str = "-c statement_timeout=2000 -c lock_timeout=1000 -c search_path=pg_catalog \
                       -c idle_in_transaction_session_timeout=0 -c jit=off";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Sample {
    pub version: String,
    pub in_recovery: bool,
    pub max_connections: u64,
    pub start_time: i64,
    pub timeline: Option<u64>,
    /// Bytes since 0/0.
    pub lsn: Option<u64>,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub replay_paused: Option<bool>,
    pub replay_timestamp: Option<f64>,
    pub my_pid: u32,
    #[serde(default)]
    pub activity: Vec<Activity>,
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    #[serde(default)]
    pub replication: Vec<Replica>,
    pub archiver: Option<Archiver>,
}

/// One row of pg_stat_activity (ages in seconds).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Activity {
    pub pid: u32,
    pub backend_type: String,
    pub datname: Option<String>,
    pub usename: Option<String>,
    pub state: Option<String>,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    pub query: Option<String>,
    pub xact_age: Option<f64>,
    pub query_age: Option<f64>,
    /// Idle after a statement of its transaction, this long.
    pub idle_age: Option<f64>,
    pub leader_pid: Option<u32>,
    pub blocked_by: Option<Vec<u32>>,
}

/// pg_stat_database's counters (and, on a replica, its conflicts).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Database {
    pub xact_commit: u64,
    pub xact_rollback: u64,
    pub blks_read: u64,
    pub blks_hit: u64,
    pub tup_returned: u64,
    pub tup_fetched: u64,
    pub tup_inserted: u64,
    pub tup_updated: u64,
    pub tup_deleted: u64,
    pub temp_files: u64,
    pub temp_bytes: u64,
    pub deadlocks: u64,
    pub conflicts: Option<Conflicts>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Conflicts {
    pub tablespace: u64,
    pub lock: u64,
    pub snapshot: u64,
    pub bufferpin: u64,
    pub startup_deadlock: u64,
}

/// A standby this server streams to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Replica {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub lag_bytes: Option<u64>,
    pub replay_lag: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Archiver {
    pub archived_count: u64,
    pub failed_count: u64,
    pub last_archived_time: Option<f64>,
    pub last_failed_time: Option<f64>,
}

/// The statement; `query_text` false leaves the SQL of sessions out on the
/// server side already.
pub fn statement(query_text: bool) -> String {
    let query = if query_text { "a.query" } else { "NULL::text" };
    format!(
        r#"SELECT json_build_object(
  'version', current_setting('server_version'),
  'in_recovery', pg_is_in_recovery(),
  'max_connections', current_setting('max_connections')::int,
  'start_time', extract(epoch FROM pg_postmaster_start_time())::bigint,
  'timeline', CASE WHEN pg_is_in_recovery()
      THEN (SELECT received_tli FROM pg_stat_wal_receiver)
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
  'lsn', CASE WHEN NOT pg_is_in_recovery() THEN (pg_current_wal_lsn() - '0/0')::bigint END,
  'receive_lsn', (pg_last_wal_receive_lsn() - '0/0')::bigint,
  'replay_lsn', (pg_last_wal_replay_lsn() - '0/0')::bigint,
  'replay_paused', CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
  'replay_timestamp', extract(epoch FROM pg_last_xact_replay_timestamp()),
  'my_pid', pg_backend_pid(),
  'activity', (SELECT coalesce(json_agg(json_build_object(
      'pid', a.pid, 'backend_type', a.backend_type, 'datname', a.datname, 'usename', a.usename,
      'state', a.state, 'wait_event_type', a.wait_event_type, 'wait_event', a.wait_event,
      'query', {query},
      'xact_age', extract(epoch FROM clock_timestamp() - a.xact_start),
      'query_age', extract(epoch FROM clock_timestamp() - a.query_start),
      'idle_age', CASE WHEN a.state = 'idle in transaction' AND a.state_change > a.xact_start
          THEN extract(epoch FROM clock_timestamp() - a.state_change) END,
      'leader_pid', a.leader_pid,
      'blocked_by', CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END)), '[]')
    FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid()),
  'databases', (SELECT coalesce(json_object_agg(d.datname, json_build_object(
      'xact_commit', d.xact_commit, 'xact_rollback', d.xact_rollback,
      'blks_read', d.blks_read, 'blks_hit', d.blks_hit,
      'tup_returned', d.tup_returned, 'tup_fetched', d.tup_fetched,
      'tup_inserted', d.tup_inserted, 'tup_updated', d.tup_updated, 'tup_deleted', d.tup_deleted,
      'temp_files', d.temp_files, 'temp_bytes', d.temp_bytes, 'deadlocks', d.deadlocks,
      'conflicts', CASE WHEN pg_is_in_recovery() THEN (SELECT json_build_object(
          'tablespace', c.confl_tablespace, 'lock', c.confl_lock, 'snapshot', c.confl_snapshot,
          'bufferpin', c.confl_bufferpin, 'startup_deadlock', c.confl_deadlock)
        FROM pg_stat_database_conflicts c WHERE c.datid = d.datid) END)), '{{}}')
    FROM pg_stat_database d WHERE d.datname IS NOT NULL),
  'replication', (SELECT coalesce(json_agg(json_build_object(
      'application_name', r.application_name, 'client_addr', host(r.client_addr),
      'state', r.state, 'sync_state', r.sync_state,
      'lag_bytes', CASE WHEN NOT pg_is_in_recovery()
          THEN greatest(pg_current_wal_lsn() - r.replay_lsn, 0)::bigint END,
      'replay_lag', extract(epoch FROM r.replay_lag)) ORDER BY r.application_name), '[]')
    FROM pg_stat_replication r),
  'archiver', (SELECT json_build_object(
      'archived_count', s.archived_count, 'failed_count', s.failed_count,
      'last_archived_time', extract(epoch FROM s.last_archived_time),
      'last_failed_time', extract(epoch FROM s.last_failed_time))
    FROM pg_stat_archiver s))"#
    )
}

/// A session kept open across samples, opened again after a failure:
/// at the next sample when there is no server to reach, with a growing
/// pause after a refusal (a replica waits for the primary to make the
/// role; every refusal is a line in the server log).
pub struct Session {
    socket: std::path::PathBuf,
    statement: String,
    connection: Option<Connection>,
    retry: Option<(Instant, Duration)>,
    last_refusal: String,
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("unexpected answer: {0}")]
    Answer(String),
    #[error("{0} (trying again in {1} s)")]
    Waiting(String, u64),
}

impl Session {
    pub fn new(socket_dir: &Path, port: u16, query_text: bool) -> Self {
        Session {
            socket: socket_dir.join(format!(".s.PGSQL.{port}")),
            statement: statement(query_text),
            connection: None,
            retry: None,
            last_refusal: String::new(),
        }
    }

    pub fn sample(&mut self) -> Result<Sample, SampleError> {
        let connection = match &mut self.connection {
            Some(c) => c,
            None => {
                if let Some((at, _)) = self.retry.filter(|(at, _)| Instant::now() < *at) {
                    let wait = at.saturating_duration_since(Instant::now()).as_secs();
                    return Err(SampleError::Waiting(self.last_refusal.clone(), wait));
                }
                match Connection::open(&self.socket, ROLE, "postgres", OPTIONS, TIMEOUT) {
                    Ok(c) => {
                        self.retry = None;
                        self.connection.insert(c)
                    }
                    // No server yet (starting, stopped): asked again at
                    // the next sample.
                    Err(e) if e.not_yet() => return Err(e.into()),
                    Err(e) => {
                        let delay = self
                            .retry
                            .map_or(FIRST_RETRY, |(_, d)| (d * 2).min(LAST_RETRY));
                        self.retry = Some((Instant::now() + delay, delay));
                        self.last_refusal = e.to_string();
                        return Err(e.into());
                    }
                }
            }
        };
        let answer = connection.query(&self.statement);
        let rows = match answer {
            Ok(rows) => rows,
            Err(e) => {
                // A broken session is not reused; a statement error (a
                // timeout) leaves it usable, but a fresh one costs little.
                self.connection = None;
                return Err(e.into());
            }
        };
        let text = rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| SampleError::Answer("no row".into()))?;
        serde_json::from_str(&text).map_err(|e| SampleError::Answer(e.to_string()))
    }
}
