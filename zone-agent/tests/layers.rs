//! Imports point down (SPEC §10, issue 14): every `crate::…` and `super::…` path in
//! `zone-agent/src/**/*.rs` names a module of the same layer or a lower one, never a higher
//! one. Reads the source text only (no root, no build of anything else):
//!
//! ```text
//! cargo test -p zone-agent --test layers
//! ```
//!
//! A failure names `file:line`, the path, and both layers. A source file that is not in
//! [`LAYERS`] fails too: a new module must say where it sits.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Layers from the top down; a module may use its own layer and the ones after it in this
/// list, never one before it. Keys are module paths (`policy::model` is `src/policy/model.rs`);
/// the longest key that is a prefix of a module's path decides its layer.
const LAYERS: &[(&str, &[&str])] = &[
    // The crate root (`lib.rs`, `main.rs`) only declares modules and keeps old paths alive.
    ("root", &[""]),
    // Argument parsing and the subcommands' glue; `fuzzing` holds the fuzz targets' checks
    // (built only with the `fuzzing` feature) and uses the policy stack like a subcommand.
    ("cli", &["cli", "fuzzing"]),
    // The running agent: the control task and the snapshots it publishes (`service`), the
    // agent that owns the data path and telemetry (`service::agent`), the admin socket and
    // `/metrics` (`service::admin`, `service::http`, fed the published snapshot).
    ("service", &["service"]),
    // detect, alert, contain: empty until the XDR work.
    ("detect/alert/contain", &["detect", "alert", "contain"]),
    // Events from the data path: the ring reader, decoding, fan-out (observe, flow log,
    // the page's recent denials).
    ("events", &["events"]),
    // Settings and defaults (with the failsafe host binding); counters and their names.
    ("config/telemetry", &["config", "telemetry"]),
    // The reference model (semantics, frame parsing, failsafe matching, explain); authoring
    // (template, diff, nft export); the data path (the only aya user).
    (
        "model/authoring/datapath",
        &[
            "policy::model",
            "policy::frame",
            "policy::explain",
            "policy::template",
            "policy::diff",
            "policy::nft",
            "datapath",
        ],
    ),
    // policy::load's parts: read → parse → validate (+ lint) → compile, diagnostics, types.
    ("policy", &["policy"]),
];

