//! The data path: load the embedded XDP object, attach it, install compiled policies into
//! the inactive set and flip (`apply`), and read counters (`stats`). The only aya user.

mod apply;
mod attach;
pub mod events;
mod failsafe;
pub mod netlink;
pub mod pin;
pub mod stats;

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::Xdp,
};
use zone_agent_common::*;

pub use attach::XdpMode;
pub use failsafe::FailsafeTables;

/// The XDP object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zone-agent-ebpf.o"));
pub const PROGRAM: &str = "zone_agent";
pub const FLOOR_PROGRAM: &str = "zone_agent_floor";

/// The index of the interface called `name` on this host, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this binary was built without its XDP program (ZONE_AGENT_SKIP_EBPF=1); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the XDP object failed")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP program was rejected by the kernel (verifier log above)")]
    Program(#[source] aya::programs::ProgramError),
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning under {path}: {source}")]
    Pin {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn pin_err(path: &std::path::Path) -> impl Fn(std::io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Pin {
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// Typed handles on every map.
pub struct Maps {
    pub active: Array<MapData, u32>,
    pub setconf: Array<MapData, SetConfig>,
    pub ifaces: HashMap<MapData, IfaceKey, IfaceInfo>,
    pub addr4: LpmTrie<MapData, Addr4Key, AddrClass>,
    pub addr6: LpmTrie<MapData, Addr6Key, AddrClass>,
    pub ports: Array<MapData, u16>,
    pub rules: HashMap<MapData, RuleKey, RuleCands>,
    pub rule_info: Array<MapData, RuleInfo>,
    pub rule_macs: HashMap<MapData, MacKey, u8>,
    /// Replied flows (plain hash, never evicted).
    pub flows: HashMap<MapData, FlowKey, FlowState>,
    /// Embryonic flows (LRU).
    pub embryos: HashMap<MapData, FlowKey, FlowState>,
    pub flow_stats: PerCpuArray<MapData, u64>,
    pub failsafe_ports: Array<MapData, u64>,
    pub failsafe: HashMap<MapData, FailsafeKey, u32>,
    pub failsafe_src: LpmTrie<MapData, FailsafeSrcKey, u32>,
    pub frags: HashMap<MapData, FragKey, FragState>,
    pub zone_stats: PerCpuArray<MapData, Counter>,
    pub rule_stats: PerCpuArray<MapData, Counter>,
    pub drop_stats: PerCpuArray<MapData, Counter>,
    pub pass_stats: PerCpuArray<MapData, Counter>,
    /// Events: the settings the program reads, its per-CPU counters (`EventStat`) and token
    /// buckets. See `events`.
    pub event_config: Array<MapData, EventConfig>,
    pub event_stats: PerCpuArray<MapData, u64>,
    pub event_budget: PerCpuArray<MapData, EventBudget>,
    /// The event ring, held by the handles the program was loaded with until the reader
    /// takes it (`take_events_ring`); `None` in handles opened from the pins.
    pub(crate) events_ring: Option<RingBuf<MapData>>,
    /// Highest embryonic-eviction count derived so far through this handle (a counter never
    /// goes back).
    pub(crate) embryo_evictions: std::sync::atomic::AtomicU64,
}

pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
    /// Attached interfaces by name.
    links: BTreeMap<String, attach::Attached>,
    /// Where links and maps are pinned (`None`: nothing outlives this process).
    pins: Option<pin::Pins>,
    /// Set the program reads (0/1) and the generation installed there.
    pub active_set: u32,
    pub generation: u32,
}

/// What `load_pinned` found under the pin dir.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Adoption {
    /// Generation of the policy found enforcing in the pinned maps (0: none, fresh maps).
    pub generation: u32,
    /// Pinned state of an incompatible build, replaced (it keeps enforcing until the links
    /// are swapped to the new program).
    pub replaced: Vec<String>,
}

impl Datapath {
    /// Loads the program and creates its maps, pinned nowhere (tests, benchmarks). No
    /// policy yet: the program drops everything with `no_policy` until the first `apply`,
    /// and it is not attached anywhere yet.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(EbpfLoader::new(), None)
    }

    /// Loads the program with its maps pinned under `pin_dir`: maps this build can adopt
    /// are reused with their contents (policy sets, flows, counters), others are set aside.
    pub fn load_pinned(pin_dir: &std::path::Path) -> Result<(Self, Adoption), DatapathError> {
        let pins = pin::Pins::new(pin_dir);
        pins.prepare().map_err(pin_err(pin_dir))?;
        let mut adoption = Adoption::default();
        if let Some(why) = pins.maps_mismatch() {
            tracing::warn!("pinned maps do not match this build ({why}); replacing them");
            let dir = pins.maps_dir();
            pin::Pins::remove_dir(&dir).map_err(pin_err(&dir))?;
            pins.prepare().map_err(pin_err(pin_dir))?;
            adoption.replaced.push(format!("{} ({why})", dir.display()));
        }
        for d in pins.stale_map_dirs() {
            adoption.replaced.push(d.display().to_string());
        }
        let dir = pins.maps_dir();
        let mut loader = EbpfLoader::new();
        for m in PINNED_MAPS {
            loader.map_pin_path(m.name, dir.join(m.name));
        }
        let mut dp = Self::load_with(loader, Some(pins))?;
        let active = dp.maps.active.get(&0, 0).map_err(map_err(MAP_ACTIVE))? & 1;
        let cfg = dp
            .maps
            .setconf
            .get(&active, 0)
            .map_err(map_err(MAP_SETCONF))?;
        if cfg.flags & SET_VALID != 0 {
            dp.active_set = active;
            dp.generation = cfg.generation;
            adoption.generation = cfg.generation;
        }
        dp.adopt_stale_flows();
        Ok((dp, adoption))
    }

    /// Copies the flows of an incompatible build's pinned flow table whose entries have this
    /// build's layout (`FlowKey`, `FlowState`; ABI 1 had one LRU table of them) or ABI 2's
    /// (the first `FLOW_STATE_V2_BYTES` of this one, without counters: adopted with counters 0
    /// and `start_ns` = `last_seen_ns`): replied flows into `ZA_FLOWS`, others into
    /// `ZA_EMBRYOS`, each with generation 0, so that the data path re-decides it under the
    /// active policy on its next packet, exactly as after a reload (a flow the policy does not
    /// allow is removed then). Without this the connections established before such an
    /// upgrade would lose their flows. Keys already held are left alone; flag bits this build
    /// does not know are cleared.
    fn adopt_stale_flows(&mut self) {
        const KNOWN: u8 = FLOW_AUDIT | FLOW_FIN_ORIG | FLOW_FIN_REPLY | FLOW_REPLIED;
        let Some(pins) = &self.pins else { return };
        for dir in pins.stale_map_dirs() {
            let path = dir.join(MAP_FLOWS);
            let Some(entries) = stale_flows(&path) else {
                continue;
            };
            let mut adopted = 0usize;
            for (k, mut st) in entries {
                let m = &mut self.maps;
                if m.flows.get(&k, 0).is_ok() || m.embryos.get(&k, 0).is_ok() {
                    continue;
                }
                st.generation = 0;
                st.flags &= KNOWN;
                let table = if st.flags & FLOW_REPLIED != 0 {
                    &mut m.flows
                } else {
                    &mut m.embryos
                };
                if table.insert(k, st, 0).is_ok() {
                    adopted += 1;
                }
            }
            tracing::info!(from = %path.display(), adopted, "flows of an incompatible build adopted (re-decided on their next packet)");
        }
    }

    fn load_with(
        mut loader: EbpfLoader<'_>,
        pins: Option<pin::Pins>,
    ) -> Result<Self, DatapathError> {
        if OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let mut ebpf = loader.load(OBJECT).map_err(DatapathError::Load)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::MissingMap("program zone_agent"))?
            .try_into()
            .map_err(DatapathError::Program)?;
        prog.load().map_err(DatapathError::Program)?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            maps,
            links: BTreeMap::new(),
            pins,
            active_set: 0,
            generation: 0,
        })
    }

    /// Removes the maps of incompatible builds once no link runs their program any more.
    pub fn remove_stale_pins(&self) {
        if let Some(p) = &self.pins {
            for d in p.stale_map_dirs() {
                match pin::Pins::remove_dir(&d) {
                    Ok(()) => {
                        tracing::info!(dir = %d.display(), "removed the pinned maps of an incompatible build")
                    }
                    Err(e) => tracing::warn!(dir = %d.display(), "cannot remove stale pins: {e}"),
                }
            }
        }
    }

    /// Generation installed in `set` (0: none).
    pub fn set_generation(&self, set: u32) -> u32 {
        match self.maps.setconf.get(&set, 0) {
            Ok(c) if c.flags & SET_VALID != 0 => c.generation,
            _ => 0,
        }
    }

    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pins.as_ref().map(|p| p.root.as_path())
    }

    /// The loaded program, for attaching or BPF_PROG_TEST_RUN.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program loaded in Datapath::load")
    }

    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program loaded in Datapath::load")
    }

    /// The object's reference program that only returns XDP_DROP, loaded on demand: the
    /// floor that `cargo xtask bench` measures the real program against.
    pub fn floor_program(&mut self) -> Result<&Xdp, DatapathError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(FLOOR_PROGRAM)
            .ok_or(DatapathError::MissingMap("program zone_agent_floor"))?
            .try_into()
            .map_err(DatapathError::Program)?;
        if prog.fd().is_err() {
            prog.load().map_err(DatapathError::Program)?;
        }
        Ok(prog)
    }

    pub fn attached(&self) -> impl Iterator<Item = (&String, &'static str)> {
        self.links.iter().map(|(n, a)| (n, a.mode))
    }

    /// Kernel id of the loaded program.
    pub fn program_id(&self) -> Option<u32> {
        self.program().info().ok().map(|i| i.id())
    }
}

