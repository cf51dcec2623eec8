//! The agent's configuration file (`--config`, TOML): everything `run` takes on the command
//! line, plus the failsafe management flows. Every key is optional; a command-line flag
//! overrides the file. Unknown keys are errors (a typo must not silently fall back to a
//! default). See docs/config.md.

pub mod failsafe;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::{datapath::XdpMode, policy::diagnostic::LineIndex};

pub const DEFAULT_POLICY: &str = "/etc/zone-agent/policy.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zone-agent";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/zone-agent";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9750";
/// Defaults of `flow_log_max_bytes` and `flow_log_keep`.
pub const DEFAULT_FLOW_LOG_MAX_BYTES: u64 = 100 << 20;
pub const DEFAULT_FLOW_LOG_KEEP: u32 = 5;
/// Bounds of `flow_log_max_bytes` (a few records at least) and `flow_log_keep`.
pub const MIN_FLOW_LOG_MAX_BYTES: u64 = 4096;
pub const MAX_FLOW_LOG_KEEP: u32 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policy: Option<PathBuf>,
    metrics_addr: Option<Spanned<String>>,
    state_dir: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    xdp_mode: Option<Spanned<String>>,
    fail_open_on_exit: Option<bool>,
    flow_log: Option<PathBuf>,
    flow_log_max_bytes: Option<Spanned<u64>>,
    flow_log_keep: Option<Spanned<u32>>,
    #[serde(default)]
    failsafe: Vec<Spanned<FailsafeFile>>,
    #[serde(default)]
    events: Events,
}

/// `[events]`: what the data path reports through its event ring, and its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// `events.rate`: events per second each CPU may emit (a token bucket in the kernel;
    /// what it refuses is counted as lost, `stage="rate_limited"`).
    pub rate: u32,
    /// `events.burst`: events a quiet CPU may emit at once.
    pub burst: u32,
    /// `events.deny`: an event for every denied or audited packet (within the budget).
    pub deny: bool,
    /// `events.flows`: an event when a flow opens and when the data path ends one.
    pub flows: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            rate: zone_agent_common::EVENT_RATE_DEFAULT,
            burst: zone_agent_common::EVENT_BURST_DEFAULT,
            deny: true,
            flows: true,
        }
    }
}

impl Events {
    /// What the agent writes into the data path (`ZA_EVCONF`) at start.
    pub fn kernel(&self) -> zone_agent_common::EventConfig {
        use zone_agent_common::{EVENTS_DENY, EVENTS_FLOW};
        zone_agent_common::EventConfig {
            rate: self.rate,
            burst: self.burst,
            flags: if self.deny { EVENTS_DENY } else { 0 }
                | if self.flows { EVENTS_FLOW } else { 0 },
            _pad: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailsafeFile {
    name: String,
    protocol: String,
    ports: Vec<String>,
    sources: Vec<String>,
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    destinations: Vec<String>,
}

/// One failsafe management flow: `protocol` to `ports` on the gateway's own addresses
/// (`destinations`, default all of them), from `sources`, entering on `interfaces` (default
/// every zone interface).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failsafe {
    pub name: String,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Inclusive ranges.
    pub ports: Vec<(u16, u16)>,
    pub sources: Vec<IpNet>,
    pub interfaces: Vec<String>,
    pub destinations: Vec<std::net::IpAddr>,
}

/// The flow log (`--flow-log FILE`, `flow_log`): JSON lines, rotated by size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLog {
    pub path: PathBuf,
    /// Size at which the file is rotated (`flow_log_max_bytes`).
    pub max_bytes: u64,
    /// Rotated files kept, `FILE.1` … `FILE.<keep>` (`flow_log_keep`); 0: the full file is
    /// removed instead.
    pub keep: u32,
}

/// The effective settings of `run`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: PathBuf,
    pub metrics_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub xdp_mode: XdpMode,
    pub fail_open_on_exit: bool,
    pub failsafe: Vec<Failsafe>,
    /// `None`: no flow log.
    pub flow_log: Option<FlowLog>,
    pub events: Events,
}

/// What the command line of `run` gives: each option, if given, wins over the config file.
/// (`cli` parses its arguments into this; config never looks at the command line itself.)
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The config file to read first, if any.
    pub config: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub xdp_mode: Option<XdpMode>,
    pub fail_open_on_exit: bool,
    pub flow_log: Option<PathBuf>,
}

