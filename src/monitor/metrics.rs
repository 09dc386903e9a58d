//! `/metrics`: the same samples in Prometheus' text format. Counters are
//! PostgreSQL's and the kernel's own (Prometheus derives the rates); names
//! are `spilo_*` with base units (bytes, seconds).

use std::fmt::Write;

use super::raw::{Raw, VOLUMES};

/// One family: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

fn family<'a>(out: &'a mut String, name: &'a str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    Family { out, name }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The exposition of one sample; `now` is the unix time in seconds.
pub fn render(raw: &Raw, now: f64) -> String {
    let mut out = String::new();
    let pg = raw.postgres.as_ref().ok();
    family(
        &mut out,
        "spilo_postgres_up",
        "gauge",
        "Whether the last sample reached PostgreSQL.",
    )
    .sample(&[], f64::from(u8::from(pg.is_some())));
    if let Some(s) = pg {
        postgres(&mut out, s, now);
    }
    patroni(&mut out, raw);
    backup(&mut out, raw, now);
    volumes(&mut out, raw);
    cgroup(&mut out, raw);
    out
}

fn postgres(out: &mut String, s: &super::postgres::Sample, now: f64) {
    let role = if s.in_recovery { "replica" } else { "primary" };
    family(
        out,
        "spilo_postgres_info",
        "gauge",
        "The server's version and role.",
    )
    .sample(&[("version", &s.version), ("role", role)], 1.0);
    family(
        out,
        "spilo_postgres_in_recovery",
        "gauge",
        "1 on a replica, 0 on the primary.",
    )
    .sample(&[], f64::from(u8::from(s.in_recovery)));
    if let Some(timeline) = s.timeline {
        family(
            out,
            "spilo_postgres_timeline",
            "gauge",
            "The timeline the server is on.",
        )
        .sample(&[], timeline as f64);
    }
    family(
        out,
        "spilo_postgres_start_time_seconds",
        "gauge",
        "When the postmaster started.",
    )
    .sample(&[], s.start_time as f64);
    let mut states: Vec<(String, u64)> = Vec::new();
    for a in s
        .activity
        .iter()
        .filter(|a| a.backend_type == "client backend")
    {
        let state = a.state.clone().unwrap_or_else(|| "unknown".into());
        match states.iter_mut().find(|(st, _)| *st == state) {
            Some((_, n)) => *n += 1,
            None => states.push((state, 1)),
        }
    }
    states.sort();
    let mut f = family(
        out,
        "spilo_postgres_connections",
        "gauge",
        "Client sessions by state.",
    );
    for (state, n) in &states {
        f.sample(&[("state", state)], *n as f64);
    }
    family(
        out,
        "spilo_postgres_max_connections",
        "gauge",
        "max_connections.",
    )
    .sample(&[], s.max_connections as f64);
    if let Some(lsn) = s.lsn {
        family(
            out,
            "spilo_postgres_wal_written_bytes_total",
            "counter",
            "WAL written since 0/0 (the current LSN).",
        )
        .sample(&[], lsn as f64);
    }
    if let Some(received) = s.receive_lsn {
        family(
            out,
            "spilo_postgres_wal_received_bytes_total",
            "counter",
            "WAL received since 0/0.",
        )
        .sample(&[], received as f64);
    }
    if let (Some(received), Some(replayed)) = (s.receive_lsn, s.replay_lsn) {
        family(
            out,
            "spilo_postgres_replay_lag_bytes",
            "gauge",
            "WAL received but not yet replayed.",
        )
        .sample(&[], received.saturating_sub(replayed) as f64);
    }
    if let Some(at) = s.replay_timestamp.filter(|_| s.in_recovery) {
        family(
            out,
            "spilo_postgres_last_replay_timestamp_seconds",
            "gauge",
            "Commit time of the last replayed transaction.",
        )
        .sample(&[], at);
    }
    replication(out, s);
    databases(out, s);
    if let Some(a) = &s.archiver {
        family(
            out,
            "spilo_postgres_wal_archived_total",
            "counter",
            "WAL files archived.",
        )
        .sample(&[], a.archived_count as f64);
        family(
            out,
            "spilo_postgres_wal_archive_failures_total",
            "counter",
            "Failed attempts to archive a WAL file.",
        )
        .sample(&[], a.failed_count as f64);
        if let Some(t) = a.last_archived_time {
            family(
                out,
                "spilo_postgres_wal_last_archived_timestamp_seconds",
                "gauge",
                "When a WAL file was last archived.",
            )
            .sample(&[], t);
            family(
                out,
                "spilo_postgres_wal_last_archived_age_seconds",
                "gauge",
                "Seconds since a WAL file was last archived.",
            )
            .sample(&[], (now - t).max(0.0));
        }
        if let Some(t) = a.last_failed_time {
            family(
                out,
                "spilo_postgres_wal_last_archive_failure_timestamp_seconds",
                "gauge",
                "When archiving last failed.",
            )
            .sample(&[], t);
        }
    }
}