/// Size of ABI 2's `FlowState`: the first bytes of this build's, before `start_ns`.
const FLOW_STATE_V2_BYTES: usize = 32;
const _: () = assert!(std::mem::offset_of!(FlowState, start_ns) == FLOW_STATE_V2_BYTES);

/// The entries of an old build's pinned flow table at `path`, if its layout is this build's
/// or ABI 2's (see `adopt_stale_flows`); `None` for any other layout.
fn stale_flows(path: &std::path::Path) -> Option<Vec<(FlowKey, FlowState)>> {
    use aya::maps::Map;
    fn read<V: aya::Pod>(data: MapData, max: u32) -> Option<Vec<(FlowKey, V)>> {
        let old = Map::from_map_data(data)
            .and_then(HashMap::<MapData, FlowKey, V>::try_from)
            .ok()?;
        Some(
            old.iter()
                .take(max as usize)
                .filter_map(Result::ok)
                .collect(),
        )
    }
    let data = MapData::from_pin(path).ok()?;
    let info = data.info().ok()?;
    if info.key_size() as usize != size_of::<FlowKey>() {
        return None;
    }
    match info.value_size() as usize {
        v if v == size_of::<FlowState>() => read::<FlowState>(data, info.max_entries()),
        FLOW_STATE_V2_BYTES => Some(
            read::<[u8; FLOW_STATE_V2_BYTES]>(data, info.max_entries())?
                .into_iter()
                .map(|(k, old)| {
                    let mut st = FlowState::default();
                    // SAFETY: `FlowState` is plain data (Pod) and its first
                    // `FLOW_STATE_V2_BYTES` are ABI 2's layout (asserted above).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            old.as_ptr(),
                            (&raw mut st).cast::<u8>(),
                            FLOW_STATE_V2_BYTES,
                        )
                    };
                    st.start_ns = st.last_seen_ns;
                    (k, st)
                })
                .collect(),
        ),
        _ => None,
    }
}