/// What is wrong with a config file. Every variant but `Read` starts with the place
/// (`file:line:column`, or the file for the whole-file limit).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a value of the wrong type (the TOML reader's message).
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
    #[error("{at}: metrics_addr {value:?} is not an address:port (e.g. \"127.0.0.1:9750\")")]
    MetricsAddr { at: String, value: String },
    #[error("{at}: {key} = {value} is out of range ({range})")]
    OutOfRange {
        at: String,
        key: &'static str,
        value: u64,
        range: String,
    },
    #[error("{at}: xdp_mode {value:?} is not one of auto, native, generic")]
    XdpMode { at: String, value: String },
    /// One `[[failsafe]]` entry is incomplete or wrong (`message` says which key and why).
    #[error("{at}: [[failsafe]] {message}")]
    Failsafe { at: String, message: String },
    #[error("{at}: [[failsafe]] name {name:?} is used twice; give each entry its own name")]
    FailsafeNameTwice { at: String, name: String },
    #[error("{}: {count} [[failsafe]] entries; at most {max} are supported", path.display())]
    TooManyFailsafe {
        path: PathBuf,
        count: usize,
        max: usize,
    },
}

/// Reads `args.config` (if given) and applies the command line over it.
pub fn settings(args: &Overrides) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            parse(path, &text)?
        }
        None => Parsed::default(),
    };
    Ok(Settings {
        policy: args
            .policy
            .clone()
            .or(file.policy)
            .unwrap_or_else(|| DEFAULT_POLICY.into()),
        metrics_addr: args
            .metrics_addr
            .or(file.metrics_addr)
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("valid default")),
        state_dir: args
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        pin_dir: args
            .pin_dir
            .clone()
            .or(file.pin_dir)
            .unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
        xdp_mode: args.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
        fail_open_on_exit: args.fail_open_on_exit || file.fail_open_on_exit.unwrap_or(false),
        failsafe: file.failsafe,
        flow_log: args.flow_log.clone().or(file.flow_log).map(|path| FlowLog {
            path,
            max_bytes: file
                .flow_log_max_bytes
                .unwrap_or(DEFAULT_FLOW_LOG_MAX_BYTES),
            keep: file.flow_log_keep.unwrap_or(DEFAULT_FLOW_LOG_KEEP),
        }),
        events: file.events,
    })
}

/// A config file, checked.
#[derive(Debug, Default)]
pub struct Parsed {
    pub policy: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub xdp_mode: Option<XdpMode>,
    pub fail_open_on_exit: Option<bool>,
    pub failsafe: Vec<Failsafe>,
    pub flow_log: Option<PathBuf>,
    pub flow_log_max_bytes: Option<u64>,
    pub flow_log_keep: Option<u32>,
    pub events: Events,
}

/// Parses and checks a config file; every error says file:line:column.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, ConfigError> {
    let lines = LineIndex::new(text);
    let at = |span: std::ops::Range<usize>| {
        let l = lines.loc(span.start);
        format!("{}:{}:{}", path.display(), l.line, l.col)
    };
    let f: File = toml::from_str(text).map_err(|e| {
        let pos = e
            .span()
            .map(&at)
            .unwrap_or_else(|| path.display().to_string());
        ConfigError::Syntax {
            at: pos,
            message: e.message().to_string(),
        }
    })?;
    let metrics_addr = match f.metrics_addr {
        Some(s) => {
            Some(
                s.get_ref()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::MetricsAddr {
                        at: at(s.span()),
                        value: s.get_ref().clone(),
                    })?,
            )
        }
        None => None,
    };
    let xdp_mode = match f.xdp_mode {
        Some(s) => Some(match s.get_ref().as_str() {
            "auto" => XdpMode::Auto,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            other => {
                return Err(ConfigError::XdpMode {
                    at: at(s.span()),
                    value: other.to_string(),
                });
            }
        }),
        None => None,
    };
    let in_range = |v: Option<Spanned<u64>>, key: &'static str, lo: u64, hi: u64| match v {
        Some(s) if !(lo..=hi).contains(s.get_ref()) => Err(ConfigError::OutOfRange {
            at: at(s.span()),
            key,
            value: *s.get_ref(),
            range: format!("{lo} to {hi}"),
        }),
        Some(s) => Ok(Some(s.into_inner())),
        None => Ok(None),
    };
    let flow_log_max_bytes = in_range(
        f.flow_log_max_bytes,
        "flow_log_max_bytes",
        MIN_FLOW_LOG_MAX_BYTES,
        u64::MAX,
    )?;
    let flow_log_keep = in_range(
        f.flow_log_keep
            .map(|s| Spanned::new(s.span(), u64::from(*s.get_ref()))),
        "flow_log_keep",
        0,
        u64::from(MAX_FLOW_LOG_KEEP),
    )?
    .map(|k| k as u32);
    let mut failsafe = Vec::new();
    for entry in f.failsafe {
        let pos = at(entry.span());
        let e = entry.into_inner();
        let fs = failsafe_entry(e).map_err(|message| ConfigError::Failsafe {
            at: pos.clone(),
            message,
        })?;
        if failsafe.iter().any(|o: &Failsafe| o.name == fs.name) {
            return Err(ConfigError::FailsafeNameTwice {
                at: pos,
                name: fs.name,
            });
        }
        failsafe.push(fs);
    }
    if failsafe.len() > zone_agent_common::MAX_FAILSAFE {
        return Err(ConfigError::TooManyFailsafe {
            path: path.to_path_buf(),
            count: failsafe.len(),
            max: zone_agent_common::MAX_FAILSAFE,
        });
    }
    Ok(Parsed {
        policy: f.policy,
        metrics_addr,
        state_dir: f.state_dir,
        pin_dir: f.pin_dir,
        xdp_mode,
        fail_open_on_exit: f.fail_open_on_exit,
        failsafe,
        flow_log: f.flow_log,
        flow_log_max_bytes,
        flow_log_keep,
        events: f.events,
    })
}

