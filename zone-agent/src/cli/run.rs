//! `zone-agent run`: start (adopting pinned state), then serve metrics and the admin socket,
//! reload on SIGHUP or file change, expire flows, ping the systemd watchdog, and exit on
//! SIGTERM/SIGINT with the policy left enforcing.

use std::{
    io::IsTerminal as _,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use super::RunArgs;
use crate::{admin, agent::Agent, config, telemetry};

const POLICY_POLL: Duration = Duration::from_secs(1);
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: under systemd (journald) or with stderr sent to a file,
        // escape codes would end up in the log text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = config::settings(&args)?;
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.state_dir)
            .with_context(|| format!("creating state dir {}", settings.state_dir.display()))?;
    }
    // Refuse early if another agent owns this state dir: two agents would fight over the
    // pinned links.
    if admin::agent_running(&settings.state_dir) {
        anyhow::bail!(
            "another zone-agent is running with state dir {}; stop it first",
            settings.state_dir.display()
        );
    }
    if settings.fail_open_on_exit {
        tracing::warn!("fail_open_on_exit is set: when this agent stops, XDP is detached and the zone gates OPEN");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let metrics_addr = settings.metrics_addr;
    let state_dir = settings.state_dir.clone();
    let agent = Agent::start(settings)?;
    let agent = Arc::new(Mutex::new(agent));
    let result = rt.block_on(serve(metrics_addr, &state_dir, agent.clone()));
    agent.lock().expect("agent lock").shutdown();
    let _ = std::fs::remove_file(admin::socket_path(&state_dir));
    result.map(|_| ExitCode::SUCCESS)
}

async fn serve(
    metrics_addr: std::net::SocketAddr,
    state_dir: &std::path::Path,
    agent: Arc<Mutex<Agent>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding metrics address {metrics_addr}"))?;
    info!(addr = %metrics_addr, "metrics at /metrics");
    let metrics = tokio::spawn(telemetry::server::serve(listener, agent.clone()));
    let admin_listener = admin::bind(state_dir).context("binding the admin socket")?;
    let admin = tokio::spawn(admin::serve(admin_listener, agent.clone()));
    // systemd watchdog: ping at half the interval it asked for, from the loop below, so a
    // wedged loop (e.g. a stuck reload) stops the pings and systemd restarts the agent;
    // enforcement stays pinned meanwhile.
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut ping = tokio::time::interval(if watchdog {
        Duration::from_micros(watchdog_usec / 2)
    } else {
        Duration::from_secs(3600)
    });
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(POLICY_POLL);
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading policy");
                let a = agent.clone();
                let _ = tokio::task::spawn_blocking(move || a.lock().expect("agent lock").reload()).await;
            }
            _ = poll.tick() => {
                let a = agent.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut a = a.lock().expect("agent lock");
                    if a.policy_changed() {
                        info!("policy file changed: reloading");
                        let _ = a.reload();
                    }
                }).await;
            }
            _ = ping.tick() => {
                if watchdog {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = expire.tick() => {
                let a = agent.clone();
                let _ = tokio::task::spawn_blocking(move || a.lock().expect("agent lock").dp.expire()).await;
            }
            _ = term.recv() => { info!("SIGTERM: exiting"); break; }
            _ = int.recv() => { info!("SIGINT: exiting"); break; }
        }
        if metrics.is_finished() {
            error!("metrics server stopped");
            break;
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    metrics.abort();
    admin.abort();
    Ok(())
}
