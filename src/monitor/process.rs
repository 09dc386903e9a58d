//! PostgreSQL's processes as the kernel sees them: the postmaster's
//! children, each with its state, CPU time, storage I/O, unique memory and
//! process title.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use super::host::text;
use crate::init::reaper::living_children_of;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    pub state: char,
    /// Clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub guest: u64,
    /// Since boot, in clock ticks: tells a reused pid from its old owner.
    pub starttime: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// kB: resident minus shared pages.
    pub uss: u64,
    /// The process title after `postgres: ` (and the cluster name).
    pub title: String,
}

/// The postmaster's pid, from the first line of postmaster.pid.
pub fn postmaster(pgdata: &Path) -> Option<u32> {
    text(&pgdata.join("postmaster.pid"))?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|pid: &u32| Path::new("/proc").join(pid.to_string()).exists())
}

/// The postmaster's children with their counters, by pid.
pub fn children(
    proc: &Path,
    postmaster: u32,
    cluster_name: &str,
    page_kb: u64,
) -> BTreeMap<u32, ProcStat> {
    let listed = text(&proc.join(format!("{postmaster}/task/{postmaster}/children")));
    let pids: Vec<u32> = match listed {
        Some(list) => list
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        // A kernel without the children file: the process table.
        None => living_children_of(Pid::from_raw(postmaster as i32))
            .into_iter()
            .map(|pid| pid.as_raw() as u32)
            .collect(),
    };
    pids.into_iter()
        .filter_map(|pid| Some((pid, read(proc, pid, cluster_name, page_kb)?)))
        .collect()
}

fn read(proc: &Path, pid: u32, cluster_name: &str, page_kb: u64) -> Option<ProcStat> {
    let dir = proc.join(pid.to_string());
    let mut stat = parse_stat(&text(&dir.join("stat"))?)?;
    if let Some(io) = text(&dir.join("io")) {
        for line in io.lines() {
            match line.split_once(": ") {
                Some(("read_bytes", v)) => stat.read_bytes = v.trim().parse().unwrap_or(0),
                Some(("write_bytes", v)) => stat.write_bytes = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    if let Some(statm) = text(&dir.join("statm")) {
        let pages: Vec<u64> = statm
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if let [_, resident, shared, ..] = pages[..] {
            stat.uss = resident.saturating_sub(shared) * page_kb;
        }
    }
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    stat.title = title(&String::from_utf8_lossy(&cmdline), cluster_name);
    Some(stat)
}

/// /proc/<pid>/stat; the command may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let at = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(ProcStat {
        state: fields.first()?.chars().next().unwrap_or('S'),
        utime: at(11),
        stime: at(12),
        starttime: at(19),
        guest: at(40),
        ..ProcStat::default()
    })
}

/// `postgres: [cluster: ]title` → `title`, without trailing blanks.
fn title(cmdline: &str, cluster_name: &str) -> String {
    let line = cmdline.trim_end_matches(['\0', ' ']).replace('\0', " ");
    let rest = line.strip_prefix("postgres: ").unwrap_or(&line);
    let prefix = format!("{cluster_name}: ");
    rest.strip_prefix(prefix.as_str())
        .unwrap_or(rest)
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command() {
        // Fields 3 (state) to 44, as numbered in proc(5).
        let mut fields: Vec<String> = (3..=44).map(|_| "0".to_owned()).collect();
        for (field, value) in [
            (3, "S"),
            (4, "1"),
            (14, "7"),
            (15, "3"),
            (22, "555"),
            (43, "9"),
        ] {
            fields[field - 3] = value.to_owned();
        }
        let stat = format!("1234 (postgres: a) b) {}", fields.join(" "));
        let stat = stat.as_str();
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.state, 'S');
        assert_eq!(
            (parsed.utime, parsed.stime, parsed.starttime, parsed.guest),
            (7, 3, 555, 9)
        );
    }

    #[test]
    fn titles_lose_the_program_and_the_cluster() {
        assert_eq!(
            title("postgres: demo: checkpointer \0", "demo"),
            "checkpointer"
        );
        assert_eq!(title("postgres: logger ", "demo"), "logger");
        assert_eq!(
            title(
                "postgres: demo: walsender standby 10.0.0.2(5432) streaming 0/3000148",
                "demo"
            ),
            "walsender standby 10.0.0.2(5432) streaming 0/3000148"
        );
    }
}
