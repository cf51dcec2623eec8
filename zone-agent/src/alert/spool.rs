//! The durable alert spool: one file per (alert, destination) under the state dir, written
//! and synced (file, then directory) before the alert counts as taken, removed only once
//! its destination acknowledged it. A SOC outage, an agent restart or `kill -9` loses
//! nothing: the next agent finds the files and delivers them, oldest first, with the same
//! bytes (same `id`, same signature).
//!
//! Bounded: at most `max_entries` files and `max_bytes` in all. When a new alert does not
//! fit, the spool evicts the oldest entry of the lowest severity that is not graver than
//! the new alert's; if every spooled alert is graver, the new one is refused. Either way
//! the loss is counted per severity (`dropped`), never silent: a flood of low-severity
//! alerts cannot push out a critical one.
//!
//! File name: `<seq, 20 digits>.<severity>.<destination id>.alert`; `*.tmp` are writes that
//! never completed (removed at open).

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use zone_agent_common::Severity;

const SUFFIX: &str = "alert";
const TMP: &str = "tmp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// One spooled delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub severity: Severity,
    /// The destination's id (`destination_id`).
    pub dest: String,
    pub bytes: u64,
    /// When it was spooled (file mtime after a restart).
    pub spooled: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the alert spool is full of graver alerts; this {0} alert was not spooled")]
    Full(&'static str),
    #[error("alert spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Spool {
    dir: PathBuf,
    limits: Limits,
    entries: BTreeMap<u64, Entry>,
    next_seq: u64,
    bytes: u64,
    /// Alerts lost to the bound, by severity (index = `Severity as usize`).
    pub dropped: [u64; 4],
}

/// A short stable id of a destination (its URL), safe in a file name.
pub fn destination_id(url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(url.as_bytes())[..6])
}

