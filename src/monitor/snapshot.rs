//! bg_mon's document, made from two samples: the same keys, nesting and
//! units (kB, kB/s, percent, per second), so that what reads bg_mon reads
//! this. Rates need the previous sample; the first one reports them as 0.
//! spilo-rs adds keys of its own after bg_mon's (timeline, replication,
//! patroni), which readers of bg_mon ignore.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::disk::{DiskIo, Volume};
use super::host::{Host, NetCounters};
use super::postgres::{Activity, Sample};
use super::process::ProcStat;
use super::raw::{Raw, VOLUMES};

/// What stays the same between samples.
pub struct Facts {
    pub hostname: String,
    pub sysname: String,
    pub cpu_cores: usize,
    pub clock_ticks: u64,
    pub data_directory: String,
}

/// bg_mon's "no limit": about what cgroup v1 reports for none.
const NO_LIMIT_KB: u64 = 9_007_199_254_740_988;

pub fn document(facts: &Facts, now: &Raw, before: Option<&Raw>) -> Value {
    let seconds = before
        .map(|b| now.clock.duration_since(b.clock).as_secs_f64())
        .filter(|s| *s > 0.0);
    let rates = Rates { seconds };
    let mut doc = Map::new();
    doc.insert("hostname".into(), json!(facts.hostname));
    doc.insert("time".into(), json!(now.time_ms));
    doc.insert("sysname".into(), json!(facts.sysname));
    doc.insert("cpu_cores".into(), json!(facts.cpu_cores));
    let sample = now.postgres.as_ref().ok();
    let previous = before.and_then(|b| b.postgres.as_ref().ok());
    doc.insert(
        "postgresql".into(),
        postgresql(facts, now, sample, previous, &rates),
    );
    doc.insert(
        "system_stats".into(),
        system(&now.host, before.map(|b| &b.host), &rates),
    );
    if let Some(cgroup) = cgroup(now, before, &rates) {
        doc.insert("cgroup".into(), cgroup);
    }
    doc.insert("disk_stats".into(), disks(now, before, &rates));
    if let Some(sample) = sample {
        doc.insert("databases".into(), databases(sample, previous, &rates));
    }
    doc.insert(
        "net_stats".into(),
        net(&now.host, before.map(|b| &b.host), &rates),
    );
    doc.insert(
        "processes".into(),
        processes(facts, now, before, sample, &rates),
    );
    Value::Object(doc)
}

struct Rates {
    seconds: Option<f64>,
}

impl Rates {
    /// Per second between two counters (0 without a previous sample or
    /// when the counter went back).
    fn per_second(&self, now: u64, before: Option<u64>) -> f64 {
        match (self.seconds, before) {
            (Some(s), Some(b)) => now.saturating_sub(b) as f64 / s,
            _ => 0.0,
        }
    }