fn replication(out: &mut String, s: &super::postgres::Sample) {
    if s.replication.is_empty() {
        return;
    }
    let labels = |r: &super::postgres::Replica| {
        [
            ("application_name", r.application_name.clone()),
            ("client_addr", r.client_addr.clone().unwrap_or_default()),
            ("sync_state", r.sync_state.clone().unwrap_or_default()),
        ]
    };
    let mut f = family(
        out,
        "spilo_postgres_replication_lag_bytes",
        "gauge",
        "WAL a standby has not replayed yet.",
    );
    for r in &s.replication {
        if let Some(lag) = r.lag_bytes {
            let l = labels(r);
            f.sample(&l.each_ref().map(|(k, v)| (*k, v.as_str())), lag as f64);
        }
    }
    let mut f = family(
        out,
        "spilo_postgres_replication_replay_lag_seconds",
        "gauge",
        "A standby's replay_lag.",
    );
    for r in &s.replication {
        let l = labels(r);
        f.sample(
            &l.each_ref().map(|(k, v)| (*k, v.as_str())),
            r.replay_lag.unwrap_or(0.0),
        );
    }
    let mut f = family(
        out,
        "spilo_postgres_replication_streaming",
        "gauge",
        "1 while a standby streams.",
    );
    for r in &s.replication {
        let l = labels(r);
        f.sample(
            &l.each_ref().map(|(k, v)| (*k, v.as_str())),
            f64::from(u8::from(r.state.as_deref() == Some("streaming"))),
        );
    }
}

type Counter = fn(&super::postgres::Database) -> u64;

fn databases(out: &mut String, s: &super::postgres::Sample) {
    let simple: [(&str, &str, Counter); 6] = [
        (
            "spilo_postgres_xact_commits_total",
            "Transactions committed.",
            |d| d.xact_commit,
        ),
        (
            "spilo_postgres_xact_rollbacks_total",
            "Transactions rolled back.",
            |d| d.xact_rollback,
        ),
        (
            "spilo_postgres_blocks_read_total",
            "Blocks read from outside shared buffers.",
            |d| d.blks_read,
        ),
        (
            "spilo_postgres_blocks_hit_total",
            "Blocks found in shared buffers.",
            |d| d.blks_hit,
        ),
        (
            "spilo_postgres_temp_bytes_total",
            "Bytes written to temporary files.",
            |d| d.temp_bytes,
        ),
        (
            "spilo_postgres_deadlocks_total",
            "Deadlocks detected.",
            |d| d.deadlocks,
        ),
    ];
    for (name, help, value) in simple {
        let mut f = family(out, name, "counter", help);
        for (db, d) in &s.databases {
            f.sample(&[("datname", db)], value(d) as f64);
        }
    }
    let tuples: [(&str, Counter); 5] = [
        ("returned", |d| d.tup_returned),
        ("fetched", |d| d.tup_fetched),
        ("inserted", |d| d.tup_inserted),
        ("updated", |d| d.tup_updated),
        ("deleted", |d| d.tup_deleted),
    ];
    let name = "spilo_postgres_tuples_total";
    let mut f = family(out, name, "counter", "Rows by operation.");
    for (db, d) in &s.databases {
        for (operation, value) in tuples {
            f.sample(
                &[("datname", db), ("operation", operation)],
                value(d) as f64,
            );
        }
    }
}

fn patroni(out: &mut String, raw: &Raw) {
    let Some(answer) = &raw.patroni else {
        return;
    };
    let running = matches!(answer, Ok(p) if p.state == "running");
    family(
        out,
        "spilo_patroni_up",
        "gauge",
        "Whether Patroni's REST API answers and says running.",
    )
    .sample(&[], f64::from(u8::from(running)));
    if let Ok(p) = answer {
        family(
            out,
            "spilo_patroni_info",
            "gauge",
            "Patroni's state and role for this member.",
        )
        .sample(&[("state", &p.state), ("role", &p.role)], 1.0);
        family(
            out,
            "spilo_patroni_paused",
            "gauge",
            "1 while the cluster is paused.",
        )
        .sample(&[], f64::from(u8::from(p.pause)));
        family(
            out,
            "spilo_patroni_pending_restart",
            "gauge",
            "1 when a setting waits for a restart.",
        )
        .sample(&[], f64::from(u8::from(p.pending_restart)));
    }
}

