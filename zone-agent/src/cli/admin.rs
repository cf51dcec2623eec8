//! `zone-agent status | flows | reload` (ask the running agent over its admin socket) and
//! `zone-agent detach` (remove every pinned link and map: the gates open).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;
use zone_agent_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use super::{AdminArgs, DetachArgs};
use crate::{datapath::pin::Pins, service::admin};

fn ask(args: &AdminArgs, cmd: &str) -> anyhow::Result<Value> {
    let path = admin::socket_path(&args.state_dir);
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "no running zone-agent answers on {} (is it running, with --state-dir {}?)",
            path.display(),
            args.state_dir.display()
        )
    })?;
    // A reload of a large policy takes seconds; never hang forever.
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("reading the agent's answer")?;
    let v: Value = serde_json::from_str(&line).context("the agent's answer is not JSON")?;
    if let Some(e) = v
        .get("error")
        .and_then(Value::as_str)
        .filter(|_| v.get("result").is_none())
    {
        anyhow::bail!("the agent answered: {e}");
    }
    Ok(v)
}

pub fn status(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args, "status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| {
        v.get(k)
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    println!(
        "zone-agent {} (pid {}), enforcing generation {} of {} ({})",
        s("version"),
        s("pid"),
        s("generation"),
        s("policy"),
        s("mode")
    );
    println!(
        "  zones: {}; rules: {}; flows: {}",
        v["zones"]
            .as_array()
            .map(|z| z
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        s("rules"),
        s("flows_active")
    );
    println!(
        "  program id {}; pins under {} (ABI {})",
        s("program_id"),
        s("pin_dir"),
        s("abi")
    );
    for i in v["interfaces"].as_array().into_iter().flatten() {
        println!(
            "  interface {:<12} attached: {:<8} program id {}",
            i["name"].as_str().unwrap_or("?"),
            i["attach"].as_str().unwrap_or("?"),
            i["program_id"]
        );
    }
    let fs = v["failsafe"].as_array().cloned().unwrap_or_default();
    if fs.is_empty() {
        println!("  failsafe flows: none configured");
    }
    for f in fs {
        let ports: Vec<String> = f["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let (a, b) = (p[0].as_u64().unwrap_or(0), p[1].as_u64().unwrap_or(0));
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let proto = if f["proto"].as_u64() == Some(u64::from(PROTO_UDP)) {
            "udp"
        } else {
            "tcp"
        };
        let list = |k: &str| {
            f[k].as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x[0].as_str().unwrap_or("?").to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  failsafe {}: {proto} {} from {} on {} to {}",
            f["name"].as_str().unwrap_or("?"),
            ports.join(","),
            list("sources"),
            list("interfaces"),
            list("destinations")
        );
    }
    println!(
        "  reloads: {} ok, {} rejected; fail_open_on_exit: {}",
        s("reloads_ok"),
        s("reloads_error"),
        s("fail_open_on_exit")
    );
    let replaced = v["adopted"]["replaced"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if v["adopted"]["generation"].as_u64().unwrap_or(0) > 0 {
        println!(
            "  adopted pinned generation {} at start",
            v["adopted"]["generation"]
        );
    }
    for r in replaced {
        println!(
            "  replaced incompatible pinned state: {}",
            r.as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn flows(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args, "flows")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<6} {:<44} {:<44} {:<18} {:<20} {:>8}",
        "proto", "source", "destination", "zones", "rule", "idle_s"
    );
    for f in &list {
        let number = f["proto"].as_u64();
        let proto = match number.and_then(|n| u8::try_from(n).ok()) {
            Some(PROTO_TCP) => "tcp".to_string(),
            Some(PROTO_UDP) => "udp".to_string(),
            Some(PROTO_ICMP) => "icmp".to_string(),
            Some(PROTO_ICMPV6) => "icmpv6".to_string(),
            _ => format!("{number:?}"),
        };
        println!(
            "{:<6} {:<44} {:<44} {:<18} {:<20} {:>8}",
            proto,
            f["src"].as_str().unwrap_or("?"),
            f["dst"].as_str().unwrap_or("?"),
            format!(
                "{}->{}",
                f["from_zone"].as_str().unwrap_or("?"),
                f["to_zone"].as_str().unwrap_or("?")
            ),
            f["rule"].as_str().unwrap_or("-"),
            f["idle_ms"].as_u64().unwrap_or(0) / 1000
        );
    }
    println!("{} flows", list.len());
    Ok(ExitCode::SUCCESS)
}

pub fn reload(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args, "reload")?;
    if args.json {
        println!("{v}");
    }
    match v["result"].as_str() {
        Some("success") => {
            if !args.json {
                println!("reloaded: generation {}", v["generation"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!(
                "reload rejected; generation {} keeps enforcing:\n{}",
                v["generation"],
                v["error"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub fn detach(args: DetachArgs) -> anyhow::Result<ExitCode> {
    if admin::agent_running(&args.state_dir) {
        anyhow::bail!(
            "a zone-agent is running (state dir {}); stop it first (systemctl stop zone-agent): it would keep enforcing. Stopping it leaves the policy pinned; then run detach again",
            args.state_dir.display()
        );
    }
    if !args.pin_dir.exists() {
        println!(
            "nothing pinned under {}: no zone-agent enforcement to remove",
            args.pin_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // An agent on this pin dir with another state dir than the one given: it holds the lock.
    // Holding it here also keeps an agent from starting on the pins being removed.
    let _lock = match crate::datapath::pin::lock_dir(&args.pin_dir) {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => anyhow::bail!(
            "a zone-agent is running with pin dir {} (it holds the lock on it); stop it first (systemctl stop zone-agent), then run detach again",
            args.pin_dir.display()
        ),
        Err(_) => None,
    };
    let pins = Pins::new(&args.pin_dir);
    let gone = pins
        .remove_all()
        .with_context(|| format!("removing the pins under {}", args.pin_dir.display()))?;
    // The directory itself, unless it is a mount point (then it stays, empty).
    let _ = std::fs::remove_dir(&args.pin_dir);
    if gone.is_empty() {
        println!(
            "no interface was attached; pins under {} removed",
            args.pin_dir.display()
        );
    } else {
        println!(
            "detached from {}; pins under {} removed. These interfaces now route unfiltered.",
            gone.join(", "),
            args.pin_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
