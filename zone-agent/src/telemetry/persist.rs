//! What the agent knows beyond the pinned maps, saved in the state dir so that a restarted
//! agent labels the counters it adopts and keeps its totals: the names of each policy set
//! (with the generation they belong to) and the totals of retired sets.
//!
//! Written (atomically: temporary file + rename) before every flip, so that whichever set a
//! crash leaves active, its names are on disk.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zone_agent_common::{Counter, Verdict, abi_fingerprint};

use super::{EVENTS, EventTotals, SetNames, Telemetry, Totals};

const FILE: &str = "telemetry.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// `abi_fingerprint()` as hex: counters of other pinned layouts are not adopted.
    abi: String,
    sets: [Option<SetNames>; 2],
    retired_zones: Vec<(String, String, String, u64, u64)>,
    retired_rules: Vec<(String, u64, u64)>,
    reloads_ok: u64,
    reloads_error: u64,
    /// The agent's own event counters (absent in files of older agents).
    #[serde(default)]
    events: EventTotals,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

fn abi() -> String {
    format!("{:016x}", abi_fingerprint())
}

/// Saves `t` under `state_dir`.
pub fn save(state_dir: &Path, t: &Telemetry) -> std::io::Result<()> {
    let saved = Saved {
        abi: abi(),
        sets: t.sets.clone(),
        retired_zones: t
            .retired
            .zones
            .iter()
            .map(|((f, to, v), c)| (f.clone(), to.clone(), v.to_string(), c.packets, c.bytes))
            .collect(),
        retired_rules: t
            .retired
            .rules
            .iter()
            .map(|(r, c)| (r.clone(), c.packets, c.bytes))
            .collect(),
        reloads_ok: t.reloads_ok,
        reloads_error: t.reloads_error,
        events: EVENTS.totals(),
    };
    let text = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
    write_private(state_dir, FILE, &text)
}

/// Writes `<dir>/<name>` atomically and readable by the owner only: a temporary file created
/// 0600 (whatever the umask; an old one is replaced, not reused), written and fsynced, renamed
/// over the target, then the directory fsynced so that the rename itself survives a crash.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Restores what was saved for the pinned sets. `set_generations[s]`: the generation the
/// pinned maps hold in set `s` (0: none). Names are restored only for a set whose saved
/// generation matches; totals only if the pinned layout is the one they were counted in.
pub fn restore(
    state_dir: &Path,
    set_generations: [u32; 2],
    t: &mut Telemetry,
) -> Result<(), String> {
    let text = match std::fs::read(path(state_dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no saved telemetry".into());
        }
        Err(e) => return Err(format!("{}: {e}", path(state_dir).display())),
    };
    let saved: Saved =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path(state_dir).display()))?;
    if saved.abi != abi() {
        return Err(format!(
            "saved telemetry belongs to layout {}, not {}",
            saved.abi,
            abi()
        ));
    }
    for (s, names) in saved.sets.into_iter().enumerate() {
        t.sets[s] = names.filter(|n| n.generation != 0 && n.generation == set_generations[s]);
    }
    let mut retired = Totals::default();
    for (f, to, v, packets, bytes) in saved.retired_zones {
        let Some(v) = Verdict::ALL.into_iter().find(|x| x.label() == v) else {
            continue;
        };
        retired
            .zones
            .insert((f, to, v.label()), Counter { packets, bytes });
    }
    for (r, packets, bytes) in saved.retired_rules {
        retired.rules.insert(r, Counter { packets, bytes });
    }
    t.retired = retired;
    t.reloads_ok = saved.reloads_ok;
    t.reloads_error = saved.reloads_error;
    EVENTS.restore(&saved.events);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::EventCounters;

    #[test]
    fn round_trip_keeps_matching_sets_only() {
        let dir = std::env::temp_dir().join(format!("za-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Telemetry::default();
        t.sets[0] = Some(SetNames {
            generation: 3,
            zones: vec!["none".into(), "a".into()],
            rules: vec!["r".into()],
        });
        t.sets[1] = Some(SetNames {
            generation: 4,
            zones: vec!["none".into()],
            rules: vec![],
        });
        t.retired.rules.insert(
            "old".into(),
            Counter {
                packets: 5,
                bytes: 500,
            },
        );
        t.retired.zones.insert(
            ("a".into(), "b".into(), "deny"),
            Counter {
                packets: 2,
                bytes: 80,
            },
        );
        t.reloads_ok = 7;
        EventCounters::inc(&EVENTS.flow_end_swept);
        save(&dir, &t).unwrap();
        let mut back = Telemetry::default();
        // Set 1 holds generation 5 now (saved: 4): its names are not trusted.
        restore(&dir, [3, 5], &mut back).unwrap();
        assert_eq!(back.sets[0], t.sets[0]);
        assert_eq!(back.sets[1], None);
        assert_eq!(
            back.retired.rules["old"],
            Counter {
                packets: 5,
                bytes: 500
            }
        );
        assert_eq!(
            back.retired.zones[&("a".into(), "b".into(), "deny")].packets,
            2
        );
        assert_eq!(back.reloads_ok, 7);
        // The agent's event counters continue (they are process-wide: other tests may add
        // to them meanwhile, never take away).
        let saved: Saved = serde_json::from_slice(&std::fs::read(path(&dir)).unwrap()).unwrap();
        assert!(EVENTS.totals().flow_end_swept >= 2 * saved.events.flow_end_swept);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "telemetry.json must be private to the agent");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
