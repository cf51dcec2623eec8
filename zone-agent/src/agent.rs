//! The running agent: policy (load → compile) → datapath (apply, attach) → telemetry.
//! `run` drives it; this module holds the steps so that start and reload read the same way.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::{
    datapath::{Datapath, XdpMode},
    policy::{self, Diagnostics, Policy, compile::Compiled, validate::HostEnvironment},
    telemetry::{SetNames, Telemetry},
};

pub struct Agent {
    pub dp: Datapath,
    pub telemetry: Telemetry,
    pub policy: Policy,
    pub policy_path: PathBuf,
    /// The text of the last policy file read (loaded or rejected), to notice changes.
    pub last_text: Option<String>,
    xdp_mode: XdpMode,
}

/// Parse, validate (against this host's interfaces) and compile.
pub fn prepare(path: &Path) -> Result<(Policy, Compiled), Diagnostics> {
    let (p, warnings) = policy::validate::load(path, &HostEnvironment)?;
    for w in warnings {
        warn!("{w}");
    }
    let c = policy::compile::compile(&p)?;
    Ok((p, c))
}

fn interfaces(p: &Policy) -> BTreeSet<String> {
    p.zones.iter().flat_map(|z| z.interfaces.iter().map(|i| i.name.clone())).collect()
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

impl Agent {
    /// Loads the program, installs the policy, then attaches: no interface ever runs the
    /// program without a complete policy behind it.
    pub fn start(path: &Path, xdp_mode: XdpMode) -> anyhow::Result<Agent> {
        let text = std::fs::read_to_string(path).ok();
        let (policy, compiled) = prepare(path).map_err(|d| anyhow::anyhow!("{d}"))
            .with_context(|| format!("policy {} rejected", path.display()))?;
        let mut dp = Datapath::load().context("loading the XDP program")?;
        let mut telemetry = Telemetry::default();
        let set = dp.next_set();
        let generation = dp.apply(&compiled, ifindex).context("installing the policy")?;
        telemetry.sets[set as usize] = Some(SetNames::of(&policy));
        telemetry.generation = generation;
        let wanted = interfaces(&policy);
        if let Err(e) = dp.attach_all(&wanted, xdp_mode) {
            let _ = dp.detach_all();
            return Err(e).context("attaching XDP");
        }
        info!(policy = %path.display(), generation, rules = policy.rules.len(), zones = policy.zones.len(), "enforcing");
        Ok(Agent { dp, telemetry, policy, policy_path: path.to_path_buf(), last_text: text, xdp_mode })
    }

    /// Re-reads the policy file. A rejected policy changes nothing and is counted.
    pub fn reload(&mut self) -> anyhow::Result<u32> {
        self.last_text = std::fs::read_to_string(&self.policy_path).ok();
        match self.try_reload() {
            Ok(g) => {
                self.telemetry.reloads_ok += 1;
                info!(generation = g, rules = self.policy.rules.len(), "policy reloaded");
                Ok(g)
            }
            Err(e) => {
                self.telemetry.reloads_error += 1;
                error!("policy reload rejected, previous policy (generation {}) keeps enforcing: {e:#}", self.telemetry.generation);
                Err(e)
            }
        }
    }

    fn try_reload(&mut self) -> anyhow::Result<u32> {
        let (policy, compiled) = prepare(&self.policy_path).map_err(|d| anyhow::anyhow!("{d}"))?;
        let wanted = interfaces(&policy);
        // New interfaces first: until the flip they drop (no zone in the old policy).
        self.dp.attach_all(&wanted, self.xdp_mode)?;
        let set = self.dp.next_set();
        let retiring = match &self.telemetry.sets[set as usize] {
            Some(n) => self.dp.set_counters(set, n.zones.len(), n.rules.len())?,
            None => Default::default(),
        };
        self.telemetry.retire(set, &retiring);
        let generation = self.dp.apply(&compiled, ifindex)?;
        self.telemetry.sets[set as usize] = Some(SetNames::of(&policy));
        self.telemetry.generation = generation;
        self.dp.detach_others(&wanted)?;
        self.policy = policy;
        Ok(generation)
    }

    /// True if the policy file's content differs from what was last read.
    pub fn policy_changed(&self) -> bool {
        std::fs::read_to_string(&self.policy_path).ok() != self.last_text
    }

    pub fn shutdown(&mut self) {
        if let Err(e) = self.dp.detach_all() {
            error!("detaching XDP on shutdown: {e:#}");
        }
    }
}
