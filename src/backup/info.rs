//! pgBackRest's `info --output=json` for one stanza: whether it has a
//! backup yet (the scheduler's first backup) and the table `spilo backup
//! list` prints.

use serde::Deserialize;

use super::calendar::format_utc;

/// The stanza's entry; fields pgBackRest adds in later versions are
/// ignored, fields it may leave out are optional.
#[derive(Debug, Deserialize)]
pub(crate) struct Stanza {
    name: String,
    #[serde(default)]
    archive: Vec<Archive>,
    #[serde(default)]
    backup: Vec<Backup>,
    /// The clusters the stanza has held (a new one after an upgrade).
    #[serde(default)]
    db: Vec<Db>,
    status: Status,
}

#[derive(Debug, Deserialize)]
struct Db {
    id: u32,
    version: String,
}

#[derive(Debug, Deserialize)]
struct DbRef {
    id: u32,
}

#[derive(Debug, Deserialize)]
struct Archive {
    id: String,
    min: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Backup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: Span<i64>,
    archive: Option<Span<Option<String>>>,
    info: Sizes,
    database: Option<DbRef>,
}

#[derive(Debug, Deserialize)]
struct Span<T> {
    start: T,
    stop: T,
}

#[derive(Debug, Deserialize)]
struct Sizes {
    size: Option<u64>,
    delta: Option<u64>,
    repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    delta: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Status {
    message: String,
}

impl Stanza {
    /// `stanza`'s entry in `json`; None when pgBackRest did not list it.
    pub(crate) fn find(json: &[u8], stanza: &str) -> Result<Option<Stanza>, serde_json::Error> {
        let stanzas: Vec<Stanza> = serde_json::from_slice(json)?;
        Ok(stanzas.into_iter().find(|entry| entry.name == stanza))
    }

    pub(crate) fn has_backup(&self) -> bool {
        !self.backup.is_empty()
    }

    /// When its newest backup finished (unix seconds).
    pub(crate) fn last_stop(&self) -> Option<i64> {
        self.backup.iter().map(|b| b.timestamp.stop).max()
    }

    /// The PostgreSQL majors of its backups ("15"), oldest first.
    pub(crate) fn backup_majors(&self) -> Vec<&str> {
        self.backup
            .iter()
            .filter_map(|backup| {
                let id = backup.database.as_ref()?.id;
                self.db.iter().find(|db| db.id == id)
            })
            .map(|db| db.version.as_str())
            .collect()
    }

    /// The backups as a table, then the WAL archive's range and the
    /// stanza's status.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        if self.backup.is_empty() {
            out.push_str("no backups\n");
        } else {
            let header = [
                "LABEL",
                "TYPE",
                "START (UTC)",
                "STOP (UTC)",
                "DURATION",
                "DATABASE",
                "BACKUP",
                "REPOSITORY",
                "WAL START-STOP",
            ]
            .map(str::to_owned);
            let rows: Vec<[String; 9]> = self.backup.iter().map(row).collect();
            let mut widths = header.clone().map(|cell| cell.len());
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:width$}"))
                    .collect();
                out.push_str(cells.join("  ").trim_end());
                out.push('\n');
            }
        }
        for archive in &self.archive {
            let range = match (&archive.min, &archive.max) {
                (Some(min), Some(max)) => format!("{min} - {max}"),
                _ => "empty".to_owned(),
            };
            out.push_str(&format!("WAL archive {}: {range}\n", archive.id));
        }
        out.push_str(&format!("status: {}\n", self.status.message));
        out
    }
}

fn row(backup: &Backup) -> [String; 9] {
    let Span { start, stop } = backup.timestamp;
    let wal = match &backup.archive {
        Some(Span {
            start: Some(start),
            stop: Some(stop),
        }) => format!("{start}-{stop}"),
        _ => "-".to_owned(),
    };
    [
        backup.label.clone(),
        backup.kind.clone(),
        format_utc(start),
        format_utc(stop),
        duration(stop - start),
        size(backup.info.size),
        size(backup.info.delta),
        size(backup.info.repository.as_ref().and_then(|r| r.delta)),
        wal,
    ]
}

/// `5s`, `3m 07s`, `2h 05m`.
pub(crate) fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

/// Binary units with one decimal: `431 B`, `2.9 MiB`, `1.2 GiB`.
pub(crate) fn size(bytes: Option<u64>) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let Some(bytes) = bytes else {
        return "-".to_owned();
    };
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Display only: the precision f64 loses above 2^53 bytes is invisible.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of pgBackRest 2.45: a full and an incremental backup.
    const INFO: &[u8] = include_bytes!("testdata/info.json");
    /// Real output for a stanza that was never created.
    const NO_STANZA: &[u8] = include_bytes!("testdata/info-no-stanza.json");

    #[test]
    fn finds_the_stanza_and_its_backups() {
        let stanza = Stanza::find(INFO, "demo").unwrap().unwrap();
        assert!(stanza.has_backup());
        assert!(Stanza::find(INFO, "other").unwrap().is_none());
        assert_eq!(stanza.backup_majors(), ["15", "15"]);
        let missing = Stanza::find(NO_STANZA, "nostanza").unwrap().unwrap();
        assert!(!missing.has_backup());
        assert!(missing.backup_majors().is_empty());
        assert!(Stanza::find(b"{}", "demo").is_err());
    }

    #[test]
    fn the_table() {
        let stanza = Stanza::find(INFO, "demo").unwrap().unwrap();
        let expected = "\
LABEL                              TYPE  START (UTC)          STOP (UTC)           DURATION  DATABASE  BACKUP    REPOSITORY  WAL START-STOP
20261202-095652F                   full  2026-12-02 09:56:52  2026-12-02 09:56:57  5s        21.9 MiB  21.9 MiB  2.9 MiB     000000010000000000000002-000000010000000000000003
20261202-095652F_20261202-095657I  incr  2026-12-02 09:56:57  2026-12-02 09:56:59  2s        21.9 MiB  8.3 KiB   431 B       000000010000000000000004-000000010000000000000005
WAL archive 15-1: 000000010000000000000001 - 000000010000000000000005
status: ok
";
        assert_eq!(stanza.table(), expected);
    }

    #[test]
    fn an_empty_stanza() {
        let stanza = Stanza::find(NO_STANZA, "nostanza").unwrap().unwrap();
        assert_eq!(stanza.table(), "no backups\nstatus: missing stanza path\n");
    }

    #[test]
    fn units() {
        assert_eq!(size(None), "-");
        assert_eq!(size(Some(0)), "0 B");
        assert_eq!(size(Some(1023)), "1023 B");
        assert_eq!(size(Some(1024)), "1.0 KiB");
        assert_eq!(size(Some(1_288_490_189)), "1.2 GiB");
        assert_eq!(size(Some(u64::MAX)), "16.0 EiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(187), "3m 07s");
        assert_eq!(duration(7500), "2h 05m");
        assert_eq!(duration(-3), "0s");
    }
}
