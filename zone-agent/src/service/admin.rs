//! The admin socket: `<state_dir>/admin.sock`, a Unix socket only root can open (0600), for
//! `zone-agent status | flows | reload | observe`. One request line (`status`, `flows`,
//! `reload`), one JSON answer, then the connection closes. Local only by construction.
//!
//! `status` and `flows` are answered from what the control task last published and the
//! maps (never waiting for a reload); `reload` is queued to the control task. At most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed on accept), and a
//! request line must arrive within [`REQUEST_TIMEOUT`].
//!
//! `observe <filter JSON>` streams: one line `{"observing": <filter>}` (or `{"error": …}`),
//! then one JSON line per matching record until the client closes the connection. An
//! observe stream gives its connection slot back and holds one of [`MAX_OBSERVERS`] slots
//! of its own instead, so streams never starve `status` and `reload`. A client that does
//! not take a line within [`OBSERVE_WRITE_TIMEOUT`], or falls `CLIENT_QUEUE` records
//! behind, is disconnected and counted (`zone_agent_observe_clients_dropped_total`).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        UnixListener,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tracing::{info, warn};
use zone_agent_common::*;

use crate::{
    config::failsafe::Resolved,
    datapath::{Adoption, Maps},
    events::observe::Filter,
    service::{Control, Request, Shared, Slots},
    telemetry::SetNames,
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// For the request line to arrive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// For a reload to answer (a very large policy takes a while).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest request line read (an `observe` filter included).
const MAX_LINE: u64 = 1024;
/// `observe` streams served at once (beside the [`MAX_CONNECTIONS`] requests).
pub const MAX_OBSERVERS: usize = 8;
/// An `observe` client that does not take a line for this long is disconnected.
pub const OBSERVE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The streaming request's word.
pub const OBSERVE: &str = "observe";

pub const SOCKET: &str = "admin.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// True if an agent answers on the socket of `state_dir`.
pub fn agent_running(state_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(state_dir)).is_ok()
}

/// Why the admin socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "another zone-agent is running with state dir {} (its admin socket answers); stop it first",
        state_dir.display()
    )]
    AgentRunning { state_dir: PathBuf },
    /// Removing the stale socket, binding, or setting its mode failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Binds the socket (replacing a stale one left by a killed agent), mode 0600.
pub fn bind(state_dir: &Path) -> Result<UnixListener, BindError> {
    let path = socket_path(state_dir);
    if path.exists() {
        if agent_running(state_dir) {
            return Err(BindError::AgentRunning {
                state_dir: state_dir.to_path_buf(),
            });
        }
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "admin socket");
    Ok(l)
}

pub async fn serve(listener: UnixListener, shared: Arc<Shared>, control: Control) {
    let mut slots = Slots::new(
        "admin socket",
        MAX_CONNECTIONS,
        &crate::telemetry::REFUSED_ADMIN,
    );
    let observers = Arc::new(tokio::sync::Semaphore::new(MAX_OBSERVERS));
    loop {
        let Some((stream, slot)) = slots.admit(listener.accept().await.map(|(s, _)| s)).await
        else {
            continue;
        };
        let (shared, control, observers) = (shared.clone(), control.clone(), observers.clone());
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r.take(MAX_LINE));
            match tokio::time::timeout(REQUEST_TIMEOUT, r.read_line(&mut line)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let cmd = line.trim().to_string();
            if let Some(filter) = cmd.strip_prefix(OBSERVE) {
                drop(slot);
                observe(shared, &observers, filter, r.into_inner().into_inner(), w).await;
                return;
            }
            let _slot = slot;
            let answer = handle(shared, control, &cmd).await;
            let mut text = answer.to_string();
            text.push('\n');
            if let Err(e) = w.write_all(text.as_bytes()).await {
                warn!("admin socket: {e}");
            }
        });
    }
}

/// Writes `v` and a newline within [`OBSERVE_WRITE_TIMEOUT`]: `Err(true)` timed out,
/// `Err(false)` the client is gone.
async fn send_line(w: &mut OwnedWriteHalf, v: &impl Serialize) -> Result<(), bool> {
    let mut text = serde_json::to_string(v).unwrap_or_default();
    text.push('\n');
    match tokio::time::timeout(OBSERVE_WRITE_TIMEOUT, w.write_all(text.as_bytes())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// Serves one `observe` stream (`filter`: the JSON after the word, empty for all).
async fn observe(
    shared: Arc<Shared>,
    slots: &Arc<tokio::sync::Semaphore>,
    filter: &str,
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
) {
    let filter = filter.trim();
    let filter: Result<Filter, String> = if filter.is_empty() {
        Ok(Filter::default())
    } else {
        serde_json::from_str(filter).map_err(|e| format!("bad observe filter: {e}"))
    };
    let filter = filter.and_then(|f| f.check().map(|()| f));
    let Ok(_slot) = slots.clone().try_acquire_owned() else {
        let e = format!("{MAX_OBSERVERS} observe clients are already connected; try again later");
        let _ = send_line(&mut w, &serde_json::json!({ "error": e })).await;
        return;
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            let _ = send_line(&mut w, &serde_json::json!({ "error": e })).await;
            return;
        }
    };
    let mut sub = shared.observers.subscribe(filter.clone());
    if send_line(&mut w, &serde_json::json!({ "observing": filter }))
        .await
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            rec = sub.rx.recv() => {
                // None: the fan-out dropped this client (it fell behind; counted there).
                let Some(rec) = rec else { return };
                match send_line(&mut w, &*rec).await {
                    Ok(()) => {}
                    Err(true) => {
                        sub.drop_slow();
                        return;
                    }
                    Err(false) => return,
                }
            }
            // The client closed its end (or sent more than it should): stop.
            _ = r.read(&mut buf) => return,
        }
    }
}

