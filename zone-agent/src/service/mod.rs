//! How the parts of a running agent talk (SPEC §10: bounded channels, not one shared lock).
//!
//! * One **control task** (a thread) owns the [`Agent`]: it alone reloads (SIGHUP, admin
//!   `reload`, a changed policy file, a retry after a failure) and saves state. Requests reach
//!   it through a bounded channel; a full channel means a reload is already queued.
//! * After each step that changes what readers see, the control task **publishes** a
//!   [`Snapshot`] (names, totals, status) by swapping an `Arc`. `/metrics`, `status` and
//!   `flows` read that snapshot plus their own handles on the pinned maps (the kernel makes
//!   concurrent map reads safe): they never wait for a reload, and a reload never waits for
//!   them.
//! * The run loop (signals, systemd watchdog) waits on nothing but the clock and signals.
//! * The policy file is watched by its metadata (`stat`: device, inode, size, times, type),
//!   never by reading it, and it is read only through [`read_file`], which refuses
//!   anything but a regular file without blocking (a FIFO in its place cannot wedge the agent).
//!
//! The parts: [`agent`] (owns the data path, loads and reloads), [`admin`] (the local admin
//! socket), [`http`] (`/metrics`, the operator's [`page`] and its [`overview`] JSON);
//! `cli/run.rs` wires them.

pub mod admin;
pub mod agent;
pub mod events;
pub mod http;
pub mod overview;
pub mod page;

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use self::{admin::Status, agent::Agent};
use crate::{
    datapath::Maps,
    policy::read::{ReadError, read_file},
    telemetry::Telemetry,
};

/// How often the control task looks at the policy file's metadata.
pub const POLICY_POLL: Duration = Duration::from_secs(1);
/// How often idle flows are removed (by a task of its own, on its own map handles).
pub const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// First and longest wait before retrying a reload that failed for a reason other than the
/// policy itself (descriptors or memory exhausted, a map update refused...).
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Denied attempts kept for the page.
pub const RECENT_EVENTS: usize = 200;
/// Requests that may wait for the control task.
const QUEUE: usize = 8;

/// What readers see of the agent, as of the last publish.
#[derive(Clone)]
pub struct Snapshot {
    pub telemetry: Telemetry,
    /// The set the program reads.
    pub active_set: u32,
    /// `status` without `flows_active` (counted live by the reader).
    pub status: Status,
}

/// The published snapshot and the readers' own handles on the pinned maps.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub maps: Maps,
    /// The last denied and audited attempts (filled by the event fan-out).
    pub recent: Arc<crate::events::Recent>,
    /// The `observe` clients (fed by the event fan-out).
    pub observers: Arc<crate::events::observe::Hub>,
}

impl Shared {
    pub fn new(maps: Maps, first: Snapshot) -> Shared {
        Shared {
            snapshot: RwLock::new(Arc::new(first)),
            maps,
            recent: Arc::new(crate::events::Recent::new(RECENT_EVENTS)),
            observers: Arc::default(),
        }
    }

    /// The latest snapshot (the lock is held only to clone an `Arc`).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn publish(&self, s: Snapshot) {
        let new = Arc::new(s);
        let old = std::mem::replace(
            &mut *self.snapshot.write().unwrap_or_else(|e| e.into_inner()),
            new,
        );
        // Dropped outside the lock (a big policy's names take a while to free).
        drop(old);
    }
}