/// The scheduler's outcomes: on the primary once a backup exists or was
/// tried (a replica's scheduler takes none).
fn backup(out: &mut String, raw: &Raw, now: f64) {
    let Some(Some(state)) = &raw.backup else {
        return;
    };
    if let Some(at) = state.last_success {
        family(
            out,
            "spilo_backup_last_success_timestamp_seconds",
            "gauge",
            "When the newest full backup finished.",
        )
        .sample(&[], at as f64);
        family(
            out,
            "spilo_backup_age_seconds",
            "gauge",
            "Seconds since the newest full backup finished.",
        )
        .sample(&[], (now - at as f64).max(0.0));
    }
    if let Some(at) = state.last_failure {
        family(
            out,
            "spilo_backup_last_failure_timestamp_seconds",
            "gauge",
            "When a backup last failed.",
        )
        .sample(&[], at as f64);
    }
}

fn volumes(out: &mut String, raw: &Raw) {
    let mut f = family(
        out,
        "spilo_volume_size_bytes",
        "gauge",
        "Size of the volume holding data, WAL or log.",
    );
    for (name, v) in VOLUMES.iter().zip(&raw.volumes) {
        f.sample(
            &[("volume", name), ("device", &v.device)],
            (v.total * 1024) as f64,
        );
    }
    let mut f = family(
        out,
        "spilo_volume_free_bytes",
        "gauge",
        "Space left on the volume for PostgreSQL.",
    );
    for (name, v) in VOLUMES.iter().zip(&raw.volumes) {
        f.sample(
            &[("volume", name), ("device", &v.device)],
            (v.left * 1024) as f64,
        );
    }
    let mut f = family(
        out,
        "spilo_directory_size_bytes",
        "gauge",
        "Size of the data, WAL or log directory (refreshed every 30 samples).",
    );
    for (name, size) in VOLUMES.iter().zip(raw.sizes) {
        f.sample(&[("volume", name)], (size * 1024) as f64);
    }
}

fn cgroup(out: &mut String, raw: &Raw) {
    let Some(cgroup) = raw.cgroup else {
        return;
    };
    if let Some(cpu) = cgroup.cpu {
        let name = "spilo_cgroup_cpu_seconds_total";
        family(out, name, "counter", "CPU time the container used.")
            .sample(&[("mode", "user")], cpu.user_usec as f64 / 1e6)
            .sample(&[("mode", "system")], cpu.system_usec as f64 / 1e6);
        if let Some((quota, period)) = cpu.quota {
            family(
                out,
                "spilo_cgroup_cpu_limit_cores",
                "gauge",
                "The container's CPU quota in cores.",
            )
            .sample(&[], quota as f64 / period.max(1) as f64);
        }
    }
    if let Some(m) = cgroup.memory {
        family(
            out,
            "spilo_cgroup_memory_usage_bytes",
            "gauge",
            "Memory the container uses, inactive file cache left out.",
        )
        .sample(&[], m.current.saturating_sub(m.inactive_file) as f64);
        if let Some(limit) = m.limit {
            family(
                out,
                "spilo_cgroup_memory_limit_bytes",
                "gauge",
                "The container's memory limit.",
            )
            .sample(&[], limit as f64);
        }
        family(
            out,
            "spilo_cgroup_oom_kills_total",
            "counter",
            "Processes the OOM killer ended in the container.",
        )
        .sample(&[], m.oom_kill as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::*;
    use crate::backup::state::State;
    use crate::monitor::raw::example;

    #[test]
    fn families_once_with_their_samples() {
        let mut raw = example(1_000, Instant::now(), 5);
        raw.backup = Some(Some(State {
            last_success: Some(1_000),
            ..State::default()
        }));
        let text = render(&raw, 1_600.0);
        let mut seen = BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(line.to_owned()), "{line} twice");
        }
        for expected in [
            "spilo_postgres_up 1",
            "spilo_postgres_info{version=\"17.2\",role=\"primary\"} 1",
            "spilo_postgres_timeline 3",
            "spilo_postgres_connections{state=\"active\"} 1",
            "spilo_postgres_connections{state=\"idle in transaction\"} 1",
            "spilo_postgres_xact_commits_total{datname=\"postgres\"} 5",
            "spilo_postgres_replication_lag_bytes{application_name=\"node-2\",client_addr=\"10.0.0.2\",sync_state=\"async\"} 4096",
            "spilo_postgres_replication_replay_lag_seconds{application_name=\"node-2\",client_addr=\"10.0.0.2\",sync_state=\"async\"} 0.5",
            "spilo_patroni_up 1",
            "spilo_backup_age_seconds 600",
            "spilo_directory_size_bytes{volume=\"log\"} 3072",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "no {expected} in\n{text}"
            );
        }
        assert!(!text.contains("spilo_backup_last_failure"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
    }
}