fn severity_of(label: &str) -> Option<Severity> {
    Severity::ALL.into_iter().find(|s| s.label() == label)
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`, finishing what a crash left: partial
    /// writes are removed, complete entries kept in sequence order.
    pub fn open(dir: &Path, limits: Limits) -> Result<Spool, SpoolError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let mut s = Spool {
            dir: dir.to_path_buf(),
            limits,
            entries: BTreeMap::new(),
            next_seq: 1,
            bytes: 0,
            dropped: [0; 4],
        };
        for f in fs::read_dir(dir).map_err(io_err(dir))? {
            let f = f.map_err(io_err(dir))?;
            let path = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!(".{TMP}")) {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(e) = parse_name(&name) else { continue };
            let meta = f.metadata().map_err(io_err(&path))?;
            let e = Entry {
                bytes: meta.len(),
                spooled: meta.modified().unwrap_or(SystemTime::now()),
                ..e
            };
            s.next_seq = s.next_seq.max(e.seq + 1);
            s.bytes += e.bytes;
            s.entries.insert(e.seq, e);
        }
        Ok(s)
    }

    /// Spools `body` for destination `dest`; returns its sequence number once it is on
    /// disk (synced). Makes room by the eviction rule of the module docs.
    pub fn push(&mut self, dest: &str, severity: Severity, body: &[u8]) -> Result<u64, SpoolError> {
        let size = body.len() as u64;
        while self.entries.len() + 1 > self.limits.max_entries
            || self.bytes + size > self.limits.max_bytes
        {
            let Some(victim) = self.victim(severity) else {
                self.dropped[severity as usize] += 1;
                return Err(SpoolError::Full(severity.label()));
            };
            let v = self.entries[&victim].severity;
            self.remove(victim)?;
            self.dropped[v as usize] += 1;
        }
        let seq = self.next_seq;
        let name = format!("{seq:020}.{}.{dest}.{SUFFIX}", severity.label());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.{TMP}"));
        write_synced(&tmp, body).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.next_seq += 1;
        self.bytes += size;
        self.entries.insert(
            seq,
            Entry {
                seq,
                severity,
                dest: dest.into(),
                bytes: size,
                spooled: SystemTime::now(),
            },
        );
        Ok(seq)
    }

    /// The oldest entry of the lowest severity not graver than `limit`.
    fn victim(&self, limit: Severity) -> Option<u64> {
        Severity::ALL
            .into_iter()
            .filter(|s| *s <= limit)
            .find_map(|s| self.entries.values().find(|e| e.severity == s))
            .map(|e| e.seq)
    }

    /// Entries oldest first (all destinations).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The oldest entries of one destination, at most `n`.
    pub fn oldest(&self, dest: &str, n: usize) -> Vec<Entry> {
        self.entries
            .values()
            .filter(|e| e.dest == dest)
            .take(n)
            .cloned()
            .collect()
    }

    pub fn read(&self, e: &Entry) -> Result<Vec<u8>, SpoolError> {
        let path = self.path(e);
        fs::read(&path).map_err(io_err(&path))
    }

    /// Removes a delivered (or evicted) entry.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(e) = self.entries.remove(&seq) else {
            return Ok(());
        };
        self.bytes -= e.bytes;
        let path = self.path(&e);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(err)),
            _ => Ok(()),
        }
    }

    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Age of the oldest entry (zero when empty).
    pub fn oldest_age(&self, now: SystemTime) -> std::time::Duration {
        self.entries
            .values()
            .map(|e| now.duration_since(e.spooled).unwrap_or_default())
            .max()
            .unwrap_or_default()
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(format!(
            "{:020}.{}.{}.{SUFFIX}",
            e.seq,
            e.severity.label(),
            e.dest
        ))
    }
}

fn parse_name(name: &str) -> Option<Entry> {
    let mut parts = name.split('.');
    let seq = parts.next()?.parse().ok()?;
    let severity = severity_of(parts.next()?)?;
    let dest = parts.next()?.to_string();
    (parts.next()? == SUFFIX && parts.next().is_none()).then_some(Entry {
        seq,
        severity,
        dest,
        bytes: 0,
        spooled: SystemTime::UNIX_EPOCH,
    })
}

/// Writes a new file (0600) and syncs its data before returning.
fn write_synced(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

/// Syncs a directory, so that a rename or an unlink in it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("za-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopen_in_order_and_drops_partial_writes() {
        let d = dir("reopen");
        let mut s = Spool::open(&d, Limits::default()).unwrap();
        let a = s.push("w1", Severity::High, b"{\"id\":\"a\"}").unwrap();
        let b = s.push("w1", Severity::Low, b"{\"id\":\"b\"}").unwrap();
        s.push("w2", Severity::Low, b"{\"id\":\"c\"}").unwrap();
        fs::write(d.join("00000000000000000009.low.w1.alert.tmp"), b"partial").unwrap();
        drop(s);
        let mut s = Spool::open(&d, Limits::default()).unwrap();
        let w1 = s.oldest("w1", 10);
        assert_eq!(w1.iter().map(|e| e.seq).collect::<Vec<_>>(), [a, b]);
        assert_eq!(s.read(&w1[0]).unwrap(), b"{\"id\":\"a\"}");
        assert_eq!(s.depth(), 3);
        assert!(!d.join("00000000000000000009.low.w1.alert.tmp").exists());
        s.remove(a).unwrap();
        let next = s.push("w1", Severity::Low, b"x").unwrap();
        assert!(next > 3, "sequence numbers continue after a restart");
        assert_eq!(Spool::open(&d, Limits::default()).unwrap().depth(), 3);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn full_spool_evicts_lowest_oldest_and_counts() {
        let d = dir("full");
        let limits = Limits {
            max_entries: 3,
            max_bytes: 1 << 20,
        };
        let mut s = Spool::open(&d, limits).unwrap();
        let crit = s.push("w", Severity::Critical, b"c").unwrap();
        let low1 = s.push("w", Severity::Low, b"l1").unwrap();
        let low2 = s.push("w", Severity::Low, b"l2").unwrap();
        // A high alert pushes out the oldest low one.
        let high = s.push("w", Severity::High, b"h").unwrap();
        let seqs: Vec<u64> = s.entries().map(|e| e.seq).collect();
        assert_eq!(seqs, [crit, low2, high]);
        assert_eq!(s.dropped[Severity::Low as usize], 1);
        // Another low alert evicts the remaining low one (oldest first).
        s.push("w", Severity::Low, b"l3").unwrap();
        assert!(!s.entries().any(|e| e.seq == low1 || e.seq == low2));
        assert_eq!(s.dropped[Severity::Low as usize], 2);
        // A medium alert when only graver ones and one low remain: the low goes.
        s.push("w", Severity::Medium, b"m").unwrap();
        // Now critical, high, medium: a low alert is refused, counted.
        assert!(matches!(
            s.push("w", Severity::Low, b"l4"),
            Err(SpoolError::Full("low"))
        ));
        assert_eq!(s.dropped[Severity::Low as usize], 4);
        assert!(
            s.entries().any(|e| e.seq == crit),
            "the critical alert stays"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn byte_bound_holds() {
        let d = dir("bytes");
        let limits = Limits {
            max_entries: 100,
            max_bytes: 10,
        };
        let mut s = Spool::open(&d, limits).unwrap();
        for _ in 0..5 {
            s.push("w", Severity::Low, b"abcd").unwrap();
        }
        assert!(s.entries().map(|e| e.bytes).sum::<u64>() <= 10);
        assert_eq!(s.depth(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn destination_ids_are_stable_and_file_safe() {
        let id = destination_id("https://soc.example.lg.jp/zone-agent");
        assert_eq!(id, destination_id("https://soc.example.lg.jp/zone-agent"));
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
