//! `send`'s messages may be negative numbers and expressions (`--pickle -1`, `-1.5`, `-2**100`).
//! clap takes a plain negative number as a value (`allow_negative_numbers`), but `-2**100` looks
//! to it like the short flags `-2`, `-*`…, a usage error. No option of `mpconn` starts with `-`
//! and a digit, a dot or a parenthesis, so such a word can only be a message: before clap sees the arguments,
//! [`mark`] prefixes each with a NUL (which no real argument can contain), making it an ordinary
//! value, and [`unmark`] strips the prefix from the parsed messages.

use std::ffi::OsString;

const MARK: char = '\0';

/// Whether `word` is a negative value that clap would misread as flags.
fn needs_mark(word: &str) -> bool {
    // clap takes `-1`, `-1.5`, `-1e5` itself (but not `-.5`).
    let mut chars = word.chars();
    chars.next() == Some('-')
        && match chars.next() {
            Some('.' | '(') => true,
            Some(c) => c.is_ascii_digit() && word.parse::<f64>().is_err(),
            None => false,
        }
}

/// The arguments with every word after `send` (and before a `--`) that starts like a negative
/// number but is not one marked as a value.
pub fn mark(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut in_send = false;
    let mut done = false;
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 || done {
                return arg;
            }
            match arg.to_str() {
                Some("--") => {
                    done = true;
                    arg
                }
                Some("send") if !in_send => {
                    in_send = true;
                    arg
                }
                Some(word) if in_send && needs_mark(word) => OsString::from(format!("{MARK}{word}")),
                _ => arg,
            }
        })
        .collect()
}

/// A parsed value without the mark.
pub fn unmark(value: String) -> String {
    match value.strip_prefix(MARK) {
        Some(rest) => rest.to_string(),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(args: &[&str]) -> Vec<String> {
        mark(args.iter().map(OsString::from)).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn expressions_after_send_are_marked_numbers_and_options_are_not() {
        assert_eq!(
            marked(&["mpconn", "send", "a", "--pickle", "-2**100", "-1", "-1.5", "-v", "--recv", "1", "-(1)"]),
            ["mpconn", "send", "a", "--pickle", "\0-2**100", "-1", "-1.5", "-v", "--recv", "1", "\0-(1)"]
        );
        assert_eq!(marked(&["mpconn", "send", "a", "-.5j"]), ["mpconn", "send", "a", "\0-.5j"]);
    }

    #[test]
    fn only_send_and_only_before_a_double_dash() {
        assert_eq!(marked(&["mpconn", "listen", "-2**1"]), ["mpconn", "listen", "-2**1"]);
        assert_eq!(marked(&["mpconn", "send", "a", "--", "-2**1"]), ["mpconn", "send", "a", "--", "-2**1"]);
        assert_eq!(marked(&["-2**1", "send"]), ["-2**1", "send"]);
    }

    #[test]
    fn unmark_restores_the_word() {
        assert_eq!(unmark("\0-2**100".into()), "-2**100");
        assert_eq!(unmark("-1".into()), "-1");
        assert_eq!(unmark("x".into()), "x");
    }
}