impl Datapath {
    /// A second, independent set of handles on this data path's pinned maps (new fds), for
    /// readers that must not share the agent's (metrics, status, flow expiry). `None` when
    /// nothing is pinned.
    pub fn open_pinned_maps(&self) -> Option<Result<Maps, DatapathError>> {
        self.pins.as_ref().map(|p| Maps::open_pinned(&p.maps_dir()))
    }
}

impl Maps {
    /// Opens every map pinned under `dir` (a `maps-<fingerprint>` directory).
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self, DatapathError> {
        fn open<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            dir: &std::path::Path,
            name: &'static str,
        ) -> Result<T, DatapathError> {
            let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
            let map = aya::maps::Map::from_map_data(data).map_err(map_err(name))?;
            T::try_from(map).map_err(map_err(name))
        }
        Ok(Maps {
            active: open(dir, MAP_ACTIVE)?,
            setconf: open(dir, MAP_SETCONF)?,
            ifaces: open(dir, MAP_IFACES)?,
            addr4: open(dir, MAP_ADDR4)?,
            addr6: open(dir, MAP_ADDR6)?,
            ports: open(dir, MAP_PORTS)?,
            rules: open(dir, MAP_RULES)?,
            rule_info: open(dir, MAP_RULEINFO)?,
            rule_macs: open(dir, MAP_RULEMACS)?,
            flows: open(dir, MAP_FLOWS)?,
            embryos: open(dir, MAP_EMBRYOS)?,
            flow_stats: open(dir, MAP_FLOW_STATS)?,
            failsafe_ports: open(dir, MAP_FAILSAFE_PORTS)?,
            failsafe: open(dir, MAP_FAILSAFE)?,
            failsafe_src: open(dir, MAP_FAILSAFE_SRC)?,
            frags: open(dir, MAP_FRAGS)?,
            zone_stats: open(dir, MAP_ZONE_STATS)?,
            rule_stats: open(dir, MAP_RULE_STATS)?,
            drop_stats: open(dir, MAP_DROP_STATS)?,
            pass_stats: open(dir, MAP_PASS_STATS)?,
            event_config: open(dir, MAP_EVENT_CONFIG)?,
            event_stats: open(dir, MAP_EVENT_STATS)?,
            event_budget: open(dir, MAP_EVENT_BUDGET)?,
            events_ring: None,
            embryo_evictions: Default::default(),
        })
    }

    fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, DatapathError> {
            let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
            T::try_from(map).map_err(map_err(name))
        }
        Ok(Maps {
            active: take(ebpf, MAP_ACTIVE)?,
            setconf: take(ebpf, MAP_SETCONF)?,
            ifaces: take(ebpf, MAP_IFACES)?,
            addr4: take(ebpf, MAP_ADDR4)?,
            addr6: take(ebpf, MAP_ADDR6)?,
            ports: take(ebpf, MAP_PORTS)?,
            rules: take(ebpf, MAP_RULES)?,
            rule_info: take(ebpf, MAP_RULEINFO)?,
            rule_macs: take(ebpf, MAP_RULEMACS)?,
            flows: take(ebpf, MAP_FLOWS)?,
            embryos: take(ebpf, MAP_EMBRYOS)?,
            flow_stats: take(ebpf, MAP_FLOW_STATS)?,
            failsafe_ports: take(ebpf, MAP_FAILSAFE_PORTS)?,
            failsafe: take(ebpf, MAP_FAILSAFE)?,
            failsafe_src: take(ebpf, MAP_FAILSAFE_SRC)?,
            frags: take(ebpf, MAP_FRAGS)?,
            zone_stats: take(ebpf, MAP_ZONE_STATS)?,
            rule_stats: take(ebpf, MAP_RULE_STATS)?,
            drop_stats: take(ebpf, MAP_DROP_STATS)?,
            pass_stats: take(ebpf, MAP_PASS_STATS)?,
            event_config: take(ebpf, MAP_EVENT_CONFIG)?,
            event_stats: take(ebpf, MAP_EVENT_STATS)?,
            event_budget: take(ebpf, MAP_EVENT_BUDGET)?,
            events_ring: Some(take(ebpf, MAP_EVENTS)?),
            embryo_evictions: Default::default(),
        })
    }
}
