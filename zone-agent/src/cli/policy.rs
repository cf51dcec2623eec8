//! `zone-agent policy check | explain | init | diff`.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use zone_agent_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_SYN};

use super::PolicyCommand;
use crate::policy::{
    self, compile,
    diagnostic::SHOWN_PER_KIND,
    diff,
    model::{Frag, Model, Packet},
    template,
    text::{Escaped, escape, escape_lines},
    validate::{Environment, HostEnvironment, OfflineEnvironment},
};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    pub file: PathBuf,
    /// Ingress interface of the gateway ("eth1", or "eth1.100" for VLAN 100 on eth1).
    #[arg(long = "in")]
    pub iface: String,
    #[arg(long)]
    pub src: IpAddr,
    #[arg(long)]
    pub dst: IpAddr,
    /// tcp, udp, icmp, icmpv6, or an IP protocol number.
    #[arg(long)]
    pub proto: String,
    #[arg(long)]
    pub dport: Option<u16>,
    #[arg(long, default_value_t = 40000)]
    pub sport: u16,
    /// Source MAC (for rules with a MAC list).
    #[arg(long)]
    pub src_mac: Option<String>,
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file, offline } => check(&file, offline),
        PolicyCommand::Explain(args) => explain(args),
        PolicyCommand::Init {
            model,
            output,
            force,
        } => init(model, output.as_deref(), force),
        PolicyCommand::Diff { old, new } => diff(&old, &new),
        PolicyCommand::Export {
            file,
            format,
            output,
        } => export(&file, format, output.as_deref()),
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    /// nftables (`nft -f FILE`): table `inet zone_agent`, hooked at prerouting.
    Nft,
}

