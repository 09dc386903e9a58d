//! The container's cgroup (v2): its memory against the limit and the CPU
//! it used, read where /proc/self/cgroup says this process lives (the
//! namespace's root inside a container).

use std::path::{Path, PathBuf};

use super::host::text;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupMemory {
    /// Bytes; None: no limit.
    pub limit: Option<u64>,
    pub current: u64,
    pub anon: u64,
    pub file: u64,
    pub file_dirty: u64,
    pub inactive_file: u64,
    pub oom: u64,
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupCpu {
    pub weight: Option<u64>,
    /// Quota and period in µs; None: unlimited.
    pub quota: Option<(u64, u64)>,
    pub user_usec: u64,
    pub system_usec: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cgroup {
    pub memory: Option<CgroupMemory>,
    pub cpu: Option<CgroupCpu>,
}

/// This process's cgroup v2 directory, when the unified hierarchy is
/// mounted at `root`.
pub fn locate(proc_self_cgroup: &Path, root: &Path) -> Option<PathBuf> {
    let membership = text(proc_self_cgroup)?;
    let path = membership.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = root.join(path.trim().trim_start_matches('/'));
    dir.join("cgroup.controllers").exists().then_some(dir)
}

pub fn read(dir: &Path) -> Cgroup {
    let keyed = |name: &str| -> Vec<(String, u64)> {
        text(&dir.join(name))
            .map(|t| {
                t.lines()
                    .filter_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        Some((k.to_owned(), v.trim().parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let value = |pairs: &[(String, u64)], key: &str| {
        pairs.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
    };
    let memory = text(&dir.join("memory.current"))
        .and_then(|t| t.trim().parse().ok())
        .map(|current| {
            let stat = keyed("memory.stat");
            let events = keyed("memory.events");
            CgroupMemory {
                limit: text(&dir.join("memory.max")).and_then(|t| t.trim().parse().ok()),
                current,
                anon: value(&stat, "anon"),
                file: value(&stat, "file"),
                file_dirty: value(&stat, "file_dirty"),
                inactive_file: value(&stat, "inactive_file"),
                oom: value(&events, "oom"),
                oom_kill: value(&events, "oom_kill"),
            }
        });
    let stat = keyed("cpu.stat");
    let cpu = (!stat.is_empty()).then(|| CgroupCpu {
        weight: text(&dir.join("cpu.weight")).and_then(|t| t.trim().parse().ok()),
        quota: text(&dir.join("cpu.max")).and_then(|t| {
            let mut parts = t.split_whitespace();
            let quota = parts.next()?.parse().ok()?;
            Some((quota, parts.next()?.parse().ok()?))
        }),
        user_usec: value(&stat, "user_usec"),
        system_usec: value(&stat, "system_usec"),
    });
    Cgroup { memory, cpu }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("memory.current", "1048576\n");
        write("memory.max", "4194304\n");
        write(
            "memory.stat",
            "anon 524288\nfile 262144\nfile_dirty 4096\ninactive_file 8192\n",
        );
        write("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        write("cpu.stat", "usage_usec 30\nuser_usec 20\nsystem_usec 10\n");
        write("cpu.max", "200000 100000\n");
        write("cpu.weight", "100\n");
        let cgroup = read(dir.path());
        let memory = cgroup.memory.unwrap();
        assert_eq!(
            (memory.limit, memory.anon, memory.oom_kill),
            (Some(4194304), 524288, 1)
        );
        let cpu = cgroup.cpu.unwrap();
        assert_eq!(
            (cpu.quota, cpu.user_usec, cpu.weight),
            (Some((200000, 100000)), 20, Some(100))
        );
        write("memory.max", "max\n");
        write("cpu.max", "max 100000\n");
        let cgroup = read(dir.path());
        assert_eq!(cgroup.memory.unwrap().limit, None);
        assert_eq!(cgroup.cpu.unwrap().quota, None);
    }
}