    fn whole(&self, now: u64, before: Option<u64>) -> u64 {
        self.per_second(now, before) as u64
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn postgresql(
    facts: &Facts,
    raw: &Raw,
    sample: Option<&Sample>,
    previous: Option<&Sample>,
    rates: &Rates,
) -> Value {
    let mut pg = Map::new();
    let Some(s) = sample else {
        pg.insert("data_directory".into(), json!(facts.data_directory));
        if let Err(e) = &raw.postgres {
            pg.insert("error".into(), json!(e));
        }
        return Value::Object(pg);
    };
    let kb = |now: Option<u64>, before: Option<Option<u64>>| {
        rates.whole(now.unwrap_or(0), before.flatten()) / 1024
    };
    pg.insert("version".into(), json!(s.version));
    pg.insert(
        "role".into(),
        json!(if s.in_recovery { "replica" } else { "master" }),
    );
    let wal = if s.in_recovery {
        json!({
            "replay_paused": s.replay_paused.unwrap_or(false),
            "replay_timestamp": s.replay_timestamp.map_or(946_684_800, |t| t as i64),
            "receive": kb(s.receive_lsn, previous.map(|p| p.receive_lsn)),
            "replay": kb(s.replay_lsn, previous.map(|p| p.replay_lsn)),
        })
    } else {
        json!({ "written": kb(s.lsn, previous.map(|p| p.lsn)) })
    };
    pg.insert("wal".into(), wal);
    pg.insert("data_directory".into(), json!(facts.data_directory));
    let with_db = s.activity.iter().filter(|a| a.datname.is_some());
    let state = |wanted: &[&str]| {
        s.activity
            .iter()
            .filter(|a| a.datname.is_some())
            .filter(|a| a.state.as_deref().is_some_and(|st| wanted.contains(&st)))
            .count()
    };
    pg.insert(
        "connections".into(),
        json!({
            "max": s.max_connections,
            // This monitor's own session counts, as bg_mon's does.
            "total": with_db.count() + 1,
            "idle_in_transaction": state(&["idle in transaction"]),
            "active": state(&["active", "idle in transaction"]),
        }),
    );
    pg.insert("start_time".into(), json!(s.start_time));
    pg.insert("timeline".into(), json!(s.timeline));
    pg.insert(
        "replication".into(),
        Value::Array(
            s.replication
                .iter()
                .map(|r| {
                    json!({
                        "application_name": r.application_name,
                        "client_addr": r.client_addr,
                        "state": r.state,
                        "sync_state": r.sync_state,
                        "lag": r.lag_bytes,
                        "replay_lag": r.replay_lag,
                    })
                })
                .collect(),
        ),
    );
    if let Some(Ok(patroni)) = &raw.patroni {
        pg.insert(
            "patroni".into(),
            json!({ "state": patroni.state, "role": patroni.role, "pause": patroni.pause }),
        );
    }
    Value::Object(pg)
}

fn system(host: &Host, before: Option<&Host>, rates: &Rates) -> Value {
    let cpu = match before {
        Some(b) if host.cpu.total() > b.cpu.total() => {
            let total = (host.cpu.total() - b.cpu.total()) as f64;
            let pct = |now: u64, was: u64| round(now.saturating_sub(was) as f64 * 100.0 / total, 1);
            json!({
                "user": pct(host.cpu.user, b.cpu.user),
                "nice": pct(host.cpu.nice, b.cpu.nice),
                "system": pct(host.cpu.system, b.cpu.system),
                "idle": pct(host.cpu.idle, b.cpu.idle),
                "iowait": pct(host.cpu.iowait, b.cpu.iowait),
                "steal": pct(host.cpu.steal, b.cpu.steal),
            })
        }
        _ => {
            json!({"user": 0.0, "nice": 0.0, "system": 0.0, "idle": 100.0, "iowait": 0.0, "steal": 0.0})
        }
    };
    let mut stats = Map::new();
    stats.insert("uptime".into(), json!(host.uptime as u64));
    stats.insert("load_average".into(), json!(host.load));
    stats.insert("cpu".into(), cpu);
    stats.insert(
        "ctxt".into(),
        json!(rates.whole(host.ctxt, before.map(|b| b.ctxt))),
    );
    stats.insert(
        "processes".into(),
        json!({ "running": host.running, "blocked": host.blocked }),
    );
    if let Some(p) = &host.pressure {
        let stall = |s: (f64, f64, f64, u64)| json!([s.0, s.1, s.2, s.3]);
        stats.insert(
            "pressure".into(),
            json!({
                "cpu": stall(p.cpu),
                "memory": { "some": stall(p.memory.0), "full": stall(p.memory.1) },
                "io": { "some": stall(p.io.0), "full": stall(p.io.1) },
            }),
        );
    }
    let m = &host.memory;
    stats.insert(
        "memory".into(),
        json!({ "total": m.total, "free": m.free, "buffers": m.buffers, "cached": m.cached, "dirty": m.dirty }),
    );
    Value::Object(stats)
}

fn cgroup(now: &Raw, before: Option<&Raw>, rates: &Rates) -> Option<Value> {
    let cgroup = now.cgroup?;
    let mut out = Map::new();
    if let Some(m) = cgroup.memory {
        out.insert(
            "memory".into(),
            json!({
                "limit": m.limit.map_or(NO_LIMIT_KB, |l| l / 1024),
                "usage": m.current.saturating_sub(m.inactive_file) / 1024,
                "rss": m.anon / 1024,
                "cache": m.file / 1024,
                "dirty": m.file_dirty / 1024,
                "oom_kill": m.oom_kill,
                "failcnt": m.oom,
            }),
        );
    }
    if let Some(c) = cgroup.cpu {
        let was = before.and_then(|b| b.cgroup).and_then(|g| g.cpu);
        // µs of CPU per second / 1000: thousandths of a core.
        let milli = |now: u64, was: Option<u64>| round(rates.per_second(now, was) / 1000.0, 1);
        out.insert(
            "cpu".into(),
            json!({
                "shares": c.shares,
                "quota": c.quota.map_or(-1, |(q, _)| q as i64),
                "user": milli(c.user_usec, was.map(|w| w.user_usec)),
                "system": milli(c.system_usec, was.map(|w| w.system_usec)),
            }),
        );
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn disks(now: &Raw, before: Option<&Raw>, rates: &Rates) -> Value {
    let mut out = Map::new();
    for (i, name) in VOLUMES.iter().enumerate() {
        let volume = &now.volumes[i];
        let was = before
            .map(|b| &b.volumes[i])
            .filter(|b| b.device == volume.device)
            .and_then(|b| b.io);
        out.insert(
            (*name).into(),
            json!({
                "device": {
                    "space": { "total": volume.total, "left": volume.left },
                    "name": volume.device,
                    "io": disk_io(volume, was, rates),
                },
                "directory": { "name": volume.directory.display().to_string(), "size": now.sizes[i] },
            }),
        );
    }
    Value::Object(out)
}

fn disk_io(volume: &Volume, was: Option<DiskIo>, rates: &Rates) -> Value {
    let now = volume.io.unwrap_or_default();
    let r = |f: fn(&DiskIo) -> u64| round(rates.per_second(f(&now), was.as_ref().map(f)), 2);
    let per_request = |ms: f64, requests: f64| {
        if requests > 0.0 {
            round(ms / requests, 2)
        } else {
            0.0
        }
    };
    let (reads, writes) = (r(|d| d.reads), r(|d| d.writes));
    let (read_ms, write_ms) = (r(|d| d.read_ms), r(|d| d.write_ms));
    json!({
        "read": round(r(|d| d.read_sectors) / 2.0, 2),
        "reads_ps": reads,
        "write": round(r(|d| d.write_sectors) / 2.0, 2),
        "writes_ps": writes,
        "read_merges": r(|d| d.read_merges),
        "write_merges": r(|d| d.write_merges),
        "average_queue_length": round(r(|d| d.weighted_ms) / 1000.0, 2),
        "util": round((r(|d| d.io_ms) / 10.0).min(100.0), 2),
        "await": per_request(read_ms + write_ms, reads + writes),
        "read_await": per_request(read_ms, reads),
        "write_await": per_request(write_ms, writes),
    })
}

fn databases(sample: &Sample, previous: Option<&Sample>, rates: &Rates) -> Value {
    let mut out = Map::new();
    for (name, d) in &sample.databases {
        let was = previous.and_then(|p| p.databases.get(name));
        let r = |f: fn(&super::postgres::Database) -> u64| rates.whole(f(d), was.map(f));
        let mut db = Map::new();
        db.insert(
            "xact".into(),
            json!({ "commit": r(|d| d.xact_commit), "rollback": r(|d| d.xact_rollback) }),
        );
        db.insert(
            "blocks".into(),
            json!({ "fetched": r(|d| d.blks_read + d.blks_hit), "hit": r(|d| d.blks_hit) }),
        );
        db.insert(
            "tuples".into(),
            json!({
                "returned": r(|d| d.tup_returned),
                "fetched": r(|d| d.tup_fetched),
                "updated": r(|d| d.tup_updated),
                "inserted": r(|d| d.tup_inserted),
                "deleted": r(|d| d.tup_deleted),
            }),
        );
        db.insert(
            "temp".into(),
            json!({ "files": r(|d| d.temp_files), "bytes": r(|d| d.temp_bytes) }),
        );
        if let Some(c) = &d.conflicts {
            db.insert(
                "conflict".into(),
                json!({
                    "tablespace": c.tablespace, "lock": c.lock, "snapshot": c.snapshot,
                    "bufferpin": c.bufferpin, "startup_deadlock": c.startup_deadlock,
                }),
            );
        }
        db.insert("deadlocks".into(), json!(d.deadlocks));
        out.insert(name.clone(), Value::Object(db));
    }
    Value::Object(out)
}

fn net(host: &Host, before: Option<&Host>, rates: &Rates) -> Value {
    let mut out = Map::new();
    for (name, now) in &host.net {
        let Some(was) = before.and_then(|b| b.net.iter().find(|(n, _)| n == name).map(|(_, c)| c))
        else {
            continue;
        };
        let r = |f: fn(&NetCounters) -> u64| rates.per_second(f(now), Some(f(was)));
        let (rx, tx) = (r(|c| c.rx_bytes), r(|c| c.tx_bytes));
        let (rx_util, tx_util, util) = match now.speed {
            Some((mbit, full)) => {
                let capacity = mbit as f64 * 1_000_000.0 / 8.0;
                let (rx_u, tx_u) = (rx * 100.0 / capacity, tx * 100.0 / capacity);
                let util = if full { rx_u.max(tx_u) } else { rx_u + tx_u };
                (rx_u, tx_u, util.min(100.0))
            }
            None => (0.0, 0.0, 0.0),
        };
        out.insert(
            name.clone(),
            json!({
                "rx_kbytes": round(rx / 1024.0, 2),
                "rx_packets": round(r(|c| c.rx_packets), 2),
                "rx_errors": round(r(|c| c.rx_errors), 2),
                "rx_util": round(rx_util, 2),
                "tx_kbytes": round(tx / 1024.0, 2),
                "tx_packets": round(r(|c| c.tx_packets), 2),
                "tx_errors": round(r(|c| c.tx_errors), 2),
                "tx_util": round(tx_util, 2),
                "util": round(util, 2),
                "saturation": round(
                    r(|c| c.rx_errors + c.rx_drop + c.tx_drop + c.tx_fifo + c.collisions + c.tx_carrier),
                    2,
                ),
                "collisions": round(r(|c| c.collisions), 2),
            }),
        );
    }
    Value::Object(out)
}

/// bg_mon's name for a backend type.
fn kind(backend_type: &str) -> &str {
    match backend_type {
        "client backend" => "backend",
        "background writer" => "bgwriter",
        other => other,
    }
}

fn processes(
    facts: &Facts,
    now: &Raw,
    before: Option<&Raw>,
    sample: Option<&Sample>,
    rates: &Rates,
) -> Value {
    let activity: BTreeMap<u32, &Activity> = sample
        .map(|s| s.activity.iter().map(|a| (a.pid, a)).collect())
        .unwrap_or_default();
    let blockers: BTreeSet<u32> = activity
        .values()
        .flat_map(|a| a.blocked_by.iter().flatten().copied())
        .collect();
    let own = sample.map(|s| s.my_pid);
    let pids: BTreeSet<u32> = activity
        .keys()
        .chain(now.processes.keys())
        .copied()
        .filter(|pid| Some(*pid) != own)
        .collect();
    let mut out = Vec::new();
    for pid in pids {
        let a = activity.get(&pid).copied();
        let p = now.processes.get(&pid);
        let title = p.map_or("", |p| p.title.as_str());
        let Some(kind) = a
            .map(|a| kind(&a.backend_type).to_owned())
            .or_else(|| (title == "logger").then(|| "syslogger".to_owned()))
        else {
            continue;
        };
        let client = kind == "backend";
        let state = a.and_then(|a| a.state.as_deref());
        if client && !matches!(state, Some(s) if s != "idle") && !blockers.contains(&pid) {
            continue;
        }
        let was = p.and_then(|p| {
            before
                .and_then(|b| b.processes.get(&pid))
                .filter(|w| w.starttime == p.starttime)
        });
        let mut row = kernel_columns(facts, pid, &kind, p, was, rates);
        if let Some(a) = a {
            session_columns(&mut row, pid, &kind, a, title, &activity);
        }
        out.push(Value::Object(row));
    }
    Value::Array(out)
}

/// What the kernel says of a process: bg_mon's first columns.
fn kernel_columns(
    facts: &Facts,
    pid: u32,
    kind: &str,
    p: Option<&ProcStat>,
    was: Option<&ProcStat>,
    rates: &Rates,
) -> Map<String, Value> {
    let stat = p.cloned().unwrap_or_default();
    let ticks = facts.clock_ticks.max(1) as f64;
    let cpu = |f: fn(&ProcStat) -> u64| {
        round(
            (rates.per_second(f(&stat), was.map(f)) * 100.0 / ticks).min(100.0),
            1,
        )
    };
    let mut row = Map::new();
    row.insert("pid".into(), json!(pid));
    row.insert("type".into(), json!(kind));
    row.insert(
        "state".into(),
        json!(p.map_or('S', |p| p.state).to_string()),
    );
    row.insert(
        "cpu".into(),
        json!({ "user": cpu(|s| s.utime), "system": cpu(|s| s.stime), "guest": cpu(|s| s.guest) }),
    );
    row.insert(
        "io".into(),
        json!({
            "read": rates.whole(stat.read_bytes, was.map(|w| w.read_bytes)) / 1024,
            "write": rates.whole(stat.write_bytes, was.map(|w| w.write_bytes)) / 1024,
        }),
    );
    row.insert("uss".into(), json!(stat.uss));
    row
}

/// What pg_stat_activity says of it.
fn session_columns(
    row: &mut Map<String, Value>,
    pid: u32,
    kind: &str,
    a: &Activity,
    title: &str,
    activity: &BTreeMap<u32, &Activity>,
) {
    if let Some(leader) = a.leader_pid.filter(|l| *l != pid) {
        row.insert("parent_pid".into(), json!(leader));
    }
    let sessions = matches!(kind, "backend" | "autovacuum worker" | "parallel worker");
    if sessions {
        let mut blockers: Vec<u32> = Vec::new();
        for blocker in a.blocked_by.iter().flatten() {
            if *blocker != 0 && activity.contains_key(blocker) && !blockers.contains(blocker) {
                blockers.push(*blocker);
            }
        }
        if !blockers.is_empty() {
            row.insert("locked_by".into(), json!(blockers));
        }
        let age = a.xact_age.or_else(|| {
            (a.state.as_deref() == Some("active"))
                .then_some(a.query_age)
                .flatten()
        });
        if let Some(age) = age {
            row.insert("age".into(), json!(seconds(age)));
        }
    }
    if a.datname.is_some() || kind == "backend" {
        row.insert("database".into(), json!(a.datname));
    }
    if a.usename.is_some() || kind == "backend" {
        row.insert("username".into(), json!(a.usename));
    }
    if let (Some(t), Some(e)) = (&a.wait_event_type, &a.wait_event) {
        row.insert("wait_event_type".into(), json!(t));
        row.insert("wait_event".into(), json!(e));
    }
    let (query, idle) = query(kind, a, title);
    if let Some(query) = query {
        row.insert("query".into(), json!(query));
    }
    if let Some(idle) = idle {
        row.insert("idle_in_transaction".into(), json!(seconds(idle)));
    }
}

/// bg_mon's precision: two significant digits below 10 s, whole seconds
/// above.
fn seconds(value: f64) -> Value {
    if value < 10.0 {
        let digits = if value < 1.0 { 2 } else { 1 };
        json!(round(value, digits))
    } else {
        json!(value as u64)
    }
}

/// What the `query` column shows, and the idle time of an idle
/// transaction.
fn query(kind: &str, a: &Activity, title: &str) -> (Option<String>, Option<f64>) {
    // The rest of the process title says what these are doing.
    let from_title = |skip: usize| {
        let rest: Vec<&str> = title.split_whitespace().skip(skip).collect();
        (!rest.is_empty()).then(|| rest.join(" "))
    };
    match kind {
        "walsender" => return (from_title(2), None),
        "walreceiver" | "startup" | "archiver" => return (from_title(1), None),
        _ => {}
    }
    let sql = a.query.clone().filter(|q| !q.is_empty());
    match a.state.as_deref() {
        Some("idle") => (sql.or_else(|| Some("idle".into())), None),
        Some("active") => (sql, None),
        // Idle after a statement of the transaction: the statement and
        // how long it has been idle.
        Some("idle in transaction") => match a.idle_age {
            Some(idle) => (sql, Some(idle)),
            None => (Some("idle in transaction".into()), None),
        },
        Some("idle in transaction (aborted)") => {
            (Some("idle in transaction (aborted)".into()), None)
        }
        Some("fastpath function call") => (Some("fastpath function call".into()), None),
        Some("disabled") => (Some("disabled".into()), None),
        _ => (sql, None),
    }
}

/// `Linux: <release>` and the host name, from uname.
pub fn facts(data_directory: &Path, cpu_cores: usize, clock_ticks: u64) -> Facts {
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Facts {
        hostname: field(|u| u.nodename()),
        sysname: format!("Linux: {}", field(|u| u.release())),
        cpu_cores,
        clock_ticks,
        data_directory: data_directory.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::monitor::raw::example;

    fn facts() -> Facts {
        Facts {
            hostname: "pod-0".into(),
            sysname: "Linux: 6.1".into(),
            cpu_cores: 2,
            clock_ticks: 100,
            data_directory: "/home/postgres/pgdata/pgroot/pgdata".into(),
        }
    }

    #[test]
    fn bg_mons_keys_rates_and_processes() {
        let clock = Instant::now();
        let before = example(1_000, clock, 100);
        let now = example(3_000, clock + Duration::from_secs(2), 300);
        let doc = document(&facts(), &now, Some(&before));
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "hostname",
                "time",
                "sysname",
                "cpu_cores",
                "postgresql",
                "system_stats",
                "disk_stats",
                "databases",
                "net_stats",
                "processes"
            ]
        );
        let pg = &doc["postgresql"];
        assert_eq!(pg["role"], "master");
        // 200 commits × 8 kB of WAL in 2 s.
        assert_eq!(pg["wal"]["written"], 800);
        assert_eq!(
            pg["connections"],
            json!({"max": 100, "total": 4, "idle_in_transaction": 1, "active": 2})
        );
        assert_eq!(doc["databases"]["postgres"]["xact"]["commit"], 100);
        let processes = doc["processes"].as_array().unwrap();
        // The idle session is left out; the idle blocker and the waiter
        // are not.
        let pids: Vec<u64> = processes
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        assert_eq!(pids, [10, 11, 20]);
        let holder = &processes[0];
        assert_eq!(holder["idle_in_transaction"].as_f64(), Some(8.0));
        assert_eq!(holder["query"], "UPDATE t SET x = 2");
        // 200 ticks in 2 s at 100 ticks a second: a whole core.
        assert_eq!(holder["cpu"]["user"], 100.0);
        let waiter = &processes[1];
        assert_eq!(waiter["locked_by"], json!([10]));
        assert_eq!(waiter["age"], 12);
        assert_eq!(waiter["wait_event"], "transactionid");
        assert_eq!(processes[2]["type"], "checkpointer");
        assert!(processes[2].get("query").is_none());
        // Without a previous sample every rate is 0.
        let first = document(&facts(), &now, None);
        assert_eq!(first["postgresql"]["wal"]["written"], 0);
    }

    #[test]
    fn an_unreachable_server_keeps_the_rest() {
        let mut raw = example(1_000, Instant::now(), 1);
        raw.postgres = Err("no socket".into());
        let doc = document(&facts(), &raw, None);
        assert_eq!(doc["postgresql"]["error"], "no socket");
        assert!(doc.get("databases").is_none());
        assert!(doc["processes"].as_array().unwrap().is_empty());
    }
}
