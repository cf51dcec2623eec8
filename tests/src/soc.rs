//! A SOC for the lab: the alert receiver (`tests/receiver/soc_receiver.py`, a real HTTP(S)
//! server that checks signatures and OCSF bodies) and a real syslog collector (rsyslog with
//! `imtcp`), each run inside a namespace of the lab, writing what it received to a file the
//! test reads.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{ChildGuard, Lab, wait_until};

/// The receiver script, from this crate's sources.
pub fn receiver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("receiver/soc_receiver.py")
}

/// A running receiver and the file it appends requests to.
pub struct Receiver {
    pub out: PathBuf,
    pub child: ChildGuard,
}

impl Receiver {
    /// Starts the receiver in `ns` on `listen` (`ADDR:PORT`) with extra arguments
    /// (`--secret-file F`, `--ocsf`, `--fail-first N`, TLS files…); returns once it listens.
    pub fn start(lab: &Lab, ns: &str, name: &str, listen: &str, extra: &[&str]) -> Receiver {
        let out = lab.dir().join(format!("{name}.jsonl"));
        let script = receiver_script();
        let script = script.to_str().expect("utf-8 path");
        let out_s = out.to_str().expect("utf-8 path").to_string();
        let mut argv = vec!["python3", script, "--listen", listen, "--out", &out_s];
        argv.extend_from_slice(extra);
        let log = lab.log_path(name);
        let child = lab.spawn(ns, &argv, &log);
        wait_until(Duration::from_secs(15), "the SOC receiver listens", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening"))
        });
        Receiver { out, child }
    }

    /// Every request received so far (one JSON object each).
    pub fn received(&self) -> Vec<Value> {
        read_json_lines(&self.out)
    }
}

/// A running rsyslog that writes each message it receives over TCP to `out`, one per line.
pub struct Collector {
    pub out: PathBuf,
    pub child: ChildGuard,
}

impl Collector {
    /// rsyslogd in the foreground in `ns`, `imtcp` on `port`, no other input and no other
    /// output (its own config, pid file and work dir in the lab's dir).
    pub fn start(lab: &Lab, ns: &str, name: &str, port: u16) -> Collector {
        let dir = lab.dir().join(name);
        std::fs::create_dir_all(&dir).expect("collector dir");
        let out = dir.join("messages.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" port=\"{port}\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 action(type=\"omfile\" file=\"{o}\" template=\"raw\")\n",
                d = dir.display(),
                o = out.display()
            ),
        )
        .expect("write rsyslog.conf");
        let pid = dir.join("rsyslogd.pid");
        let log = lab.log_path(name);
        let child = lab.spawn(
            ns,
            &[
                "rsyslogd",
                "-n",
                "-f",
                conf.to_str().expect("utf-8"),
                "-i",
                pid.to_str().expect("utf-8"),
            ],
            &log,
        );
        let probe = format!("ss -Hltn sport = :{port}");
        wait_until(Duration::from_secs(15), "rsyslog listens", || {
            !lab.run(ns, &["sh", "-c", &probe]).stdout.is_empty()
        });
        Collector { out, child }
    }

    /// The messages written so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}
