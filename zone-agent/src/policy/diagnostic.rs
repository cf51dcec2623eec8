//! Located policy problems: `policy.toml:12:7: error: ...` plus a `help:` line saying how to
//! fix it. Every stage (parse, validate, later compile) reports through [`Diagnostic`] so that
//! `policy check` and a rejected reload print the same thing.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::text::{Escaped, escape};
use super::types::Loc;

/// Diagnostics of one kind (the same message but for the names and numbers in it) shown per
/// file; the rest are summed up in one line, so that a policy with 100 000 copies of one
/// mistake prints a screenful, not 100 000 of them.
pub const SHOWN_PER_KIND: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One problem in a policy file, 1-based line and column (columns count characters, not
/// bytes, so that they match what an editor shows on lines with Japanese labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub col: u32,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    /// 0 for a diagnostic; otherwise this one stands for that many further diagnostics of one
    /// kind that are not shown (see [`SHOWN_PER_KIND`]), the first of them at its location.
    pub omitted: usize,
}

impl Diagnostic {
    pub fn error(
        file: impl Into<PathBuf>,
        loc: Loc,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        Self::new(file.into(), loc, Severity::Error, message.into(), help)
    }

    pub fn warning(
        file: impl Into<PathBuf>,
        loc: Loc,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        Self::new(file.into(), loc, Severity::Warning, message.into(), help)
    }

    fn new(
        file: PathBuf,
        loc: Loc,
        severity: Severity,
        message: String,
        help: Option<String>,
    ) -> Self {
        Diagnostic {
            file,
            line: loc.line,
            col: loc.col,
            severity,
            message,
            help,
            omitted: 0,
        }
    }