/// Identity of the policy file's current contents, from `stat` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyStamp {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl PolicyStamp {
    /// `None`: the path cannot be stat'ed (missing, no permission).
    pub fn of(path: &Path) -> Option<PolicyStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(PolicyStamp {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Timestamps move in clock ticks (a few ms), so a file rewritten in place, to the same size,
/// within the tick of its last read keeps its metadata. A file read less than this after its
/// last modification is therefore looked at once more (its contents hashed) this long after.
const SETTLE: Duration = Duration::from_secs(2);

/// What the agent knows of the policy file since it last read it, to notice changes without
/// re-reading it: its metadata, and for a file read just after it was modified, one later
/// look at its contents.
#[derive(Debug, Default)]
pub struct FileWatch {
    stamp: Option<PolicyStamp>,
    hash: Option<u64>,
    recheck_at: Option<Instant>,
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(bytes)
}

impl FileWatch {
    /// Reads `path` with [`read_file`] and remembers what it read.
    pub fn read(&mut self, path: &Path) -> Result<Vec<u8>, ReadError> {
        self.stamp = PolicyStamp::of(path);
        self.hash = None;
        self.recheck_at = None;
        let bytes = read_file(path)?;
        self.hash = Some(hash(&bytes));
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let recent = modified.is_none_or(|m| m.elapsed().map_or(true, |age| age < SETTLE));
        if recent {
            self.recheck_at = Some(Instant::now() + SETTLE);
        }
        Ok(bytes)
    }

    /// True if the file changed since it was read: its metadata differs, or (once, for a file
    /// read just after a modification) its contents do.
    pub fn changed(&mut self, path: &Path) -> bool {
        if PolicyStamp::of(path) != self.stamp {
            return true;
        }
        match self.recheck_at {
            Some(at) if Instant::now() >= at => {
                self.recheck_at = None;
                let now = read_file(path).ok().map(|b| hash(&b));
                now.is_some() && now != self.hash
            }
            _ => false,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd's `LimitNOFILE=` sets both),
/// so that connections a local user holds open cannot starve a reload of descriptors. The
/// listeners bound their own connections besides. Returns (old soft, new soft).
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: valid pointer; lowering nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, r.rlim_cur))
}

/// Gives freed heap back to the system (glibc keeps it otherwise: an agent that once loaded a
/// huge policy would stay at that size).
pub fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The answer to a reload request: the generation now enforcing, or why not (with the
/// generation that keeps enforcing).
pub type ReloadReply = Result<u32, (String, u32)>;

pub enum Request {
    Reload {
        why: &'static str,
        reply: Option<tokio::sync::oneshot::Sender<ReloadReply>>,
    },
    /// Wakes the control task so that it sees the stop flag.
    Stop,
}

/// The run loop's and the admin socket's handle on the control task.
#[derive(Clone)]
pub struct Control {
    tx: SyncSender<Request>,
    stop: Arc<AtomicBool>,
    /// Since when (ms on [`monotonic_ms`]) the control task has been busy; 0: idle.
    busy_since: Arc<AtomicU64>,
}

impl Control {
    /// Queues `r` without waiting. `false`: the queue is full (reloads already pending, which
    /// read the file as it is then) or the task is gone.
    pub fn request(&self, r: Request) -> bool {
        match self.tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!("the control task's queue is full: reloads are already pending");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// How long the current step of the control task has been running (`None`: idle).
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis(monotonic_ms().saturating_sub(t))),
        }
    }

    /// Asks the control task to save its state and stop after the current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Request::Stop);
    }
}

/// Milliseconds on CLOCK_MONOTONIC, never 0.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000).max(1)
}

/// Starts the control task, which owns `agent` from now on. It saves state and calls
/// [`Agent::shutdown`] when stopped.
pub fn spawn_control(agent: Agent) -> std::io::Result<(Control, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let control = Control {
        tx,
        stop: Arc::new(AtomicBool::new(false)),
        busy_since: Arc::new(AtomicU64::new(0)),
    };
    let c = control.clone();
    let handle = std::thread::Builder::new()
        .name("za-control".into())
        .spawn(move || control_loop(agent, rx, c))?;
    Ok((control, handle))
}

struct Retry {
    at: Instant,
    backoff: Duration,
}

