//! The admin socket: `<state_dir>/admin.sock`, a Unix socket only root can open (0600), for
//! `zone-agent status | flows | reload`. One request line (`status`, `flows`, `reload`),
//! one JSON answer, then the connection closes. Local only by construction.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
};
use tracing::{info, warn};
use zone_agent_common::*;

use crate::{agent::Agent, datapath::Adoption, failsafe::Resolved, policy::types::Mode};

pub const SOCKET: &str = "admin.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// True if an agent answers on the socket of `state_dir`.
pub fn agent_running(state_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(state_dir)).is_ok()
}

/// Binds the socket (replacing a stale one left by a killed agent), mode 0600.
pub fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = socket_path(state_dir);
    if path.exists() {
        if agent_running(state_dir) {
            anyhow::bail!(
                "another zone-agent is running with state dir {} (its admin socket answers); stop it first",
                state_dir.display()
            );
        }
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "admin socket");
    Ok(l)
}

pub async fn serve(listener: UnixListener, agent: Arc<Mutex<Agent>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let agent = agent.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let cmd = line.trim().to_string();
            let answer = tokio::task::spawn_blocking(move || {
                let mut a = agent.lock().expect("agent lock");
                handle(&mut a, &cmd)
            })
            .await
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            let mut text = answer.to_string();
            text.push('\n');
            if let Err(e) = w.write_all(text.as_bytes()).await {
                warn!("admin socket: {e}");
            }
        });
    }
}

fn handle(a: &mut Agent, cmd: &str) -> serde_json::Value {
    match cmd {
        "status" => serde_json::to_value(status(a)).unwrap_or_default(),
        "flows" => serde_json::to_value(flows(a)).unwrap_or_default(),
        "reload" => match a.reload() {
            Ok(g) => serde_json::json!({ "result": "success", "generation": g }),
            Err(e) => serde_json::json!({ "result": "error", "error": format!("{e:#}"), "generation": a.telemetry.generation }),
        },
        other => serde_json::json!({ "error": format!("unknown request {other:?}; expected status, flows or reload") }),
    }
}

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// How it was attached by this run (`native`, `generic`, or `adopted` from a pin).
    pub attach: &'static str,
    /// Program the kernel runs on it.
    pub program_id: Option<u32>,
}

fn status(a: &Agent) -> Status {
    let links = a.dp.link_programs();
    let interfaces = a
        .dp
        .attached()
        .map(|(name, attach)| InterfaceStatus {
            name: name.clone(),
            attach,
            program_id: links.iter().find(|(n, _)| n == name).and_then(|(_, p)| *p),
        })
        .collect();
    Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        policy: a.policy_path.display().to_string(),
        mode: if a.policy.mode == Mode::Audit { "audit" } else { "enforce" },
        generation: a.telemetry.generation,
        zones: a.policy.zones.iter().map(|z| z.name.clone()).collect(),
        rules: a.policy.rules.len(),
        program_id: a.dp.program_id(),
        interfaces,
        failsafe: a.failsafe.clone(),
        flows_active: {
            let (flows, embryos) = a.dp.flow_entries();
            flows + embryos
        },
        reloads_ok: a.telemetry.reloads_ok,
        reloads_error: a.telemetry.reloads_error,
        pin_dir: a.settings.pin_dir.display().to_string(),
        abi: format!("{:016x}", abi_fingerprint()),
        adopted: a.adoption.clone(),
        fail_open_on_exit: a.settings.fail_open_on_exit,
        metrics_addr: a.settings.metrics_addr.to_string(),
    }
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

fn flows(a: &Agent) -> Vec<Flow> {
    let now = crate::datapath::stats::monotonic_coarse_ns();
    let names = a.telemetry.sets[a.dp.active_set as usize].clone().unwrap_or_default();
    let zone = |id: u8| names.zones.get(id as usize).cloned().unwrap_or_else(|| format!("#{id}"));
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
    let m = &a.dp.maps;
    m.flows
        .iter()
        .chain(m.embryos.iter())
        .filter_map(Result::ok)
        .take(FLOWS_LISTED)
        .map(|(k, st)| {
            let ea = addr(&k.a, k.family, k.a_port);
            let eb = addr(&k.b, k.family, k.b_port);
            let (src, dst) = if st.orig_is_a != 0 { (ea, eb) } else { (eb, ea) };
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
