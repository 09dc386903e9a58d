//! The container's cgroup: its memory against the limit and the CPU it
//! used. cgroup v2, or v1's memory, cpu and cpuacct controllers where they
//! are mounted (preferred, as bg_mon does, on hybrid hosts: there the
//! unified hierarchy holds no controllers). Each is found where
//! /proc/self/cgroup puts this process, relative to the root mountinfo
//! gives the mount (inside a container that root is its own cgroup).

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
    /// Times the limit was hit (v2's oom events, v1's failcnt).
    pub oom: u64,
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupCpu {
    /// v1's cpu.shares (v2's weight converted, as bg_mon does).
    pub shares: u64,
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

#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    V2(PathBuf),
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
    },
}

/// Where this process's cgroup files are, from /proc/self/cgroup's and
/// mountinfo's text.
pub fn locate(membership: &str, mountinfo: &str) -> Option<Location> {
    // (controllers, path) per hierarchy; v2's controllers are empty.
    let member: Vec<(&str, &str)> = membership
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let v1 = |controller: &str| {
        let path = member
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))?
            .1;
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))?;
        mount.dir_for(path)
    };
    let (memory, cpu, cpuacct) = (v1("memory"), v1("cpu"), v1("cpuacct"));
    if memory.is_some() || cpu.is_some() || cpuacct.is_some() {
        return Some(Location::V1 {
            memory,
            cpu,
            cpuacct,
        });
    }
    let path = member.iter().find(|(c, _)| c.is_empty())?.1;
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    mount.dir_for(path).map(Location::V2)
}

struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let separator = fields.iter().position(|f| *f == "-")?;
        Some(Mount {
            root: fields.get(3)?,
            point: fields.get(4)?,
            fstype: fields.get(separator + 1)?,
            options: fields.get(separator + 3)?,
        })
    }

    /// The directory of the cgroup `path` under this mount.
    fn dir_for(&self, path: &str) -> Option<PathBuf> {
        let below = path.strip_prefix(self.root.trim_end_matches('/'))?;
        let dir = Path::new(self.point).join(below.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    }
}

type Keyed = Vec<(String, u64)>;