fn control_loop(mut agent: Agent, rx: Receiver<Request>, c: Control) {
    let mut next_poll = Instant::now() + POLICY_POLL;
    let mut retry: Option<Retry> = None;
    while !c.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let mut wait = next_poll.saturating_duration_since(now);
        if let Some(r) = &retry {
            wait = wait.min(r.at.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(Request::Reload { why, reply }) => {
                if c.stop.load(Ordering::SeqCst) {
                    break;
                }
                info!("{why}: reloading policy");
                let r = reload(&mut agent, &c, &mut retry);
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
            }
            Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if c.stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        if now >= next_poll {
            next_poll = now + POLICY_POLL;
            if agent.policy_changed() {
                info!(policy = %agent.policy_path.display(), "policy file changed: reloading");
                // A change supersedes a pending retry.
                retry = None;
                let _ = reload(&mut agent, &c, &mut retry);
            }
        }
        if retry.as_ref().is_some_and(|r| Instant::now() >= r.at) {
            info!("retrying the failed policy reload");
            let _ = reload(&mut agent, &c, &mut retry);
        }
    }
    agent.shutdown();
}

fn reload(agent: &mut Agent, c: &Control, retry: &mut Option<Retry>) -> ReloadReply {
    c.busy_since.store(monotonic_ms(), Ordering::Relaxed);
    let r = agent.reload();
    c.busy_since.store(0, Ordering::Relaxed);
    let generation = agent.telemetry.generation;
    let out = match r {
        Ok(g) => {
            *retry = None;
            Ok(g)
        }
        Err(e) => {
            if e.retry {
                let backoff = retry
                    .as_ref()
                    .map_or(RETRY_FIRST, |r| (r.backoff * 2).min(RETRY_MAX));
                error!(
                    "policy reload FAILED (not the policy's fault); generation {generation} keeps enforcing, so a rule just revoked may still pass. Retrying in {backoff:?}"
                );
                *retry = Some(Retry {
                    at: Instant::now() + backoff,
                    backoff,
                });
            } else {
                *retry = None;
            }
            Err((format!("{:#}", e.error), generation))
        }
    };
    trim_memory();
    out
}

/// The listeners' refusal counters live in telemetry (which exports them); the old path stays.
pub use crate::telemetry::{REFUSED_ADMIN, REFUSED_METRICS, refused_connections};

/// The connection bound of one listener: at most `max` connections served at once; a
/// connection over the bound is closed right after accept (so it holds no descriptor),
/// counted in `refused`, and logged at most every 10 s.
pub struct Slots {
    what: &'static str,
    max: usize,
    sem: Arc<tokio::sync::Semaphore>,
    refused: &'static AtomicU64,
    last_warning: Option<Instant>,
}

impl Slots {
    pub fn new(what: &'static str, max: usize, refused: &'static AtomicU64) -> Slots {
        Slots {
            what,
            max,
            sem: Arc::new(tokio::sync::Semaphore::new(max)),
            refused,
            last_warning: None,
        }
    }

    /// Admits a connection just accepted (`Some`: serve it; the slot is freed when the permit
    /// drops) or closes it. An accept error is logged and waited out (EMFILE: do not spin).
    pub async fn admit<S>(
        &mut self,
        accepted: std::io::Result<S>,
    ) -> Option<(S, tokio::sync::OwnedSemaphorePermit)> {
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!("{}: accept: {e}", self.what);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return None;
            }
        };
        match self.sem.clone().try_acquire_owned() {
            Ok(permit) => Some((stream, permit)),
            Err(_) => {
                drop(stream);
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if self
                    .last_warning
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    self.last_warning = Some(Instant::now());
                    warn!(
                        "{}: {} connections already open; closed new ones ({} so far)",
                        self.what, self.max, n
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("za-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stamp_notices_rewrites_and_replacements() {
        let d = dir("stamp");
        let p = d.join("policy.toml");
        std::fs::write(&p, "a").unwrap();
        let s1 = PolicyStamp::of(&p).unwrap();
        assert_eq!(
            PolicyStamp::of(&p),
            Some(s1),
            "stable while nothing changes"
        );
        // Rewritten in place (another size: a same-size rewrite within one clock tick is
        // FileWatch's recheck's job).
        std::fs::write(&p, "bb").unwrap();
        let s2 = PolicyStamp::of(&p).unwrap();
        assert_ne!(s1, s2);
        // Replaced by rename (a new inode).
        let tmp = d.join("tmp");
        std::fs::write(&tmp, "bb").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_ne!(PolicyStamp::of(&p).unwrap(), s2);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(PolicyStamp::of(&p), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn one_lock_per_pin_dir() {
        let d = dir("lock");
        let held = crate::datapath::pin::lock_dir(&d).unwrap();
        let e = crate::datapath::pin::lock_dir(&d).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        drop(held);
        crate::datapath::pin::lock_dir(&d).expect("free again once the holder is gone");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[test]
    fn a_same_size_rewrite_within_a_tick_is_noticed_once_settled() {
        let d = std::env::temp_dir().join(format!("za-watch-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("policy.toml");
        std::fs::write(&p, "a").unwrap();
        let mut w = FileWatch::default();
        w.read(&p).unwrap();
        assert!(!w.changed(&p));
        // Rewrite in place keeping size and (forced) timestamps: metadata cannot tell.
        let before = std::fs::metadata(&p).unwrap();
        std::fs::write(&p, "b").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(before.modified().unwrap()))
            .unwrap();
        drop(f);
        // ctime moved, so force the recheck path by hand: same stamp as now.
        w.stamp = PolicyStamp::of(&p);
        w.recheck_at = Some(Instant::now());
        assert!(w.changed(&p), "the contents changed");
        // Once only.
        w.stamp = PolicyStamp::of(&p);
        assert!(!w.changed(&p));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