/// Runs `f` on the blocking pool (map reads are syscalls).
async fn on_blocking(
    shared: Arc<Shared>,
    f: impl FnOnce(&Shared) -> serde_json::Value + Send + 'static,
) -> serde_json::Value {
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

async fn handle(shared: Arc<Shared>, control: Control, cmd: &str) -> serde_json::Value {
    match cmd {
        "status" => {
            on_blocking(shared, |s| {
                let snap = s.snapshot();
                let mut st = snap.status.clone();
                let (flows, embryos) = s.maps.flow_entries();
                st.flows_active = flows + embryos;
                serde_json::to_value(st).unwrap_or_default()
            })
            .await
        }
        "flows" => {
            on_blocking(shared, |s| {
                let snap = s.snapshot();
                let names = snap.telemetry.sets[snap.active_set as usize]
                    .clone()
                    .unwrap_or_default();
                serde_json::to_value(flows(&s.maps, names)).unwrap_or_default()
            })
            .await
        }
        "reload" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if !control.request(Request::Reload {
                why: "admin socket",
                reply: Some(tx),
            }) {
                return serde_json::json!({ "result": "error", "error": "reloads are already queued (or the agent is stopping); try again", "generation": shared.snapshot().telemetry.generation });
            }
            match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
                Ok(Ok(Ok(g))) => serde_json::json!({ "result": "success", "generation": g }),
                Ok(Ok(Err((e, g)))) => {
                    serde_json::json!({ "result": "error", "error": e, "generation": g })
                }
                _ => {
                    serde_json::json!({ "result": "error", "error": "the reload did not answer in time; see the agent's log", "generation": shared.snapshot().telemetry.generation })
                }
            }
        }
        other => {
            serde_json::json!({ "error": format!("unknown request {other:?}; expected status, flows, reload or observe") })
        }
    }
}

#[derive(Clone, Serialize)]
pub struct Status {
    pub pid: u32,
    pub version: &'static str,
    pub policy: String,
    pub mode: &'static str,
    pub generation: u32,
    pub zones: Vec<String>,
    pub rules: usize,
    pub program_id: Option<u32>,
    pub interfaces: Vec<InterfaceStatus>,
    pub failsafe: Vec<Resolved>,
    pub flows_active: u64,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    pub pin_dir: String,
    pub abi: String,
    pub adopted: Adoption,
    pub fail_open_on_exit: bool,
    pub metrics_addr: String,
}

#[derive(Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// How it was attached by this run (`native`, `generic`, or `adopted` from a pin).
    pub attach: &'static str,
    /// Program the kernel runs on it.
    pub program_id: Option<u32>,
}

#[derive(Serialize)]
pub struct Flow {
    pub proto: u8,
    pub src: String,
    pub dst: String,
    pub from_zone: String,
    pub to_zone: String,
    pub rule: Option<String>,
    pub generation: u32,
    pub replied: bool,
    pub idle_ms: u64,
}

/// At most this many flows are listed (the tables hold up to `CAP_FLOWS` + `CAP_EMBRYOS`).
const FLOWS_LISTED: usize = 10_000;

fn flows(maps: &Maps, names: SetNames) -> Vec<Flow> {
    let now = crate::datapath::stats::monotonic_coarse_ns();
    let zone = |id: u8| {
        names
            .zones
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    };
    let addr = |b: &[u8; 16], fam: u8, port: u16| {
        let ip: IpAddr = if fam == FAMILY_V4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(*b)
        };
        match ip {
            IpAddr::V4(v) => format!("{v}:{port}"),
            IpAddr::V6(v) => format!("[{v}]:{port}"),
        }
    };
    // Replied flows first (the ones worth seeing), then embryonic ones.
    maps.flows
        .iter()
        .chain(maps.embryos.iter())
        .filter_map(Result::ok)
        .take(FLOWS_LISTED)
        .map(|(k, st)| {
            let ea = addr(&k.a, k.family, k.a_port);
            let eb = addr(&k.b, k.family, k.b_port);
            let (src, dst) = if st.orig_is_a != 0 {
                (ea, eb)
            } else {
                (eb, ea)
            };
            Flow {
                proto: k.proto,
                src,
                dst,
                from_zone: zone(st.from_zone),
                to_zone: zone(st.to_zone),
                rule: names.rules.get(st.rule as usize).cloned(),
                generation: st.generation,
                replied: st.flags & FLOW_REPLIED != 0,
                idle_ms: now.saturating_sub(st.last_seen_ns) / 1_000_000,
            }
        })
        .collect()
}
