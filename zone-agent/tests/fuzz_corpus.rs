//! The fuzz corpora and regression inputs (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! replayed through the same checks the cargo-fuzz targets run (`zone_agent::fuzzing`), so that
//! every bug the fuzzer found stays fixed without nightly or cargo-fuzz. No root.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use zone_agent::fuzzing;
use zone_agent_common::{DropReason, PassReason};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none if the directory does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on every corpus and regression input of `target`, reporting all that fail
/// (by file name, with the panic message) rather than stopping at the first.
fn replay<T>(target: &str, check: impl Fn(&[u8]) -> T) -> Vec<T> {
    let corpus = inputs("corpus", target);
    assert!(
        !corpus.is_empty(),
        "no corpus in {}: the seeds come from `python3 fuzz/seeds.py`",
        fuzz_dir().join("corpus").join(target).display()
    );
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(r) => results.push(r),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                failures.push(format!("{}: {msg}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) of {target} fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    results
}

#[test]
fn policy_loader_corpus_and_regressions() {
    replay("policy_loader", fuzzing::policy_loader);
}

#[test]
fn frame_parser_corpus_and_regressions() {
    let decisions = replay("frame_parser", fuzzing::frame_parser);
    // The corpus must keep reaching every outcome the fuzzing policy allows, or the fuzzer
    // starts from less than the seeds gave it.
    let reached: BTreeSet<&str> = decisions
        .iter()
        .flatten()
        .map(|d| d.reason_label())
        .collect();
    // Every reason but those the fuzzing policy rules out (it allows intra-zone traffic, its
    // networks cover every address) and the kernel's own (quarantine, a full table, no policy).
    let passes = PassReason::ALL
        .into_iter()
        .filter(|r| *r != PassReason::UnknownZone);
    let drops = DropReason::ALL.into_iter().filter(|r| {
        !matches!(
            r,
            DropReason::IntraZone
                | DropReason::UnknownZone
                | DropReason::Quarantined
                | DropReason::TableFull
                | DropReason::NoPolicy
        )
    });
    let wanted: Vec<&str> = passes
        .map(PassReason::label)
        .chain(drops.map(DropReason::label))
        .collect();
    let missing: Vec<&&str> = wanted.iter().filter(|w| !reached.contains(**w)).collect();
    assert!(
        missing.is_empty(),
        "the frame corpus reaches no {missing:?} (reached {reached:?})"
    );
    // Some decisions pass only because of an audit-mode rule.
    assert!(
        decisions.iter().flatten().any(|d| d.audit),
        "no audit-rule pass in the corpus"
    );
}

/// The record format: control byte, big-endian length, frame; VLAN tags inserted as asked.
#[test]
fn records_split_as_documented() {
    let frame: Vec<u8> = (0..20).collect();
    let mut input = vec![0x01 | 1 << 3, 0, 20];
    input.extend_from_slice(&frame);
    input.extend_from_slice(&[0x82, 0xff, 0xff, 9, 9]);
    let r = fuzzing::records(&input);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].ifname, "fz-lg");
    assert_eq!(&r[0].frame[..12], &frame[..12]);
    assert_eq!(&r[0].frame[12..16], &[0x81, 0x00, 0, 100]);
    assert_eq!(&r[0].frame[16..], &frame[12..]);
    assert!(!r[0].reload);
    // A length past the end takes what is there; short frames get no tags.
    assert_eq!(
        (r[1].ifname, r[1].frame.as_slice(), r[1].reload),
        ("fz-inet", &[9u8, 9][..], true)
    );
    assert_eq!(fuzzing::records(&[0x03]).len(), 1);
    assert!(fuzzing::records(&[]).is_empty());
    assert_eq!(fuzzing::records(&[0; 64]).len(), fuzzing::MAX_FRAMES);
}