    pub fn loc(&self) -> Loc {
        Loc {
            line: self.line,
            col: self.col,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// How many problems this diagnostic reports: 1, or the number it sums up.
    pub fn count(&self) -> usize {
        self.omitted.max(1)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages quote the file's text: control characters in it are shown, not obeyed.
        write!(
            f,
            "{}:{}:{}: {}: {}",
            Escaped(&self.file.to_string_lossy()),
            self.line,
            self.col,
            self.severity,
            escape(&self.message)
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {}", escape(help))?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Everything found in one pass over a file, in file order. As an error it means "the policy
/// was rejected"; it may also carry the warnings found alongside the errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// Errors found, including those summed up and not shown.
    pub fn error_count(&self) -> usize {
        self.errors().map(Diagnostic::count).sum()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Turns byte offsets (what `toml` spans are) into 1-based line/column [`Loc`]s.
#[derive(Clone, Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// The location of byte `offset`. An offset past the end (toml reports "unexpected end of
    /// file" there) or inside a multi-byte character is clamped to the nearest character.
    pub fn loc(&self, offset: usize) -> Loc {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0] == 0`, so the partition point is at least 1.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = self.text[start..offset].chars().count() + 1;
        Loc {
            line: to_u32(line),
            col: to_u32(col),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Collects the diagnostics of one file while it is checked, so that every stage can keep
/// going after a problem and the user sees all of them at once.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    path: &'a Path,
    lines: LineIndex<'a>,
    diags: Vec<Diagnostic>,
    errors: usize,
    /// Per kind of diagnostic: how many are kept, and the summary of those that are not.
    kinds: HashMap<(Severity, String), (usize, Option<usize>)>,
}

/// The kind of a diagnostic: its message without what is quoted and without numbers
/// (`duplicate rule name "r7"` and `duplicate rule name "r8"` are one kind).
fn kind(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            _ if quoted || c.is_ascii_digit() => {}
            _ => out.push(c),
        }
    }
    out
}

impl<'a> Sink<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Sink {
            path,
            lines: LineIndex::new(text),
            diags: Vec::new(),
            errors: 0,
            kinds: HashMap::new(),
        }
    }

    pub(crate) fn path(&self) -> &'a Path {
        self.path
    }

    pub(crate) fn loc(&self, offset: usize) -> Loc {
        self.lines.loc(offset)
    }

    pub(crate) fn error(&mut self, loc: Loc, message: impl Into<String>, help: impl Into<String>) {
        self.errors += 1;
        self.push(Severity::Error, loc, message.into(), help.into());
    }

    /// Keeps the first [`SHOWN_PER_KIND`] diagnostics of a kind; counts the others in one
    /// summary at the first of them.
    fn push(&mut self, severity: Severity, loc: Loc, message: String, help: String) {
        let (kept, summary) = self.kinds.entry((severity, kind(&message))).or_default();
        if *kept < SHOWN_PER_KIND {
            *kept += 1;
            let d = Diagnostic::new(self.path.into(), loc, severity, message, Some(help));
            self.diags.push(d);
            return;
        }
        match summary {
            Some(i) => self.diags[*i].omitted += 1,
            None => {
                *summary = Some(self.diags.len());
                let mut d = Diagnostic::new(self.path.into(), loc, severity, message, Some(help));
                d.omitted = 1;
                self.diags.push(d);
            }
        }
    }

    /// The diagnostics in file order, summaries worded.
    fn sorted(self) -> Vec<Diagnostic> {
        let mut diags = self.diags;
        for d in diags.iter_mut().filter(|d| d.omitted > 0) {
            d.message = format!(
                "… and {} more {}{} of this kind, not shown; the first of them here: {}",
                d.omitted,
                d.severity,
                if d.omitted == 1 { "" } else { "s" },
                d.message
            );
        }
        // Stable: problems found at the same place keep the order they were found in.
        diags.sort_by_key(|d| (d.line, d.col));
        diags
    }

    pub(crate) fn warning(
        &mut self,
        loc: Loc,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(Severity::Warning, loc, message.into(), help.into());
    }

    /// Errors so far: comparing two counts tells whether a step found anything wrong.
    pub(crate) fn error_count(&self) -> usize {
        self.errors
    }

    /// `Ok(value, warnings)` if nothing was an error, else every diagnostic, in file order.
    pub(crate) fn finish<T>(self, value: T) -> Result<(T, Vec<Diagnostic>), Diagnostics> {
        let errors = self.errors;
        let diags = self.sorted();
        if errors > 0 {
            Err(Diagnostics(diags))
        } else {
            Ok((value, diags))
        }
    }

    /// The diagnostics so far as a rejection (used when checking cannot go on at all).
    pub(crate) fn reject(self) -> Diagnostics {
        Diagnostics(self.sorted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_the_documented_format() {
        let d = Diagnostic::error(
            "policy.toml",
            Loc { line: 12, col: 7 },
            "unknown zone \"lgwn\" in rule \"eltax-relay\" field `to`",
            Some("defined zones are: mynumber, lgwan, internet".into()),
        );
        assert_eq!(
            d.to_string(),
            "policy.toml:12:7: error: unknown zone \"lgwn\" in rule \"eltax-relay\" field `to`\n  \
             help: defined zones are: mynumber, lgwan, internet"
        );
        let w = Diagnostic::warning("p.toml", Loc { line: 1, col: 1 }, "unused", None);
        assert_eq!(w.to_string(), "p.toml:1:1: warning: unused");
    }

    #[test]
    fn diagnostics_print_one_block_per_line_and_know_errors() {
        let w = Diagnostic::warning("p.toml", Loc { line: 1, col: 1 }, "w", Some("h".into()));
        let e = Diagnostic::error("p.toml", Loc { line: 2, col: 3 }, "e", None);
        let ds = Diagnostics(vec![w.clone()]);
        assert!(!ds.has_errors());
        let ds = Diagnostics(vec![w, e]);
        assert!(ds.has_errors());
        assert_eq!(
            ds.to_string(),
            "p.toml:1:1: warning: w\n  help: h\np.toml:2:3: error: e"
        );
    }

    #[test]
    fn line_index_counts_lines_and_characters_from_one() {
        let text = "a = 1\nlabel = \"マイナンバー\" x\n\nlast";
        let idx = LineIndex::new(text);
        assert_eq!(idx.loc(0), Loc { line: 1, col: 1 });
        assert_eq!(idx.loc(4), Loc { line: 1, col: 5 });
        // The newline itself still belongs to line 1.
        assert_eq!(idx.loc(5), Loc { line: 1, col: 6 });
        assert_eq!(idx.loc(6), Loc { line: 2, col: 1 });
        let x = text.find(" x").map(|i| i + 1).unwrap_or_default();
        // 8 ASCII characters, 2 quotes, 6 katakana and a space come before the `x`.
        assert_eq!(idx.loc(x), Loc { line: 2, col: 18 });
        // Inside a multi-byte character: clamped to its start.
        assert_eq!(
            idx.loc(text.find('マ').unwrap_or_default() + 1),
            Loc { line: 2, col: 10 }
        );
        assert_eq!(idx.loc(text.len()), Loc { line: 4, col: 5 });
        assert_eq!(idx.loc(text.len() + 10), Loc { line: 4, col: 5 });
    }
}
