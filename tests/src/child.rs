//! [`ChildGuard`]: a spawned process that is stopped and reaped when the guard drops.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a child gets between SIGTERM and SIGKILL when it is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Owns a child process (normally started with [`crate::Lab::spawn`]).
///
/// On drop: SIGTERM, then SIGKILL if it is still running after [`STOP_GRACE`], then wait, so
/// no process outlives its test and no zombie is left. Declare the lab before its children
/// (`let lab = ...; let agent = ...;`) so the children stop first. With `ZA_KEEP_LAB=1` the
/// child is left running and its pid printed.
pub struct ChildGuard {
    child: Child,
    what: String,
    log: PathBuf,
    status: Option<ExitStatus>,
    detached: bool,
}

impl ChildGuard {
    pub(crate) fn new(child: Child, what: String, log: PathBuf) -> ChildGuard {
        ChildGuard {
            child,
            what,
            log,
            status: None,
            detached: false,
        }
    }

    /// The child's pid (the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives the child's stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// What the child's log holds so far (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the child. Panics if the child has already exited and been reaped.
    pub fn signal(&self, sig: Signal) {
        if let Some(status) = self.status {
            panic!(
                "cannot send {sig} to `{}`: it already exited ({status})",
                self.what
            );
        }
        if let Err(err) = kill(self.nix_pid(), sig) {
            panic!(
                "sending {sig} to `{}` (pid {}) failed: {err}",
                self.what,
                self.pid()
            );
        }
    }

    /// The exit status if the child has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.status = status,
                Err(err) => eprintln!("zone-agent-lab: waiting for `{}`: {err}", self.what),
            }
        }
        self.status
    }

    /// Waits (bounded poll) up to `timeout` for the child to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, SIGKILL after [`STOP_GRACE`], then reap. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        // ESRCH here means it died between the check and the signal: the wait below reaps it.
        let _ = kill(self.nix_pid(), Signal::SIGTERM);
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            return Some(status);
        }
        eprintln!(
            "zone-agent-lab: `{}` (pid {}) ignored SIGTERM for {STOP_GRACE:?}: SIGKILL",
            self.what,
            self.pid()
        );
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => {
                self.status = Some(status);
                Some(status)
            }
            Err(err) => {
                eprintln!("zone-agent-lab: reaping `{}`: {err}", self.what);
                None
            }
        }
    }

    /// Gives up ownership: the child keeps running after the guard is gone. Returns its pid.
    pub fn detach(mut self) -> u32 {
        self.detached = true;
        self.pid()
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }
}

impl fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildGuard")
            .field("pid", &self.pid())
            .field("what", &self.what)
            .field("log", &self.log)
            .field("status", &self.status)
            .finish()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if crate::keep_lab() && self.exited().is_none() {
            eprintln!(
                "zone-agent-lab: ZA_KEEP_LAB=1, leaving `{}` running as pid {} (log {})",
                self.what,
                self.pid(),
                self.log.display()
            );
            return;
        }
        // Never panic here: this may run while a failed test unwinds.
        self.stop();
    }
}
