//! `zone-agent run`: start, then serve metrics, reload on SIGHUP or file change, expire
//! flows, and detach cleanly on SIGTERM/SIGINT.

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
use crate::{agent::Agent, telemetry};

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
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    let agent = Agent::start(&args.policy, args.xdp_mode)?;
    let agent = Arc::new(Mutex::new(agent));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(serve(args, agent.clone()));
    agent.lock().expect("agent lock").shutdown();
    result.map(|_| ExitCode::SUCCESS)
}

async fn serve(args: RunArgs, agent: Arc<Mutex<Agent>>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding metrics address {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "metrics at /metrics");
    let metrics = tokio::spawn(telemetry::server::serve(listener, agent.clone()));
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
            _ = expire.tick() => {
                let a = agent.clone();
                let _ = tokio::task::spawn_blocking(move || a.lock().expect("agent lock").dp.expire()).await;
            }
            _ = term.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = int.recv() => { info!("SIGINT: detaching and exiting"); break; }
        }
        if metrics.is_finished() {
            error!("metrics server stopped");
            break;
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    metrics.abort();
    Ok(())
}
