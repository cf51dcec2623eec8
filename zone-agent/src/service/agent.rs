//! The running agent: policy (load → compile) → datapath (apply, attach) → telemetry.
//! `run` drives it; this module holds the steps so that start and reload read the same way.
//!
//! Enforcement outlives the agent: links and maps are pinned, so a stop, a crash or a
//! `kill -9` leaves the last policy enforcing. `start` adopts what it finds pinned (same
//! maps: flows and counters kept; the new program swapped into each link atomically).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::{
    config::{Settings, failsafe},
    datapath::{Adoption, Datapath, XdpMode},
    policy::read::ReadError,
    policy::{self, Diagnostics, Policy, compile::Compiled, validate::HostEnvironment},
    service::{
        FileWatch, Shared, Snapshot,
        admin::{InterfaceStatus, Status},
    },
    telemetry::{Attachment, PolicyInfo, SetNames, Telemetry, persist, unix_ms},
};

pub struct Agent {
    pub dp: Datapath,
    pub telemetry: Telemetry,
    pub policy: Policy,
    pub policy_path: PathBuf,
    /// What was seen of the policy file when it was last read (loaded or rejected), to notice
    /// changes without reading it.
    pub watch: FileWatch,
    /// Where readers (metrics, admin socket) find what this agent publishes.
    pub shared: Option<Arc<Shared>>,
    pub settings: Settings,
    /// Failsafe flows as installed.
    pub failsafe: Vec<failsafe::Resolved>,
    /// What was found pinned at start.
    pub adoption: Adoption,
    xdp_mode: XdpMode,
}

/// Parse, validate (against this host's interfaces) and compile.
pub fn prepare(path: &Path) -> Result<(Policy, Compiled), Diagnostics> {
    let (p, warnings) = policy::validate::load(path, &HostEnvironment)?;
    finish_prepare(p, warnings)
}

/// Why a reload did not take effect; `retry`: the failure was not the policy's (I/O, the
/// data path), so the control task tries again.
#[derive(Debug)]
pub struct ReloadError {
    pub error: anyhow::Error,
    pub retry: bool,
}

/// [`prepare`] of the contents of `path`, read with [`crate::policy::read::read_file`]
/// (never blocks on a FIFO; bounded size).
fn prepare_file(path: &Path, watch: &mut FileWatch) -> Result<(Policy, Compiled), ReloadError> {
    let bytes = watch.read(path).map_err(|e| match e {
        ReadError::Refused(_) => ReloadError {
            error: e.into(),
            retry: false,
        },
        ReadError::Io(_) => ReloadError {
            error: e.into(),
            retry: true,
        },
    })?;
    let (p, warnings) =
        policy::validate::check_bytes(path, &bytes, &HostEnvironment).map_err(|d| ReloadError {
            error: anyhow::anyhow!("{d}"),
            retry: false,
        })?;
    drop(bytes);
    finish_prepare(p, warnings).map_err(|d| ReloadError {
        error: anyhow::anyhow!("{d}"),
        retry: false,
    })
}

fn finish_prepare(
    p: Policy,
    warnings: Vec<policy::Diagnostic>,
) -> Result<(Policy, Compiled), Diagnostics> {
    for w in warnings {
        warn!("{w}");
    }
    let c = policy::compile::compile(&p)?;
    Ok((p, c))
}

fn interfaces(p: &Policy) -> BTreeSet<String> {
    p.zones
        .iter()
        .flat_map(|z| z.interfaces.iter().map(|i| i.name.clone()))
        .collect()
}

/// The interface lookup lives in the data path; the old path stays for the lab tests.
pub use crate::datapath::ifindex;

