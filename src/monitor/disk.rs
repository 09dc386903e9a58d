//! The volumes of the data directory, the WAL and the log: space, the
//! device under each with its I/O counters, and the directories' sizes
//! (walked in a thread of their own: a large data directory takes a
//! while).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, minor};
use nix::sys::statvfs::statvfs;

use super::host::text;
use crate::init::spacewatch::existing;

/// /proc/diskstats' counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskIo {
    pub reads: u64,
    pub read_merges: u64,
    pub read_sectors: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_merges: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    pub io_ms: u64,
    pub weighted_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Volume {
    pub directory: PathBuf,
    /// kB.
    pub total: u64,
    pub left: u64,
    pub device: String,
    pub io: Option<DiskIo>,
}

/// The volume holding `directory` (its nearest existing parent when it
/// does not exist yet).
pub fn volume(directory: &Path, diskstats: &str, mountinfo: &str) -> Volume {
    let mut volume = Volume {
        directory: directory.to_owned(),
        ..Volume::default()
    };
    let Some((existing, dev)) = existing(directory) else {
        return volume;
    };
    if let Ok(stat) = statvfs(&existing) {
        let unit = stat.fragment_size();
        volume.total = stat.blocks() * unit / 1024;
        volume.left = stat.blocks_available() * unit / 1024;
    }
    let (major, minor) = (major(dev), minor(dev));
    volume.device = block_device(major, minor)
        .or_else(|| mount_source(mountinfo, major, minor))
        .unwrap_or_default();
    volume.io = io(diskstats, &volume.device);
    volume
}

/// The kernel's name of a block device (`sda1`, `dm-0`).
fn block_device(major: u64, minor: u64) -> Option<String> {
    let uevent = text(Path::new(&format!("/sys/dev/block/{major}:{minor}/uevent")))?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}

/// What is mounted there when it is no block device (overlay, tmpfs).
fn mount_source(mountinfo: &str, major: u64, minor: u64) -> Option<String> {
    let device = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&device.as_str()) {
            return None;
        }
        let separator = fields.iter().position(|f| *f == "-")?;
        fields.get(separator + 2).map(|s| (*s).to_owned())
    })
}

fn io(diskstats: &str, device: &str) -> Option<DiskIo> {
    diskstats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&device) || fields.len() < 14 {
            return None;
        }
        let n = |i: usize| fields[i].parse().unwrap_or(0);
        Some(DiskIo {
            reads: n(3),
            read_merges: n(4),
            read_sectors: n(5),
            read_ms: n(6),
            writes: n(7),
            write_merges: n(8),
            write_sectors: n(9),
            write_ms: n(10),
            io_ms: n(12),
            weighted_ms: n(13),
        })
    })
}

/// kB allocated under `root`, du-style: one filesystem, lost+found and
/// `skip` left out, symbolic links not followed.
pub fn directory_size(root: &Path, skip: &[PathBuf]) -> u64 {
    let Ok(top) = fs::symlink_metadata(root) else {
        return 0;
    };
    let device = top.dev();
    let mut bytes = top.blocks() * 512;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device
                || skip.contains(&path)
                || (dir == root && entry.file_name() == "lost+found")
            {
                continue;
            }
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    bytes / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstats_and_mountinfo() {
        let stats = "   8       0 sda 10 1 80 5 20 2 160 7 0 9 12 0 0 0 0\n   8       1 sda1 1 0 8 1 2 0 16 1 0 2 2\n";
        let io = io(stats, "sda").unwrap();
        assert_eq!(
            (io.reads, io.read_sectors, io.writes, io.io_ms),
            (10, 80, 20, 9)
        );
        assert_eq!(super::io(stats, "sdb"), None);
        let mountinfo = "25 1 0:22 / / rw,relatime - overlay overlay rw,lowerdir=/a\n26 25 0:23 / /dev rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_source(mountinfo, 0, 23).as_deref(), Some("tmpfs"));
    }

    #[test]
    fn sizes_skip_what_they_are_told() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 64 << 10]).unwrap();
        fs::create_dir(dir.path().join("log")).unwrap();
        fs::write(dir.path().join("log/b"), vec![1u8; 256 << 10]).unwrap();
        let all = directory_size(dir.path(), &[]);
        let without = directory_size(dir.path(), &[dir.path().join("log")]);
        assert!(all >= without + 256, "{all} {without}");
        assert!(without >= 64, "{without}");
    }
}
