//! Text from a peer, made safe for a terminal and for line-oriented parsers.
//!
//! Why: a peer controls much of what the command prints (its Unix socket's or abstract name,
//! the text of a close reason or a pickle error, a class name) and scripts parse `listen`'s
//! stdout line by line. A raw newline would let a peer forge `open`/`close` lines, and ESC, BEL
//! or a C1 control would reach the terminal as escape sequences. So every line the command
//! prints passes through [`text`]: every character CPython 3.13's `str.isprintable` rejects (control
//! characters, all format characters such as bidi overrides, zero-width and tag characters, the
//! soft hyphen, line and paragraph separators, spaces other than the ASCII one, unassigned and
//! private-use code points) is written as Python writes it in a str repr (`\n`, `\x1b`,
//! `\u202e`, `\U000e0041`). One table decides, the library's ([`mpconn::pickle::is_printable`],
//! generated from CPython), so the command's own lines and the pickle reprs inside them escape
//! the same characters. Everything else, backslashes included, is left as it is: the lines stay
//! readable, and a line's end is always the command's own.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character that must not reach a terminal or a line parser raw: one Python's
/// `str.isprintable` rejects (ASCII is decided without the table).
fn unsafe_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    !mpconn::pickle::is_printable(c)
}

/// `s` with every control or invisible format character escaped as in a Python str repr;
/// borrowed unchanged when there is none (the common case costs a scan).
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        let u = c as u32;
        let _ = match c {
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            _ if u < 0x100 => write!(out, "\\x{u:02x}"),
            _ if u < 0x10000 => write!(out, "\\u{u:04x}"),
            _ => write!(out, "\\U{u:08x}"),
        };
    }
    Cow::Owned(out)
}

/// The start of `s` (at most `max` characters, then `...`) quoted as Rust's `{:?}` quotes it,
/// then cleaned: for error messages that repeat what the user typed.
pub fn quoted_prefix(s: &str, max: usize) -> String {
    let cut: String = s.chars().take(max).collect();
    let more = if cut.len() < s.len() { "..." } else { "" };
    format!("{}{more}", text(&format!("{cut:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_format_characters_are_escaped() {
        assert_eq!(text("x\nclose 1 ok\n\x1b[2J\x07\0"), "x\\nclose 1 ok\\n\\x1b[2J\\x07\\x00");
        assert_eq!(text("\u{9b}31m \u{7f} \u{202e}evil \u{2028}"), "\\x9b31m \\x7f \\u202eevil \\u2028");
        assert!(matches!(text("plain é € \\ path/x:1"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_format_character_is_escaped_as_python_escapes_it() {
        // Soft hyphen, Arabic number signs, Syriac abbreviation mark, Kaithi number sign,
        // musical formatting, tag characters, no-break and ideographic spaces.
        let hidden = "a\u{ad}\u{600}\u{605}\u{6dd}\u{70f}\u{110bd}\u{1d173}\u{e0001}\u{e0041}\u{a0}\u{3000}b";
        assert_eq!(
            text(hidden),
            "a\\xad\\u0600\\u0605\\u06dd\\u070f\\U000110bd\\U0001d173\\U000e0001\\U000e0041\\xa0\\u3000b"
        );
    }

    #[test]
    fn quoted_prefixes_are_cut_and_clean() {
        assert_eq!(quoted_prefix("abc", 200), "\"abc\"");
        assert_eq!(quoted_prefix(&"a".repeat(300), 5), "\"aaaaa\"...");
        assert!(!quoted_prefix("\u{202e}x", 10).contains('\u{202e}'));
    }
}
