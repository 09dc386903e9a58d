//! bg_mon's history: a ring of one-minute buckets, each the brotli stream
//! of a JSON array of that minute's documents, byte for byte what `/`
//! served. Slot = unix minute modulo the bucket count, so `/N` is the
//! latest minute m with m % buckets == N; a bucket older than the ring is
//! gone. Compressed as it fills, the history stays small (a few tens of kB
//! a minute).

use std::io::Write;

/// Compression level and window: bg_mon's quality, a smaller window (the
/// documents of one minute repeat each other closely).
const QUALITY: u32 = 7;
const WINDOW_BITS: u32 = 18;

enum Body {
    Open(Box<brotli::CompressorWriter<Vec<u8>>>),
    Closed(Vec<u8>),
}

struct Bucket {
    minute: i64,
    body: Body,
}

pub struct History {
    slots: Vec<Option<Bucket>>,
    open: Option<usize>,
    prev: Option<usize>,
}

/// A bucket's bytes: brotli, and whether its array is still open (no `]`,
/// no end of stream: a streaming decoder reads it, as browsers do).
pub struct Served {
    pub brotli: Vec<u8>,
    pub open: bool,
}

impl History {
    pub fn new(buckets: u16) -> History {
        History {
            slots: (0..buckets).map(|_| None).collect(),
            open: None,
            prev: None,
        }
    }

    pub fn buckets(&self) -> usize {
        self.slots.len()
    }

    /// Adds a document taken at `time_ms`.
    pub fn record(&mut self, time_ms: i64, document: &[u8]) {
        if self.slots.is_empty() {
            return;
        }
        let minute = time_ms.div_euclid(60_000);
        let slot = self.slot(minute);
        if let Some(open) = self.open {
            if let Some(Bucket {
                minute: m,
                body: Body::Open(writer),
            }) = &mut self.slots[open]
            {
                if *m == minute {
                    let _ = writer.write_all(b",");
                    let _ = writer.write_all(document);
                    return;
                }
            }
            self.close(open);
        }
        let mut writer = Box::new(brotli::CompressorWriter::new(
            Vec::new(),
            4096,
            QUALITY,
            WINDOW_BITS,
        ));
        let _ = writer.write_all(b"[");
        let _ = writer.write_all(document);
        if self.prev == Some(slot) {
            self.prev = None;
        }
        self.slots[slot] = Some(Bucket {
            minute,
            body: Body::Open(writer),
        });
        self.open = Some(slot);
    }

    fn slot(&self, minute: i64) -> usize {
        minute.rem_euclid(self.slots.len() as i64) as usize
    }

    fn close(&mut self, slot: usize) {
        if let Some(bucket) = self.slots[slot].take() {
            let body = match bucket.body {
                Body::Open(mut writer) => {
                    let _ = writer.write_all(b"]");
                    Body::Closed(writer.into_inner())
                }
                closed => closed,
            };
            self.slots[slot] = Some(Bucket {
                minute: bucket.minute,
                body,
            });
            self.prev = Some(slot);
        }
        self.open = None;
    }

    /// Slot `index`, when it holds one of the last `buckets` minutes
    /// before `now_ms`.
    pub fn by_index(&mut self, index: usize, now_ms: i64) -> Option<Served> {
        let now = now_ms.div_euclid(60_000);
        let oldest = now - self.slots.len() as i64;
        let bucket = self.slots.get_mut(index)?.as_mut()?;
        (bucket.minute > oldest && bucket.minute <= now).then(|| serve(bucket))
    }

    /// The bucket of the minute that holds the unix second `at`.
    pub fn by_time(&mut self, at: i64, now_ms: i64) -> Option<Served> {
        if self.slots.is_empty() {
            return None;
        }
        let minute = at.div_euclid(60);
        let slot = self.slot(minute);
        if self.slots[slot].as_ref()?.minute != minute {
            return None;
        }
        self.by_index(slot, now_ms)
    }

    /// The minute closed last.
    pub fn prev(&mut self, now_ms: i64) -> Option<Served> {
        let slot = self.prev?;
        self.by_index(slot, now_ms)
    }
}

fn serve(bucket: &mut Bucket) -> Served {
    match &mut bucket.body {
        Body::Open(writer) => {
            let _ = writer.flush();
            Served {
                brotli: writer.get_ref().clone(),
                open: true,
            }
        }
        Body::Closed(bytes) => Served {
            brotli: bytes.clone(),
            open: false,
        },
    }
}

/// The JSON array of a bucket, closed (for clients without brotli).
pub fn decompress(served: &Served) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    // An open stream has no end: what was flushed is all there is.
    let _ = brotli::Decompressor::new(served.brotli.as_slice(), 4096).read_to_end(&mut out);
    if served.open {
        out.push(b']');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(served: &Served) -> Vec<serde_json::Value> {
        serde_json::from_slice(&decompress(served)).unwrap()
    }

    #[test]
    fn minutes_fill_close_and_expire() {
        let mut history = History::new(3);
        let t0 = 60_000 * 100; // minute 100: slot 1
        history.record(t0, br#"{"a":1}"#);
        history.record(t0 + 1000, br#"{"a":2}"#);
        let open = history.by_index(1, t0 + 1000).unwrap();
        assert!(open.open);
        assert_eq!(array(&open).len(), 2);
        assert!(history.prev(t0 + 1000).is_none());
        history.record(t0 + 60_000, br#"{"a":3}"#);
        let prev = history.prev(t0 + 60_000).unwrap();
        assert!(!prev.open);
        assert_eq!(
            array(&prev),
            vec![serde_json::json!({"a":1}), serde_json::json!({"a":2})]
        );
        assert_eq!(array(&history.by_time(6001, t0 + 60_000).unwrap()).len(), 2);
        assert_eq!(array(&history.by_time(6061, t0 + 60_000).unwrap()).len(), 1);
        assert!(history.by_time(6121, t0 + 60_000).is_none());
        assert!(history.by_index(0, t0 + 60_000).is_none());
        // Three minutes later minute 100 is out of the ring.
        assert!(history.by_index(1, t0 + 180_000).is_none());
    }

    #[test]
    fn no_buckets_no_history() {
        let mut history = History::new(0);
        history.record(1, b"{}");
        assert!(history.by_index(0, 1).is_none());
        assert!(history.by_time(0, 1).is_none());
    }
}