/// `policy export`: only a policy that `policy check --offline` accepts is exported, so the
/// fallback never enforces something the agent would refuse.
fn export(file: &Path, format: ExportFormat, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let loaded = policy::validate::load(file, &OfflineEnvironment)
        .and_then(|(p, w)| compile::compile(&p).map(|_| (p, w)));
    let (p, warnings) = match loaded {
        Ok(x) => x,
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!(
                "{}: {} error(s); nothing exported",
                shown(file),
                diags.error_count()
            );
            return Ok(ExitCode::from(1));
        }
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    let text = match format {
        ExportFormat::Nft => policy::nft::export(&p),
    };
    match output {
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to standard output")?,
        Some(path) => {
            // Whole or nothing: a half-written ruleset must never be what `nft -f` reads.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &std::path::Path, offline: bool) -> anyhow::Result<ExitCode> {
    let env: &dyn Environment = if offline {
        &OfflineEnvironment
    } else {
        &HostEnvironment
    };
    let loaded = policy::validate::load(file, env)
        .and_then(|(p, w)| compile::compile(&p).map(|c| (p, w, c)));
    match loaded {
        Ok((p, warnings, c)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            // Accepted guideline findings are silent otherwise: show that they exist (the first
            // few: a generated policy may acknowledge thousands).
            let acked: Vec<_> = p.rules.iter().filter(|r| r.acknowledge.is_some()).collect();
            for r in acked.iter().take(SHOWN_PER_KIND) {
                eprintln!(
                    "{}:{}:{}: note: guideline findings on rule \"{}\" are acknowledged: {}",
                    shown(file),
                    r.loc.line,
                    r.loc.col,
                    Escaped(&r.name),
                    Escaped(r.acknowledge.as_deref().unwrap_or_default())
                );
            }
            if let Some(r) = acked.get(SHOWN_PER_KIND) {
                eprintln!(
                    "{}:{}:{}: note: … and {} more rules with acknowledged guideline findings, not shown",
                    shown(file),
                    r.loc.line,
                    r.loc.col,
                    acked.len() - SHOWN_PER_KIND
                );
            }
            println!(
                "{}: OK — {} zones, {} rules, {} data-path entries{}",
                shown(file),
                p.zones.len(),
                p.rules.len(),
                c.entries(),
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warnings", warnings.len())
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!(
                "{}: {} error(s); the policy was not applied",
                shown(file),
                diags.error_count()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `policy init`: the model's template to standard output, or to a new file (an existing one is
/// replaced only with `--force`: it may be the policy in service).
fn init(model: template::Model, output: Option<&Path>, force: bool) -> anyhow::Result<ExitCode> {
    let text = model.template();
    let Some(path) = output else {
        std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to standard output")?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut options = std::fs::OpenOptions::new();
    if force {
        options.write(true).create(true).truncate(true);
    } else {
        // Atomic: no window between "does it exist?" and creating it.
        options.write(true).create_new(true);
    }
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists and was left as it is: pass --force to replace it, or choose another --output",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "{}: starting policy for the {} model written; replace the placeholder interfaces, addresses \
         and MACs, then run `zone-agent policy check {}`",
        path.display(),
        model.label(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `policy diff`: both files are checked first (as `policy check --offline` does); like
/// diff(1) the exit status is 0 for no difference, 1 for differences, 2 for trouble.
fn diff(old: &Path, new: &Path) -> anyhow::Result<ExitCode> {
    let load = |file: &Path| {
        policy::validate::load(file, &OfflineEnvironment)
            .and_then(|(p, w)| compile::compile(&p).map(|_| (p, w)))
    };
    let (before, after) = (load(old), load(new));
    for (file, loaded) in [(old, &before), (new, &after)] {
        if let Err(diags) = loaded {
            eprintln!("{diags}");
            eprintln!(
                "{}: {} error(s); nothing compared",
                shown(file),
                diags.error_count()
            );
        }
    }
    let (Ok((before, _)), Ok((after, warnings))) = (before, after) else {
        return Ok(ExitCode::from(2));
    };
    // What a reload of NEW would log.
    for w in &warnings {
        eprintln!("{w}");
    }
    let d = diff::diff(&before, &after);
    println!("--- {}\n+++ {}", shown(old), shown(new));
    // The values in it are escaped one by one; this is the last guard.
    print!("{}", escape_lines(&d.render()));
    Ok(if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A path as operators see it in messages: control characters escaped.
fn shown(path: &Path) -> String {
    escape(&path.to_string_lossy()).into_owned()
}

fn parse_proto(s: &str) -> anyhow::Result<u8> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        "icmpv6" => PROTO_ICMPV6,
        n => n.parse::<u8>().with_context(|| {
            format!("unknown protocol {s:?}: use tcp, udp, icmp, icmpv6 or a number")
        })?,
    })
}

pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        bail!("bad MAC {s:?}: expected six hex octets like 52:54:00:12:34:56");
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

fn explain(a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let (policy, _) =
        policy::validate::load(&a.file, &OfflineEnvironment).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (ifname, vlan) = match a.iface.split_once('.') {
        Some((n, v)) => (
            n.to_string(),
            v.parse::<u16>()
                .with_context(|| format!("bad VLAN in {:?}", a.iface))?,
        ),
        None => (a.iface.clone(), 0),
    };
    let proto = parse_proto(&a.proto)?;
    if a.src.is_ipv4() != a.dst.is_ipv4() {
        bail!("--src and --dst must be the same address family");
    }
    let ports = matches!(proto, PROTO_TCP | PROTO_UDP);
    if ports && a.dport.is_none() {
        bail!("--dport is required for tcp and udp");
    }
    let icmp =
        (proto == PROTO_ICMP && a.src.is_ipv4()) || (proto == PROTO_ICMPV6 && a.src.is_ipv6());
    let p = Packet {
        ifname,
        vlan,
        src_mac: a
            .src_mac
            .as_deref()
            .map(parse_mac)
            .transpose()?
            .unwrap_or([0x02, 0, 0, 0, 0, 1]),
        src: a.src,
        dst: a.dst,
        proto,
        l4: ports || icmp,
        sport: if ports { a.sport } else { 0 },
        dport: a.dport.unwrap_or(0),
        tcp_flags: if proto == PROTO_TCP { TCP_SYN } else { 0 },
        // An ICMP packet is explained as an echo request.
        icmp_type: match proto {
            _ if !icmp => 0,
            PROTO_ICMP => zone_agent_common::ICMP_ECHO_REQUEST,
            _ => zone_agent_common::ICMPV6_ECHO_REQUEST,
        },
        frag: Frag::None,
        frag_id: 0,
        inner: None,
        len: 64,
    };
    let model = Model::new(policy.clone());
    let d = model.explain(&p);
    println!("{}", policy::explain::render(&policy, &p, &d));
    Ok(ExitCode::SUCCESS)
}