/// (layer index, layer name) of a module path; `None` if no key covers it.
fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None; // (key length, index, name)
    for (i, (name, keys)) in LAYERS.iter().enumerate() {
        for key in *keys {
            // The root key covers the root only: a new module in no layer is an error.
            let covers =
                module == *key || !key.is_empty() && module.starts_with(&format!("{key}::"));
            if covers && best.is_none_or(|(len, _, _)| key.len() > len) {
                best = Some((key.len(), i, name));
            }
        }
    }
    best.map(|(_, i, name)| (i, name))
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line: `//` comments (also doc comments) and string literals blanked, so
/// that a path in prose or in a message is not taken for a use.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push('"');
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d as e}}`) into its paths (`a::b`, `a::c::d`).
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
        let prefix = join(prefix, head);
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &prefix, out);
    } else {
        let path = tree.split(" as ").next().unwrap().trim();
        let path = path.trim_end_matches("::self").trim_end_matches("::*");
        out.push(if path == "self" || path == "*" {
            prefix.to_string()
        } else {
            join(prefix, path)
        });
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_string(),
        (true, _) => b.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// Paths (`crate::…` or `super::…`, as written) used on one line of code outside `use`
/// statements: `crate::policy::read::read_file(p)` → `crate::policy::read::read_file`.
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let i = from + at;
            from = i + start.len();
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue; // `$crate::`, `a::super::` (counted from its own start)
            }
            let mut end = i;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            out.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// A path as written in module `module` (`depth` inline modules deep, e.g. `mod tests`),
/// made absolute: `super::types::Loc` in `policy::model` → `policy::types::Loc`.
fn absolute(path: &str, module: &str, depth: usize) -> Option<String> {
    if let Some(rest) = path.strip_prefix("crate::") {
        return Some(rest.to_string());
    }
    if path == "crate" {
        return Some(String::new());
    }
    let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let mut rest = path;
    let mut depth = depth;
    loop {
        let (seg, tail) = rest.split_once("::").unwrap_or((rest, ""));
        if seg != "super" {
            break;
        }
        if depth > 0 {
            depth -= 1; // out of an inline module, still in this file's module
        } else {
            base.pop()?;
        }
        rest = tail;
    }
    if rest == path {
        return None; // neither `crate::` nor `super::`: not a path into this crate
    }
    Some(join(&base.join("::"), rest))
}

/// The longest prefix of `path` that is a module of the crate.
fn module_named<'a>(path: &'a str, modules: &BTreeSet<String>) -> &'a str {
    let mut best = "";
    for (i, _) in path.match_indices("::").chain([(path.len(), "")]) {
        if modules.contains(&path[..i]) {
            best = &path[..i];
        }
    }
    best
}

struct Use {
    line: usize,
    path: String,
}

/// Every path one file uses, with the line it starts on and the number of inline modules
/// (`mod tests {`) open around it, so that `super::` resolves from the right module.
fn uses(text: &str) -> Vec<(Use, usize)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut pending: Option<(usize, String)> = None; // a `use` statement over several lines
    for (n, raw) in text.lines().enumerate() {
        let code = code_of(raw);
        let trimmed = code.trim();
        if let Some((line, mut stmt)) = pending.take() {
            stmt.push(' ');
            stmt.push_str(trimmed);
            if stmt.contains(';') {
                push_use(&stmt, line, depth, &mut out);
            } else {
                pending = Some((line, stmt));
            }
            continue;
        }
        let stmt = trimmed
            .strip_prefix("pub ")
            .or_else(|| trimmed.strip_prefix("pub(crate) "))
            .unwrap_or(trimmed);
        if stmt.starts_with("use ") {
            if stmt.contains(';') {
                push_use(stmt, n + 1, depth, &mut out);
            } else {
                pending = Some((n + 1, stmt.to_string()));
            }
            continue;
        }
        // `mod tests {` (inline): later `super::` is counted from inside it. Inline modules
        // sit at the end of their file here, so the depth never goes back down.
        if stmt.starts_with("mod ") && stmt.ends_with('{') {
            depth += 1;
        }
        for path in inline_paths(&code) {
            out.push((Use { line: n + 1, path }, depth));
        }
    }
    out
}

fn push_use(stmt: &str, line: usize, depth: usize, out: &mut Vec<(Use, usize)>) {
    let tree = stmt
        .trim_start_matches("use ")
        .split(';')
        .next()
        .unwrap_or_default();
    let mut paths = Vec::new();
    expand(tree, "", &mut paths);
    for path in paths {
        out.push((Use { line, path }, depth));
    }
}

/// Every use of a higher layer in `src`, as `file:line: message`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut out = Vec::new();
    for file in &files {
        let module = module_of(src, file);
        let shown = file.strip_prefix(src.parent().unwrap()).unwrap().display();
        let Some((mine, my_name)) = layer_of(&module) else {
            out.push(format!(
                "{shown}: module `{module}` is in no layer (add it to LAYERS)"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (u, depth) in uses(&text) {
            let Some(abs) = absolute(&u.path, &module, depth) else {
                continue;
            };
            let target = module_named(&abs, &modules);
            if target.is_empty() && !abs.is_empty() && my_name != "root" {
                out.push(format!(
                    "{shown}:{}: `{}` goes through a re-export at the crate root; name the module that defines it",
                    u.line, u.path
                ));
                continue;
            }
            let Some((theirs, their_name)) = layer_of(target) else {
                continue; // reported once for its own file
            };
            if theirs < mine {
                out.push(format!(
                    "{shown}:{}: `{}` ({my_name}) uses `{target}` ({their_name}), a higher layer",
                    u.line, u.path
                ));
            }
        }
    }
    out
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "{} import(s) point up (SPEC §10: cli → service → detect/alert/contain → config/telemetry → model/authoring/datapath → policy → common):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The reader itself: grouped, nested, renamed, relative and inline paths are all seen.
#[test]
fn reader_sees_every_form() {
    let text = "use crate::{\n    cli::{A, b::C as D},\n    datapath,\n};\nuse super::super::x::Y;\n// crate::not::this\nfn f() { crate::agent::ifindex(\"crate::no\"); }\nmod tests {\n    use super::*;\n}\n";
    let got: Vec<(usize, String, usize)> = uses(text)
        .into_iter()
        .map(|(u, d)| (u.line, u.path, d))
        .collect();
    let want = [
        (1, "crate::cli::A", 0),
        (1, "crate::cli::b::C", 0),
        (1, "crate::datapath", 0),
        (5, "super::super::x::Y", 0),
        (7, "crate::agent::ifindex", 0),
        (9, "super", 1),
    ];
    let want: Vec<(usize, String, usize)> = want
        .iter()
        .map(|&(l, p, d)| (l, p.to_string(), d))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        absolute("super::types::Loc", "policy::model", 0).as_deref(),
        Some("policy::types::Loc")
    );
    assert_eq!(
        absolute("super", "policy::model", 1).as_deref(),
        Some("policy::model")
    );
    assert_eq!(layer_of("service::http").unwrap().1, "service");
    assert_eq!(
        layer_of("telemetry::metrics").unwrap().1,
        "config/telemetry"
    );
    assert_eq!(
        layer_of("policy::model").unwrap().1,
        "model/authoring/datapath"
    );
    assert_eq!(layer_of("policy::validate").unwrap().1, "policy");
    assert_eq!(layer_of("").unwrap().1, "root");
    assert!(
        layer_of("newthing").is_none(),
        "a module in no layer is reported"
    );
}