fn failsafe_entry(e: FailsafeFile) -> Result<Failsafe, String> {
    let name = e.name;
    if name.is_empty() {
        return Err("needs a non-empty name".into());
    }
    let proto = match e.protocol.as_str() {
        "tcp" => zone_agent_common::PROTO_TCP,
        "udp" => zone_agent_common::PROTO_UDP,
        p => {
            return Err(format!(
                "{name:?}: protocol {p:?} must be \"tcp\" or \"udp\""
            ));
        }
    };
    if e.ports.is_empty() {
        return Err(format!("{name:?}: needs ports, e.g. ports = [\"22\"]"));
    }
    let mut ports = Vec::new();
    for p in &e.ports {
        ports.push(port_range(p).ok_or_else(|| {
            format!("{name:?}: port {p:?} must be a port 1-65535 or a range \"A-B\" with A <= B")
        })?);
    }
    if e.sources.is_empty() {
        // An open failsafe would be a hole around the whole policy.
        return Err(format!(
            "{name:?}: needs sources (the admin subnets), e.g. sources = [\"192.0.2.0/24\"]"
        ));
    }
    let mut sources = Vec::new();
    for s in &e.sources {
        let net = parse_net(s)
            .ok_or_else(|| format!("{name:?}: source {s:?} is not an IP address or CIDR"))?;
        if net.prefix_len() == 0 {
            return Err(format!(
                "{name:?}: source {s:?} admits every address; name the admin subnets"
            ));
        }
        sources.push(net);
    }
    let mut destinations = Vec::new();
    for d in &e.destinations {
        destinations.push(d.parse().map_err(|_| {
            format!("{name:?}: destination {d:?} is not an IP address (one of the gateway's own)")
        })?);
    }
    for i in &e.interfaces {
        if i.is_empty() || i.len() > 15 {
            return Err(format!(
                "{name:?}: interface name {i:?} is not a valid Linux interface name"
            ));
        }
    }
    Ok(Failsafe {
        name,
        proto,
        ports,
        sources,
        interfaces: e.interfaces,
        destinations,
    })
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let p = s.trim().parse::<u16>().ok()?;
            (p, p)
        }
    };
    (a >= 1 && a <= b).then_some((a, b))
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Parsed, ConfigError> {
        parse(Path::new("za.toml"), text)
    }

    #[test]
    fn full_file_parses() {
        let c = p(r#"
policy = "/etc/zone-agent/p.toml"
metrics_addr = "127.0.0.1:9999"
state_dir = "/var/lib/za"
pin_dir = "/sys/fs/bpf/za"
xdp_mode = "generic"
fail_open_on_exit = true
[[failsafe]]
name = "ssh"
protocol = "tcp"
ports = ["22", "8000-8001"]
sources = ["192.0.2.0/24", "2001:db8::1"]
interfaces = ["eth1"]
"#)
        .unwrap();
        assert_eq!(c.metrics_addr.unwrap().port(), 9999);
        assert_eq!(c.xdp_mode, Some(XdpMode::Generic));
        assert_eq!(c.fail_open_on_exit, Some(true));
        let f = &c.failsafe[0];
        assert_eq!(f.ports, vec![(22, 22), (8000, 8001)]);
        assert_eq!(f.sources[1].prefix_len(), 128);
        assert_eq!(f.interfaces, vec!["eth1".to_string()]);
    }

    /// The example that `cargo xtask install` ships parses, also with its failsafe block
    /// uncommented, and says what the defaults are.
    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../../systemd/zone-agent.toml");
        let c = parse(Path::new("systemd/zone-agent.toml"), text).unwrap();
        assert_eq!(c.pin_dir.as_deref(), Some(Path::new(DEFAULT_PIN_DIR)));
        assert_eq!(c.state_dir.as_deref(), Some(Path::new(DEFAULT_STATE_DIR)));
        assert_eq!(c.metrics_addr, Some(DEFAULT_METRICS_ADDR.parse().unwrap()));
        assert_eq!(c.fail_open_on_exit, Some(false));
        let start = text
            .find("# [[failsafe]]")
            .expect("a commented failsafe example");
        let uncommented: String = text[..start].to_string()
            + &text[start..]
                .lines()
                .map(|l| l.strip_prefix("# ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
        let c = parse(Path::new("x.toml"), &uncommented).unwrap();
        assert_eq!(c.failsafe.len(), 1);
        assert_eq!(c.failsafe[0].ports, vec![(22, 22)]);
    }

    #[test]
    fn events_default_on_and_configurable() {
        let c = p("").unwrap();
        assert_eq!(c.events, Events::default());
        let k = c.events.kernel();
        assert_eq!(
            (k.rate, k.burst, k.flags),
            (
                zone_agent_common::EVENT_RATE_DEFAULT,
                zone_agent_common::EVENT_BURST_DEFAULT,
                zone_agent_common::EVENTS_DENY | zone_agent_common::EVENTS_FLOW
            )
        );
        let c = p("[events]\nrate = 10\nburst = 3\nflows = false\n").unwrap();
        let k = c.events.kernel();
        assert_eq!(
            (k.rate, k.burst, k.flags),
            (10, 3, zone_agent_common::EVENTS_DENY)
        );
        let e = p("[events]\nrat = 1\n").unwrap_err().to_string();
        assert!(
            e.starts_with("za.toml:2:1:") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn flow_log_keys_defaults_and_the_command_line() {
        let c = p("flow_log = \"/var/log/za.json\"\nflow_log_keep = 2\n").unwrap();
        assert_eq!(c.flow_log_keep, Some(2));
        assert_eq!(c.flow_log_max_bytes, None);
        let e = p("flow_log_max_bytes = 100\n").unwrap_err().to_string();
        assert!(
            e.starts_with("za.toml:1:22:") && e.contains("4096 to"),
            "{e}"
        );
        let e = p("flow_log_keep = 5000\n").unwrap_err().to_string();
        assert!(e.contains("0 to 1000"), "{e}");
        // No flow log unless asked for; the flag alone takes the defaults.
        assert_eq!(settings(&Overrides::default()).unwrap().flow_log, None);
        let s = settings(&Overrides {
            flow_log: Some("/tmp/f.json".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(
            s.flow_log,
            Some(FlowLog {
                path: "/tmp/f.json".into(),
                max_bytes: DEFAULT_FLOW_LOG_MAX_BYTES,
                keep: DEFAULT_FLOW_LOG_KEEP,
            })
        );
    }

    #[test]
    fn errors_name_the_place_and_the_fix() {
        let e = p("policy = \"x\"\nmetrcs_addr = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("za.toml:2:1:") && e.contains("unknown field"),
            "{e}"
        );
        let e = p("xdp_mode = \"fast\"\n").unwrap_err().to_string();
        assert!(
            e.starts_with("za.toml:1:12:") && e.contains("auto, native, generic"),
            "{e}"
        );
        let e = p("[[failsafe]]\nname = \"a\"\nprotocol = \"tcp\"\nports = [\"22\"]\nsources = [\"0.0.0.0/0\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admits every address"), "{e}");
        let e = p("[[failsafe]]\nname = \"a\"\nprotocol = \"icmp\"\nports = [\"22\"]\nsources = [\"10.0.0.1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"tcp\" or \"udp\""), "{e}");
        let e = p("[[failsafe]]\nname = \"a\"\nprotocol = \"tcp\"\nports = [\"0\"]\nsources = [\"10.0.0.1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port \"0\""), "{e}");
        let two = "[[failsafe]]\nname = \"a\"\nprotocol = \"tcp\"\nports = [\"22\"]\nsources = [\"10.0.0.1\"]\n";
        let e = p(&format!("{two}{two}")).unwrap_err().to_string();
        assert!(
            e.starts_with("za.toml:6:") && e.contains("used twice"),
            "{e}"
        );
    }
}
