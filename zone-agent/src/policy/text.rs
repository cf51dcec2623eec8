//! Text from a policy file on an operator's terminal. A description, label, `acknowledge` text
//! or a bad value quoted in a diagnostic may hold control characters: ESC sequences that erase
//! or rewrite lines, a CR or backspace that overprints, a newline that forges a line of
//! `policy diff`, bidi controls (U+202E) that reorder what is shown. Every human-facing output
//! goes through [`escape`] (one value) or [`escape_lines`] (a rendered block whose own line
//! breaks are kept): such characters come out visibly, as `\u{1b}`, `\r`, `\n`, `\t` or
//! `\u{202e}`. Everything else, Japanese text included, is left as it is. JSON output needs
//! none of this (serde escapes control characters).

use std::borrow::Cow;
use std::fmt;

/// Characters that change what a terminal shows instead of being shown: C0 and C1 controls
/// and DEL, the bidi embedding/override/isolate controls and marks, and the Unicode line and
/// paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.extend(c.escape_unicode()),
    }
}

fn escape_except(s: &str, keep: fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One value (a name, description, label, path…) made safe to print: every unsafe character,
/// newlines included, is written as an escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_except(s, |_| false)
}

/// A rendered block of lines made safe to print: like [`escape`] but its newlines are kept.
/// Values inside the block should have been [`escape`]d already (so that a newline in a value
/// cannot forge a line); this is the last guard before the terminal.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_except(s, |c| c == '\n')
}

/// `format!("{}", Escaped(s))` writes [`escape`]`(s)`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_japanese_is_kept() {
        assert_eq!(escape("マイナンバー利用事務系"), "マイナンバー利用事務系");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\x1b[2Kb\rc\x08d\u{202e}e\nf\tg\u{7f}h\u{9b}i"),
            "a\\u{1b}[2Kb\\rc\\u{8}d\\u{202e}e\\nf\\tg\\u{7f}h\\u{9b}i"
        );
        assert_eq!(escape_lines("x\x1b\ny\r\n"), "x\\u{1b}\ny\\r\n");
        assert_eq!(Escaped("中\u{2066}間").to_string(), "中\\u{2066}間");
    }
}
