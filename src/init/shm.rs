//! /dev/shm: PostgreSQL's dynamic shared memory (parallel query workers
//! exchange tuples and share hash tables there). Docker's default 64 MB
//! makes parallel queries fail at run time with "could not resize shared
//! memory segment"; we say so at start instead.

use std::path::Path;

use nix::sys::statvfs::statvfs;
use serde_json::{Map, Value};

/// The least /dev/shm we accept without a warning.
pub(crate) const FLOOR_MB: u64 = 128;

/// What parallel queries may want: a quarter of shared_buffers (their hash
/// tables grow with the data cached), never less than the floor.
pub(crate) fn needed_mb(shared_buffers_mb: u64) -> u64 {
    (shared_buffers_mb / 4).max(FLOOR_MB)
}

/// shared_buffers as PostgreSQL reads it: the user's value when given
/// (8 kB pages without a unit), else ours.
pub(crate) fn shared_buffers_mb(user: &Map<String, Value>, ours: u64) -> u64 {
    let given = user
        .get("postgresql")
        .and_then(|p| p.get("parameters"))
        .and_then(|p| p.get("shared_buffers"));
    let text = match given {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return ours,
    };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let Ok(value) = digits.trim().parse::<u64>() else {
        return ours;
    };
    match text[digits.len()..].trim() {
        "" => value * 8 / 1024,
        "kB" => value / 1024,
        "MB" => value,
        "GB" => value * 1024,
        "TB" => value * 1024 * 1024,
        _ => ours,
    }
}

/// A warning when `/dev/shm` (at `path`) is smaller than needed.
pub(crate) fn check(path: &Path, shared_buffers_mb: u64) -> Option<String> {
    let needed = needed_mb(shared_buffers_mb);
    let size_mb = match statvfs(path) {
        Ok(stat) => stat.blocks() * stat.fragment_size() / (1024 * 1024),
        Err(e) => {
            return Some(format!(
                "{}: {e}: PostgreSQL's parallel queries need it",
                path.display()
            ));
        }
    };
    (size_mb < needed).then(|| {
        format!(
            "{} is {size_mb} MB, less than the {needed} MB parallel queries may need with shared_buffers={shared_buffers_mb}MB: they will fail with \"could not resize shared memory segment\" (give the container a larger /dev/shm: docker --shm-size={needed}m, or a memory-backed emptyDir)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn needs_grow_with_shared_buffers() {
        assert_eq!(needed_mb(32), FLOOR_MB);
        assert_eq!(needed_mb(4096), 1024);
    }

    #[test]
    fn user_shared_buffers_units() {
        let user = |v: Value| {
            json!({"postgresql": {"parameters": {"shared_buffers": v}}})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_eq!(shared_buffers_mb(&user(json!("2GB")), 1), 2048);
        assert_eq!(shared_buffers_mb(&user(json!("32MB")), 1), 32);
        assert_eq!(shared_buffers_mb(&user(json!(16384)), 1), 128);
        assert_eq!(shared_buffers_mb(&user(json!("lots")), 7), 7);
        assert_eq!(shared_buffers_mb(&Map::new(), 7), 7);
    }

    #[test]
    fn a_small_shm_is_named() {
        // Any mounted filesystem is smaller than this.
        let warning = check(Path::new("/"), 1 << 40).unwrap();
        assert!(warning.starts_with("/ is "), "{warning}");
        assert!(warning.contains("--shm-size"), "{warning}");
        assert!(check(Path::new("/nonexistent-shm"), 32).is_some());
    }
}
