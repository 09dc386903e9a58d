//! Memory-based sizing: the container's limit (cgroup v2 or v1) or the
//! machine's RAM, whichever is smaller.

use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Where the memory facts are read; tests point these at fake files.
#[derive(Debug, Clone)]
pub struct MemoryProbe {
    pub(crate) cgroup_root: PathBuf,
    pub(crate) meminfo: PathBuf,
}

impl Default for MemoryProbe {
    fn default() -> Self {
        MemoryProbe {
            cgroup_root: "/sys/fs/cgroup".into(),
            meminfo: "/proc/meminfo".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizing {
    pub(crate) memory_mib: u64,
    pub(crate) shared_buffers_mb: u64,
    pub(crate) max_connections: u64,
}

impl MemoryProbe {
    /// min(cgroup limit, physical RAM) in MiB.
    pub(crate) fn memory_mib(&self) -> Result<u64, ConfigError> {
        let ram = self.physical_bytes()?;
        let limit = self.cgroup_limit_bytes()?;
        Ok(limit.map_or(ram, |l| l.min(ram)) / (1024 * 1024))
    }

    fn physical_bytes(&self) -> Result<u64, ConfigError> {
        let text = read(&self.meminfo)?;
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix("MemTotal:")?;
                let kb = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()?;
                Some(kb * 1024)
            })
            .ok_or_else(|| ConfigError::File {
                path: self.meminfo.clone(),
                reason: "no MemTotal line".into(),
            })
    }

    /// cgroup v2's memory.max, else v1's memory.limit_in_bytes; None when
    /// unlimited or not in a memory cgroup.
    fn cgroup_limit_bytes(&self) -> Result<Option<u64>, ConfigError> {
        for file in ["memory.max", "memory/memory.limit_in_bytes"] {
            let path = self.cgroup_root.join(file);
            if !path.exists() {
                continue;
            }
            let text = read(&path)?;
            let text = text.trim();
            if text == "max" {
                return Ok(None);
            }
            return text
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ConfigError::File {
                    path,
                    reason: format!("not a memory limit: {text:?}"),
                });
        }
        Ok(None)
    }
}

/// shared_buffers is a fifth of memory on Kubernetes (where the limit is
/// shared with sidecars), a quarter elsewhere; one connection per 30 MiB,
/// between 100 and 1000.
pub(crate) fn sizing(memory_mib: u64, on_kubernetes: bool) -> Sizing {
    Sizing {
        memory_mib,
        shared_buffers_mb: memory_mib / if on_kubernetes { 5 } else { 4 },
        max_connections: (memory_mib / 30).clamp(100, 1000),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn probe(meminfo_kb: u64, files: &[(&str, &str)]) -> (tempfile::TempDir, MemoryProbe) {
        let dir = tempfile::tempdir().unwrap();
        let meminfo = dir.path().join("meminfo");
        std::fs::write(
            &meminfo,
            format!("MemTotal:       {meminfo_kb} kB\nMemFree:  1 kB\n"),
        )
        .unwrap();
        let cgroup_root = dir.path().join("cgroup");
        for (name, content) in files {
            let path = cgroup_root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        (
            dir,
            MemoryProbe {
                cgroup_root,
                meminfo,
            },
        )
    }

    #[test]
    fn physical_ram_without_cgroup() {
        let (_d, p) = probe(8 * 1024 * 1024, &[]);
        assert_eq!(p.memory_mib().unwrap(), 8192);
    }

    #[test]
    fn cgroup_v2_limit() {
        let (_d, p) = probe(
            8 * 1024 * 1024,
            &[("memory.max", &format!("{}\n", 2 * GIB))],
        );
        assert_eq!(p.memory_mib().unwrap(), 2048);
        let (_d, p) = probe(8 * 1024 * 1024, &[("memory.max", "max\n")]);
        assert_eq!(p.memory_mib().unwrap(), 8192);
    }

    #[test]
    fn cgroup_v1_limit() {
        let (_d, p) = probe(
            8 * 1024 * 1024,
            &[("memory/memory.limit_in_bytes", &format!("{}\n", GIB))],
        );
        assert_eq!(p.memory_mib().unwrap(), 1024);
        // v1 reports "unlimited" as a huge number: RAM wins.
        let (_d, p) = probe(
            4 * 1024 * 1024,
            &[("memory/memory.limit_in_bytes", "9223372036854771712")],
        );
        assert_eq!(p.memory_mib().unwrap(), 4096);
    }

    #[test]
    fn limit_above_ram_uses_ram() {
        let (_d, p) = probe(1024 * 1024, &[("memory.max", &(16 * GIB).to_string())]);
        assert_eq!(p.memory_mib().unwrap(), 1024);
    }

    #[test]
    fn broken_files_are_errors() {
        let (_d, p) = probe(1024, &[("memory.max", "lots")]);
        assert!(
            p.memory_mib()
                .unwrap_err()
                .to_string()
                .contains("memory.max")
        );
        let p = MemoryProbe {
            cgroup_root: "/nonexistent".into(),
            meminfo: "/nonexistent/meminfo".into(),
        };
        assert!(
            p.memory_mib()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/meminfo")
        );
    }

    #[test]
    fn formulas() {
        assert_eq!(
            sizing(2048, false),
            Sizing {
                memory_mib: 2048,
                shared_buffers_mb: 512,
                max_connections: 100
            }
        );
        assert_eq!(sizing(2048, true).shared_buffers_mb, 409);
        assert_eq!(sizing(6000, false).max_connections, 200);
        assert_eq!(sizing(64 * 1024, false).max_connections, 1000);
        assert_eq!(sizing(512, true).max_connections, 100);
    }
}