fn keyed(path: &Path) -> Keyed {
    text(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_owned(), v.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn value(pairs: &Keyed, key: &str) -> u64 {
    pairs.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

fn number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    text(path)?.trim().parse().ok()
}

/// v1 writes "no limit" as the largest page-aligned value.
const V1_UNLIMITED: u64 = 1 << 62;

/// The counters; `clock_ticks` converts v1's cpuacct.stat.
pub fn read(location: &Location, clock_ticks: u64) -> Cgroup {
    match location {
        Location::V2(dir) => read_v2(dir),
        Location::V1 {
            memory,
            cpu,
            cpuacct,
        } => Cgroup {
            memory: memory.as_deref().and_then(read_v1_memory),
            cpu: cpuacct
                .as_deref()
                .map(|acct| read_v1_cpu(cpu.as_deref(), acct, clock_ticks)),
        },
    }
}

fn read_v2(dir: &Path) -> Cgroup {
    let memory = number(&dir.join("memory.current")).map(|current| {
        let stat = keyed(&dir.join("memory.stat"));
        let events = keyed(&dir.join("memory.events"));
        CgroupMemory {
            limit: number(&dir.join("memory.max")),
            current,
            anon: value(&stat, "anon"),
            file: value(&stat, "file"),
            file_dirty: value(&stat, "file_dirty"),
            inactive_file: value(&stat, "inactive_file"),
            oom: value(&events, "oom"),
            oom_kill: value(&events, "oom_kill"),
        }
    });
    let stat = keyed(&dir.join("cpu.stat"));
    let cpu = (!stat.is_empty()).then(|| CgroupCpu {
        shares: number::<u64>(&dir.join("cpu.weight"))
            .map_or(2, |w| 2 + (262_142 * w).saturating_sub(1) / 9999),
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

fn read_v1_memory(dir: &Path) -> Option<CgroupMemory> {
    let current = number(&dir.join("memory.usage_in_bytes"))?;
    let stat = keyed(&dir.join("memory.stat"));
    let limit = match value(&stat, "hierarchical_memory_limit") {
        0 => number(&dir.join("memory.limit_in_bytes")).unwrap_or(u64::MAX),
        limit => limit,
    };
    Some(CgroupMemory {
        limit: (limit < V1_UNLIMITED).then_some(limit),
        current,
        anon: value(&stat, "total_rss"),
        file: value(&stat, "total_cache"),
        file_dirty: value(&stat, "total_dirty"),
        inactive_file: value(&stat, "total_inactive_file"),
        oom: number(&dir.join("memory.failcnt")).unwrap_or(0),
        oom_kill: value(&keyed(&dir.join("memory.oom_control")), "oom_kill"),
    })
}

fn read_v1_cpu(cpu: Option<&Path>, acct: &Path, clock_ticks: u64) -> CgroupCpu {
    let stat = keyed(&acct.join("cpuacct.stat"));
    let usec = |ticks: u64| ticks * 1_000_000 / clock_ticks.max(1);
    let quota = cpu.and_then(|dir| {
        let quota: i64 = number(&dir.join("cpu.cfs_quota_us"))?;
        let period: u64 = number(&dir.join("cpu.cfs_period_us"))?;
        u64::try_from(quota).ok().map(|q| (q, period))
    });
    CgroupCpu {
        shares: cpu
            .and_then(|dir| number(&dir.join("cpu.shares")))
            .unwrap_or(1024),
        quota,
        user_usec: usec(value(&stat, "user")),
        system_usec: usec(value(&stat, "system")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn a_limited_v2_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "memory.current", "1048576\n");
        write(d, "memory.max", "4194304\n");
        write(
            d,
            "memory.stat",
            "anon 524288\nfile 262144\nfile_dirty 4096\ninactive_file 8192\n",
        );
        write(
            d,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(
            d,
            "cpu.stat",
            "usage_usec 30\nuser_usec 20\nsystem_usec 10\n",
        );
        write(d, "cpu.max", "200000 100000\n");
        write(d, "cpu.weight", "100\n");
        let location = Location::V2(d.to_owned());
        let cgroup = read(&location, 100);
        let memory = cgroup.memory.unwrap();
        assert_eq!(
            (memory.limit, memory.anon, memory.oom_kill),
            (Some(4194304), 524288, 1)
        );
        let cpu = cgroup.cpu.unwrap();
        assert_eq!(
            (cpu.quota, cpu.user_usec, cpu.shares),
            (Some((200000, 100000)), 20, 2623)
        );
        write(d, "memory.max", "max\n");
        write(d, "cpu.max", "max 100000\n");
        let cgroup = read(&location, 100);
        assert_eq!(cgroup.memory.unwrap().limit, None);
        assert_eq!(cgroup.cpu.unwrap().quota, None);
    }

    #[test]
    fn a_v1_container() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, cpu) = (dir.path().join("memory"), dir.path().join("cpu,cpuacct"));
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::create_dir_all(&cpu).unwrap();
        write(&memory, "memory.usage_in_bytes", "2097152\n");
        write(&memory, "memory.limit_in_bytes", "9223372036854771712\n");
        write(
            &memory,
            "memory.stat",
            "total_rss 1048576\ntotal_cache 4096\ntotal_inactive_file 4096\nhierarchical_memory_limit 9223372036854771712\n",
        );
        write(&memory, "memory.failcnt", "2\n");
        write(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        write(&cpu, "cpuacct.stat", "user 150\nsystem 50\n");
        write(&cpu, "cpu.cfs_quota_us", "-1\n");
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(&cpu, "cpu.shares", "512\n");
        // Inside a container the mount's root is the container's cgroup.
        let membership = "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/docker/abc\n";
        let mountinfo = format!(
            "30 25 0:26 /docker/abc {} ro - cgroup cgroup rw,memory\n31 25 0:27 /docker/abc {} ro - cgroup cgroup rw,cpu,cpuacct\n",
            memory.display(),
            cpu.display()
        );
        let location = locate(membership, &mountinfo).unwrap();
        assert_eq!(
            location,
            Location::V1 {
                memory: Some(memory.clone()),
                cpu: Some(cpu.clone()),
                cpuacct: Some(cpu.clone())
            }
        );
        let cgroup = read(&location, 100);
        let m = cgroup.memory.unwrap();
        assert_eq!(
            (m.limit, m.current, m.anon, m.oom, m.oom_kill),
            (None, 2097152, 1048576, 2, 3)
        );
        let c = cgroup.cpu.unwrap();
        assert_eq!(
            (c.shares, c.quota, c.user_usec, c.system_usec),
            (512, None, 1_500_000, 500_000)
        );
    }

    #[test]
    fn v2_under_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/x.scope")).unwrap();
        let mountinfo = format!(
            "35 24 0:30 / {} rw - cgroup2 cgroup2 rw\n",
            dir.path().display()
        );
        assert_eq!(
            locate("0::/system.slice/x.scope\n", &mountinfo),
            Some(Location::V2(dir.path().join("system.slice/x.scope")))
        );
        assert_eq!(locate("0::/elsewhere\n", &mountinfo), None);
    }
}
