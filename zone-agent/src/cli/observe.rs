//! `zone-agent observe`: the running agent's decisions, live, over its admin socket (like
//! `hubble observe`). Human lines by default, the agent's JSON records with `--json`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    process::ExitCode,
};

use anyhow::Context as _;
use ipnet::IpNet;

use super::ObserveArgs;
use crate::{
    events::{Record, ecs, observe::Filter},
    service::admin,
};

/// `--host`: a network, or one address (as a /32 or /128).
fn host_net(s: &str) -> anyhow::Result<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| anyhow::anyhow!("--host {s:?} is not an address or CIDR (e.g. 10.10.0.0/16)"))
}

/// One human line: time, kind, zones, protocol, src → dst, rule/reason, interface (and a
/// flow's counters when it ended).
pub fn human(r: &Record) -> String {
    let proto = ecs::transport(r.protocol)
        .map(str::to_string)
        .unwrap_or_else(|| format!("proto {}", r.protocol));
    let end = |ip: IpAddr, port: Option<u16>| match (ip, port) {
        (IpAddr::V6(v), Some(p)) => format!("[{v}]:{p}"),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_string(),
    };
    let icmp = matches!(proto.as_str(), "icmp" | "ipv6-icmp");
    let dst = if icmp {
        let t = r.dst_port.unwrap_or(0);
        format!("{} type {} code {}", r.dst_ip, t >> 8, t & 0xff)
    } else {
        end(r.dst_ip, r.dst_port)
    };
    let mut line = format!(
        "{} {:<9} {} -> {} {} {} -> {}",
        ecs::timestamp(r.time_ms),
        r.kind,
        r.from_zone,
        r.to_zone,
        proto,
        end(r.src_ip, r.src_port),
        dst
    );
    if let Some(rule) = &r.rule {
        line.push_str(&format!(" rule={rule}"));
    }
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" reason={reason}"));
    }
    line.push_str(&format!(" iface={}", r.interface));
    if let Some(v) = r.vlan {
        line.push_str(&format!(" vlan={v}"));
    }
    if let Some(f) = &r.flow {
        line.push_str(&format!(
            " sent={}pkt/{}B recv={}pkt/{}B duration={:.3}s",
            f.orig_packets,
            f.orig_bytes,
            f.reply_packets,
            f.reply_bytes,
            f.duration_ms as f64 / 1000.0
        ));
    }
    if r.lost_before > 0 {
        line.push_str(&format!(" (lost before: {})", r.lost_before));
    }
    line
}

pub fn observe(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        verdict: args.verdict,
        zone: args.zone,
        host: args.host.as_deref().map(host_net).transpose()?,
        rule: args.rule,
    };
    let path = admin::socket_path(&args.admin.state_dir);
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "no running zone-agent answers on {} (is it running, with --state-dir {}?)",
            path.display(),
            args.admin.state_dir.display()
        )
    })?;
    s.write_all(format!("{} {}\n", admin::OBSERVE, serde_json::to_string(&filter)?).as_bytes())?;
    let mut lines = BufReader::new(s).lines();
    let first = lines
        .next()
        .context("the agent closed the connection without answering")?
        .context("reading the agent's answer")?;
    let v: serde_json::Value =
        serde_json::from_str(&first).context("the agent's answer is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("the agent answered: {e}");
    }
    // On standard error, so that `--json` output stays pure JSON lines.
    eprintln!("observing {} (until interrupted)", v["observing"]);
    let out = std::io::stdout();
    for line in lines {
        let line = line.context("reading from the agent")?;
        let text = if args.admin.json {
            line
        } else {
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => human(&r),
                Err(_) => line,
            }
        };
        // Standard output closed (`| head`): done.
        if writeln!(out.lock(), "{text}").is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    anyhow::bail!(
        "the agent ended the stream (it stopped, or this client did not keep up and was dropped)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lines() {
        let r = crate::events::sample_record();
        assert_eq!(
            human(&r),
            "1970-01-01T00:00:00.000Z deny      internet -> mynumber tcp 198.51.100.10:40000 -> 10.10.0.10:22 reason=no_rule iface=zinet"
        );
        assert_eq!(host_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(host_net("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert!(host_net("nope").is_err());
    }
}
