//! Regression files: the shrunk failures, replayed first on every run.

use super::*;

pub(crate) fn op_line(op: &Op) -> String {
    match op {
        Op::Send { iface, bytes } => format!("send {iface} {}", hex(bytes)),
        Op::Cuts { iface, bytes } => format!("cuts {iface} {}", hex(bytes)),
        Op::Advance(ns) => format!("advance {ns}"),
        Op::Reload(k) => format!("reload {k}"),
    }
}

pub(crate) fn case_text(policies: &[String], ops: &[Op]) -> String {
    let mut t = String::new();
    for (i, p) in policies.iter().enumerate() {
        writeln!(t, "policy {i}\n{}\nend", p.trim_end()).unwrap();
    }
    for op in ops {
        writeln!(t, "{}", op_line(op)).unwrap();
    }
    t
}

pub(crate) fn parse_case(text: &str) -> (Vec<String>, Vec<Op>) {
    let mut policies = vec![];
    let mut ops = vec![];
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, ..) => {}
            (Some(w), ..) if w.starts_with('#') => {}
            (Some("policy"), Some(_), None) => {
                let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "end").collect();
                policies.push(body.join("\n"));
            }
            (Some("send"), Some(i), Some(h)) => ops.push(Op::Send {
                iface: i.into(),
                bytes: unhex(h),
            }),
            (Some("cuts"), Some(i), Some(h)) => ops.push(Op::Cuts {
                iface: i.into(),
                bytes: unhex(h),
            }),
            (Some("advance"), Some(n), None) => {
                ops.push(Op::Advance(n.parse().expect("advance ns")))
            }
            (Some("reload"), Some(k), None) => {
                ops.push(Op::Reload(k.parse().expect("reload index")))
            }
            _ => panic!("bad regression line: {line}"),
        }
    }
    (policies, ops)
}

pub(crate) fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions/differential")
}

pub(crate) fn replay_corpus(engine: &mut Engine) {
    let Ok(dir) = std::fs::read_dir(corpus_dir()) else {
        return;
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read regression file");
        let (policies, ops) = parse_case(&text);
        match engine.run(&policies, &ops) {
            Ok(()) => engine.totals.corpus += 1,
            Err(RunError::Reject(e)) | Err(RunError::Mismatch(e)) => {
                panic!(
                    "regression case {} fails again:\n{e}\n\n{text}",
                    f.display()
                )
            }
        }
    }
}

pub(crate) fn save_regression(seed: u64, text: &str, why: &str) -> PathBuf {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("create the regression directory");
    // FNV-1a of the case: the same failure found twice is one file.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{hash:016x}.txt"));
    let first = why.lines().next().unwrap_or_default();
    let body =
        format!("# found with ZA_DIFF_SEED={seed:#x}, shrunk by proptest\n# {first}\n{text}");
    std::fs::write(&path, body).expect("write the regression file");
    path
}

/// Proptest shrinks the generated choices; this then drops the concrete operations the
/// failure does not need, one at a time (from the end, so that what a later step depends
/// on is tried last).
pub(crate) fn minimize(
    engine: &mut Engine,
    policies: &[String],
    mut ops: Vec<Op>,
    why: &mut String,
) -> Vec<Op> {
    let mut i = ops.len();
    while i > 0 {
        i -= 1;
        let mut fewer = ops.clone();
        fewer.remove(i);
        if let Err(RunError::Mismatch(w)) = engine.run(policies, &fewer) {
            ops = fewer;
            *why = w;
            i = i.min(ops.len());
        }
    }
    ops
}