impl Agent {
    /// The agent's status, but `flows_active` (0 here: readers count it from the maps).
    pub fn status(&self) -> Status {
        let a = self;
        let links = a.dp.link_programs();
        let interfaces =
            a.dp.attached()
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
            mode: a.policy.mode.label(),
            generation: a.telemetry.generation,
            zones: a.policy.zones.iter().map(|z| z.name.clone()).collect(),
            rules: a.policy.rules.len(),
            program_id: a.dp.program_id(),
            interfaces,
            failsafe: a.failsafe.clone(),
            flows_active: 0,
            reloads_ok: a.telemetry.reloads_ok,
            reloads_error: a.telemetry.reloads_error,
            pin_dir: a.settings.pin_dir.display().to_string(),
            abi: format!("{:016x}", zone_agent_common::abi_fingerprint()),
            adopted: a.adoption.clone(),
            fail_open_on_exit: a.settings.fail_open_on_exit,
            metrics_addr: a.settings.metrics_addr.to_string(),
        }
    }

    /// Loads (or adopts) the program and its pinned maps, installs the policy, then
    /// attaches: no interface ever runs the program without a complete policy behind it.
    pub fn start(settings: Settings) -> anyhow::Result<Agent> {
        let path = settings.policy.clone();
        let mut watch = FileWatch::default();
        let (policy, compiled) = prepare_file(&path, &mut watch).map_err(|e| e.error).with_context(|| {
            format!(
                "policy {} rejected (a policy pinned under {} by an earlier run, if any, keeps enforcing)",
                path.display(),
                settings.pin_dir.display()
            )
        })?;
        std::fs::create_dir_all(&settings.state_dir)
            .with_context(|| format!("creating state dir {}", settings.state_dir.display()))?;
        let (dp, adoption) =
            Datapath::load_pinned(&settings.pin_dir).context("loading the XDP program")?;
        let mut telemetry = Telemetry::default();
        if adoption.generation > 0 {
            let gens = [dp.set_generation(0), dp.set_generation(1)];
            match persist::restore(&settings.state_dir, gens, &mut telemetry) {
                Ok(()) => {}
                Err(e) => warn!(
                    "counters of the adopted policy cannot be labelled ({e}); they restart from zero"
                ),
            }
            info!(generation = adoption.generation, pin_dir = %settings.pin_dir.display(), "adopting the pinned enforcement state");
        }
        for r in &adoption.replaced {
            warn!(old = %r, "pinned state of an incompatible build: replacing it atomically (its counters are not carried over; its flows are if their layout is this build's)");
        }
        telemetry.generation = dp.generation;
        telemetry.fail_open_on_exit = settings.fail_open_on_exit;
        let mut agent = Agent {
            dp,
            telemetry,
            policy: policy.clone(),
            policy_path: path.clone(),
            watch,
            shared: None,
            failsafe: Vec::new(),
            adoption,
            xdp_mode: settings.xdp_mode,
            settings,
        };
        agent
            .dp
            .maps
            .set_event_config(agent.settings.events.kernel())
            .context("writing the event settings")?;
        let wanted = interfaces(&policy);
        agent
            .install_failsafe(&wanted)
            .context("installing the failsafe flows")?;
        let generation = agent
            .install(&policy, &compiled)
            .context("installing the policy")?;
        if let Err(e) = agent.dp.attach_all(&wanted, agent.xdp_mode) {
            // Interfaces attached by this start stay pinned and enforce the new policy; the
            // error stops the agent so that the operator sees it.
            return Err(e).context("attaching XDP");
        }
        agent
            .dp
            .detach_others(&wanted)
            .context("detaching interfaces no longer in the policy")?;
        agent.dp.remove_stale_pins();
        info!(policy = %path.display(), generation, rules = policy.rules.len(), zones = policy.zones.len(), "enforcing");
        Ok(agent)
    }

    /// Retires the set about to be overwritten, records the new names on disk, then applies
    /// and flips.
    fn install(&mut self, policy: &Policy, compiled: &Compiled) -> anyhow::Result<u32> {
        let set = self.dp.next_set();
        let retiring = match &self.telemetry.sets[set as usize] {
            Some(n) => self.dp.set_counters(set, n.zones.len(), n.rules.len())?,
            None => Default::default(),
        };
        self.telemetry.retire(set, &retiring);
        let mut names = SetNames::of(policy);
        names.generation = self.dp.generation + 1;
        self.telemetry.sets[set as usize] = Some(names);
        // On disk before the flip, so that a crash after it finds the names. Readers get the
        // retired totals now but the set's new names only after `apply` has zeroed its
        // counters: until then they hold the old policy's counts, already retired.
        self.persist();
        if let Some(s) = &self.shared {
            let mut snap = self.snapshot();
            snap.telemetry.sets[set as usize] = None;
            s.publish(snap);
        }
        match self.dp.apply(compiled, ifindex) {
            Ok(generation) => {
                self.telemetry.generation = generation;
                self.telemetry.policy = Arc::new(PolicyInfo::of(policy));
                self.telemetry.last_reload_unix_ms = unix_ms();
                self.policy = policy.clone();
                Ok(generation)
            }
            Err(e) => {
                self.telemetry.sets[set as usize] = None;
                self.save();
                Err(e.into())
            }
        }
    }

    /// Binds the configured failsafe flows to this host and writes them to the data path.
    fn install_failsafe(&mut self, zone_ifaces: &BTreeSet<String>) -> anyhow::Result<()> {
        let resolved = failsafe::resolve(
            &self.settings.failsafe,
            zone_ifaces,
            ifindex,
            &failsafe::local_addresses(),
        )?;
        self.dp.install_failsafe(&failsafe::tables(&resolved))?;
        for f in &resolved {
            info!(name = %f.name, sources = ?f.sources, ports = ?f.ports, "failsafe flow installed");
        }
        self.failsafe = resolved;
        Ok(())
    }

    /// Saves the state to disk, then publishes it to the readers: whatever a reader sees is
    /// what a restarted agent would find.
    fn save(&self) {
        self.persist();
        self.publish();
    }

    fn persist(&self) {
        if let Err(e) = persist::save(&self.settings.state_dir, &self.telemetry) {
            warn!(
                "cannot save telemetry state under {}: {e}",
                self.settings.state_dir.display()
            );
        }
    }

    /// What readers see now.
    pub fn snapshot(&self) -> Snapshot {
        let mut telemetry = self.telemetry.clone();
        telemetry.attachments = self
            .dp
            .attached()
            .map(|(interface, mode)| Attachment {
                interface: interface.clone(),
                mode,
            })
            .collect();
        telemetry.program_id = self.dp.program_id();
        Snapshot {
            telemetry,
            active_set: self.dp.active_set,
            status: self.status(),
        }
    }

    /// Swaps the readers' snapshot for the current state (no-op before `shared` is set).
    pub fn publish(&self) {
        if let Some(s) = &self.shared {
            s.publish(self.snapshot());
        }
    }

    /// Re-reads the policy file. A rejected policy changes nothing and is counted.
    pub fn reload(&mut self) -> Result<u32, ReloadError> {
        let r = self.try_reload();
        match &r {
            Ok(g) => {
                self.telemetry.reloads_ok += 1;
                info!(
                    generation = g,
                    rules = self.policy.rules.len(),
                    "policy reloaded"
                );
            }
            Err(e) => {
                self.telemetry.reloads_error += 1;
                error!(
                    "policy reload {}, previous policy (generation {}) keeps enforcing: {:#}",
                    if e.retry { "failed" } else { "rejected" },
                    self.telemetry.generation,
                    e.error
                );
            }
        }
        self.save();
        r
    }

    fn try_reload(&mut self) -> Result<u32, ReloadError> {
        let (policy, compiled) = prepare_file(&self.policy_path, &mut self.watch)?;
        // Anything failing from here on is the host's or the data path's doing (descriptors,
        // memory, an interface), not the policy's: worth retrying.
        let failed = |error: anyhow::Error| ReloadError { error, retry: true };
        let wanted = interfaces(&policy);
        // New interfaces first: until the flip they drop (no zone in the old policy).
        self.dp
            .attach_all(&wanted, self.xdp_mode)
            .map_err(|e| failed(e.into()))?;
        let generation = self.install(&policy, &compiled).map_err(failed)?;
        drop(compiled);
        self.dp
            .detach_others(&wanted)
            .map_err(|e| failed(e.into()))?;
        // Interfaces may have come or gone: rebind the failsafe flows. Failing that keeps
        // the ones installed (the policy itself is already in force).
        if let Err(e) = self.install_failsafe(&wanted) {
            error!("failsafe flows not updated, the previous ones stay: {e:#}");
        }
        Ok(generation)
    }

    /// True if the policy file changed since it was last read: by its metadata (`stat`), and
    /// once more by its contents for a file read just after a modification ([`FileWatch`]).
    pub fn policy_changed(&mut self) -> bool {
        self.watch.changed(&self.policy_path)
    }

    /// The agent is exiting. Enforcement stays pinned, unless `fail_open_on_exit`.
    pub fn shutdown(&mut self) {
        self.save();
        if self.settings.fail_open_on_exit {
            error!(
                "fail_open_on_exit is set: detaching XDP, the zone gates are OPEN until the agent runs again"
            );
            if let Err(e) = self.dp.detach_all() {
                error!("detaching XDP on exit: {e:#}");
            }
        } else {
            info!(pin_dir = %self.settings.pin_dir.display(), "exiting; the policy stays enforcing (pinned). `zone-agent detach` removes it");
        }
    }
}
