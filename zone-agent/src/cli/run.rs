//! `zone-agent run`: start (adopting pinned state), then serve metrics and the admin socket,
//! reload on SIGHUP or file change, expire flows, ping the systemd watchdog, and exit on
//! SIGTERM/SIGINT with the policy left enforcing.

use std::{io::IsTerminal as _, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::RunArgs;
use crate::{
    config,
    datapath::pin,
    service::{self, Control, Request, Shared, admin, agent::Agent},
};

/// The watchdog pings stop (and systemd restarts the agent) once one step of the control
/// task (a reload) has run this long: it is wedged. Anything else never delays a ping.
const CONTROL_STUCK: Duration = Duration::from_secs(120);
/// On SIGTERM, how long the control task gets to finish its step and save its state.
const STOP_GRACE: Duration = Duration::from_secs(10);

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
    let settings = config::settings(&args.overrides())?;
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
    // Connections a local user opens to the metrics port must not starve a reload of
    // descriptors: use all the descriptors the hard limit allows (the listeners also bound
    // their connections).
    match service::raise_nofile_limit() {
        Ok((old, new)) if old != new => {
            info!(from = old, to = new, "raised the soft limit of open files")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot raise the limit of open files: {e}"),
    }
    // One agent per pin dir: a second one would install its own policy over the first's and
    // their generation numbers would collide. The lock is the pin dir itself, held until exit.
    pin::Pins::new(&settings.pin_dir)
        .prepare()
        .with_context(|| format!("preparing the pin dir {}", settings.pin_dir.display()))?;
    let _pin_lock = match pin::lock_dir(&settings.pin_dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => anyhow::bail!(
            "another zone-agent is running with pin dir {} (it holds the lock on it); two agents on one pin dir would overwrite each other's policy. Stop it first, or give this one its own --pin-dir",
            settings.pin_dir.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("locking the pin dir {}", settings.pin_dir.display()));
        }
    };
    if settings.fail_open_on_exit {
        tracing::warn!(
            "fail_open_on_exit is set: when this agent stops, XDP is detached and the zone gates OPEN"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let metrics_addr = settings.metrics_addr;
    let state_dir = settings.state_dir.clone();
    let flow_log = settings.flow_log.clone();
    let flows_events = settings.events.flows;
    let mut agent = Agent::start(settings)?;
    let open_maps = |agent: &Agent| {
        agent
            .dp
            .open_pinned_maps()
            .context("the agent's maps are not pinned")?
            .context("opening the pinned maps")
    };
    let shared = Arc::new(Shared::new(open_maps(&agent)?, agent.snapshot()));
    agent.shared = Some(shared.clone());
    let ring = agent.dp.maps.take_events_ring();
    if ring.is_none() {
        warn!("the data path's event ring is not available: no events from the kernel");
    }
    let mut swept = service::events::start(
        &shared,
        flow_log,
        ring.map(|r| Box::new(r) as Box<dyn crate::events::reader::Ring>),
        flows_events,
    )?;
    let mut expire_maps = open_maps(&agent)?;
    std::thread::Builder::new()
        .name("za-expire".into())
        .spawn(move || {
            loop {
                std::thread::sleep(service::EXPIRE_EVERY);
                let removed = expire_maps.expire();
                swept.ended(&removed);
            }
        })
        .context("starting the flow expiry task")?;
    let (control, handle) = service::spawn_control(agent).context("starting the control task")?;
    let result = rt.block_on(serve(
        metrics_addr,
        &state_dir,
        shared,
        control.clone(),
        &handle,
    ));
    control.stop();
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while !handle.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !handle.is_finished() {
        error!(
            "the control task did not finish its step within {STOP_GRACE:?}; exiting without it (state not saved; the pinned policy keeps enforcing)"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(admin::socket_path(&state_dir));
    result.map(|_| ExitCode::SUCCESS)
}

async fn serve(
    metrics_addr: std::net::SocketAddr,
    state_dir: &std::path::Path,
    shared: Arc<Shared>,
    control: Control,
    control_task: &std::thread::JoinHandle<()>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding metrics address {metrics_addr}"))?;
    info!(addr = %metrics_addr, "metrics at /metrics");
    let metrics = tokio::spawn(service::http::serve(listener, shared.clone()));
    let admin_listener = admin::bind(state_dir).context("binding the admin socket")?;
    let admin = tokio::spawn(admin::serve(admin_listener, shared, control.clone()));
    // systemd watchdog: ping at half the interval it asked for. This loop waits on nothing
    // but signals and the clock; the pings stop only if the control task is wedged in one
    // step for CONTROL_STUCK, or has died.
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut ping = tokio::time::interval(if watchdog {
        Duration::from_micros(watchdog_usec / 2)
    } else {
        Duration::from_secs(1)
    });
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let result = loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reload requested");
                control.request(Request::Reload { why: "SIGHUP", reply: None });
            }
            _ = ping.tick() => {
                if control_task.is_finished() {
                    break Err(anyhow::anyhow!("the control task stopped"));
                }
                match control.busy_for() {
                    Some(d) if d > CONTROL_STUCK => {
                        error!("the control task has been in one step for {d:?}: wedged; watchdog pings stop");
                    }
                    _ => {
                        if watchdog {
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                }
            }
            _ = term.recv() => { info!("SIGTERM: exiting"); break Ok(()); }
            _ = int.recv() => { info!("SIGINT: exiting"); break Ok(()); }
        }
        if metrics.is_finished() {
            error!("metrics server stopped");
            break Ok(());
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    metrics.abort();
    admin.abort();
    result
}
