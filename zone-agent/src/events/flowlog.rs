//! The flow log: one ECS JSON document per line ([`super::ecs`]) for every decision event
//! (deny, audit, flow_open, flow_end), the file a SOC's log shipper tails.
//!
//! Rotation by size: when a line would take `FILE` past `max_bytes`, `FILE` becomes
//! `FILE.1`, `FILE.1` becomes `FILE.2`, … up to `FILE.<keep>` (the oldest is removed) and a
//! new `FILE` is opened; the shipper follows the rename. Writes are buffered and flushed at
//! least every [`FLUSH_EVERY`]. A write that fails (disk full, file removed with its
//! directory) loses that record, counted in `events_lost_total{stage="flow_log"}` and
//! logged once per run of failures; it never stops the agent, and the file is reopened at
//! most every [`FLUSH_EVERY`] until it works again.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{Record, ecs};
use crate::telemetry::{EVENTS, EventCounters};

/// Buffered lines reach the file at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Mode of a new flow log (before the umask): it names hosts of the critical zone, so the
/// owner writes and only its group (a log shipper's) reads.
pub const FILE_MODE: u32 = 0o640;

/// Where and how much (`flow_log`, `flow_log_max_bytes`, `flow_log_keep`).
pub type Settings = crate::config::FlowLog;

pub struct FlowLog {
    settings: Settings,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file, written or buffered.
    size: u64,
    last_flush: Instant,
    last_open_try: Option<Instant>,
    /// In a run of failures (logged once per run).
    failing: bool,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FlowLog {
    /// Opens (appends to) the file; fails if it cannot be opened now (a bad path is a
    /// start-up error, not something to find out later).
    pub fn open(settings: Settings) -> std::io::Result<FlowLog> {
        let mut log = FlowLog {
            settings,
            file: None,
            size: 0,
            last_flush: Instant::now(),
            last_open_try: None,
            failing: false,
        };
        log.reopen()?;
        info!(path = %log.settings.path.display(), max_bytes = log.settings.max_bytes, keep = log.settings.keep, "flow log");
        Ok(log)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.last_open_try = Some(Instant::now());
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&self.settings.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(BufWriter::new(f));
        Ok(())
    }

    /// `FILE` → `FILE.1` → … → `FILE.<keep>`, then a new `FILE`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        let path = &self.settings.path;
        let keep = self.settings.keep;
        if keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            for n in (1..keep).rev() {
                match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        self.reopen()
    }

    fn failed(&mut self, what: &str, e: &std::io::Error) {
        EventCounters::inc(&EVENTS.lost_flow_log);
        if !self.failing {
            self.failing = true;
            warn!(path = %self.settings.path.display(), "flow log: {what}: {e}; records are lost (counted in zone_agent_events_lost_total{{stage=\"flow_log\"}}) until it works again");
        }
    }

    fn try_write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            if self
                .last_open_try
                .is_some_and(|t| t.elapsed() < FLUSH_EVERY)
            {
                return Err(std::io::Error::other("the file could not be reopened"));
            }
            self.reopen()?;
        }
        if self.size > 0 && self.size + line.len() as u64 > self.settings.max_bytes {
            self.rotate()?;
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Appends one record.
    pub fn write(&mut self, r: &Record) {
        let mut line = ecs::document(r).to_string().into_bytes();
        line.push(b'\n');
        match self.try_write(&line) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    info!(path = %self.settings.path.display(), "flow log: writing again");
                }
            }
            Err(e) => {
                // A buffered writer in an unknown state: start over on the next write.
                self.file = None;
                self.failed("write", &e);
            }
        }
        self.tick();
    }

    /// Flushes if the last flush is [`FLUSH_EVERY`] old (call at least that often).
    pub fn tick(&mut self) {
        if self.last_flush.elapsed() < FLUSH_EVERY {
            return;
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.flush()
        {
            // What was buffered is lost; counted as one (the count of lines is not known).
            self.file = None;
            self.failed("flush", &e);
        }
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Record {
        Record {
            time_ms: 1_000 + i,
            ..crate::events::sample_record()
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("za-flowlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotation_keeps_the_configured_count() {
        let d = dir("rotate");
        let path = d.join("flows.json");
        let line_len = ecs::document(&record(0)).to_string().len() as u64 + 1;
        let mut log = FlowLog::open(Settings {
            path: path.clone(),
            max_bytes: line_len * 3,
            keep: 2,
        })
        .unwrap();
        for i in 0..20 {
            log.write(&record(i));
        }
        log.flush();
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["flows.json", "flows.json.1", "flows.json.2"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & !FILE_MODE,
            0,
            "{mode:o}: more than owner rw, group r"
        );
        // Each full file holds whole lines, at most max_bytes; the newest lines are in FILE.
        let text = std::fs::read_to_string(&path).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["@timestamp"], ecs::timestamp(1_019));
        for n in ["flows.json.1", "flows.json.2"] {
            let t = std::fs::read_to_string(d.join(n)).unwrap();
            assert_eq!(t.len() as u64, line_len * 3, "{n}");
            assert!(
                t.lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failing_write_is_counted_not_fatal() {
        let d = dir("fail");
        let path = d.join("flows.json");
        let mut log = FlowLog::open(Settings {
            path: path.clone(),
            max_bytes: 10,
            keep: 1,
        })
        .unwrap();
        log.write(&record(0));
        // The directory goes away: rotation (rename) fails, the record is counted lost.
        std::fs::remove_dir_all(&d).unwrap();
        let before = EVENTS
            .lost_flow_log
            .load(std::sync::atomic::Ordering::Relaxed);
        log.write(&record(1));
        let after = EVENTS
            .lost_flow_log
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(after > before);
        // And it comes back once the directory does (after the reopen interval).
        std::fs::create_dir_all(&d).unwrap();
        log.last_open_try = None;
        log.write(&record(2));
        log.flush();
        assert!(std::fs::read_to_string(&path).unwrap().contains("1970"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
