//! Python's `repr` of a [`Value`], exactly as CPython prints plain data.
//!
//! Why a module of its own: the printing rules (float digits, str and bytes quoting and escapes,
//! `set()`, `frozenset({...})`, `bytearray(b'..')`, one-element tuples) are many and must match
//! CPython byte for byte, for `mpconn listen` and for tests that compare with Python's output. It
//! walks with an explicit stack (no recursion on depth), and [`repr_limited`] stops at a length,
//! so a small pickle that shares one list a million times cannot make the printer allocate
//! gigabytes.
//!
//! Objects print as `module.name(args)`, with `<state=...>`, `<items=[...]>` and
//! `<dict_items={...}>` after it when the pickle gave them; `builtins.complex(re, im)` prints as
//! Python prints a complex (`(1+2j)`), `collections.OrderedDict` as Python 3.12+ prints it.

use std::fmt::Write as _;

use super::unprintable::UNPRINTABLE;
use super::value::{Dict, Object, ObjectKind, Set, Value};

/// Integers up to this many bits (about 4,200 decimal digits) print in decimal; longer ones in
/// hex (CPython's own repr refuses ints above 4,300 digits).
const BIGINT_DECIMAL_BITS: u64 = 14_000;

enum Frame<'a> {
    Seq { items: &'a [Value], pos: usize, close: &'static str, one_comma: bool },
    Dict { entries: &'a [(Value, Value)], pos: usize, close: &'static str },
    Text(&'static str),
    Val(&'a Value),
}

struct Printer<'a> {
    out: String,
    max: usize,
    frames: Vec<Frame<'a>>,
}

/// Python's `repr(value)`: `[2.25, None, 'junk']`, `b'hello'`, `{'a': 1}`. Unbounded: for a
/// value from an untrusted peer prefer [`repr_limited`] (shared sub-objects print at every
/// reference, as in Python).
pub fn repr(value: &Value) -> String {
    repr_limited(value, usize::MAX)
}

/// Python's `repr(value)`, cut after about `max_chars` bytes with `...` appended.
pub fn repr_limited(value: &Value, max_chars: usize) -> String {
    let mut p = Printer { out: String::new(), max: max_chars, frames: vec![Frame::Val(value)] };
    p.run();
    p.out
}

pub(crate) fn repr_limited_value(items: &[Value], max_chars: usize, open: &str, close: &'static str) -> String {
    let mut p = Printer {
        out: open.to_owned(),
        max: max_chars,
        frames: vec![Frame::Seq { items, pos: 0, close, one_comma: false }],
    };
    p.run();
    p.out
}

pub(crate) fn repr_dict_limited(d: &Dict, max_chars: usize) -> String {
    let mut p = Printer {
        out: "{".to_owned(),
        max: max_chars,
        frames: vec![Frame::Dict { entries: d.entries(), pos: 0, close: "}" }],
    };
    p.run();
    p.out
}

pub(crate) fn repr_set_limited(s: &Set, max_chars: usize) -> String {
    if s.is_empty() {
        return "set()".into();
    }
    let mut p = Printer {
        out: "{".to_owned(),
        max: max_chars,
        frames: vec![Frame::Seq { items: s.as_slice(), pos: 0, close: "}", one_comma: false }],
    };
    p.run();
    p.out
}

pub(crate) fn repr_object_limited(o: &Object, max_chars: usize) -> String {
    let mut p = Printer { out: String::new(), max: max_chars, frames: Vec::new() };
    p.object(o);
    p.run();
    p.out
}

impl<'a> Printer<'a> {
    /// Cuts the output at `max` with `...` appended, once it is longer; true if it did.
    fn cut(&mut self) -> bool {
        if self.out.len() <= self.max {
            return false;
        }
        let mut cut = self.max;
        while !self.out.is_char_boundary(cut) {
            cut -= 1;
        }
        self.out.truncate(cut);
        self.out.push_str("...");
        true
    }

    fn run(&mut self) {
        while let Some(f) = self.frames.last_mut() {
            if self.out.len() > self.max {
                self.cut();
                return;
            }
            let next: &'a Value = match f {
                Frame::Text(t) => {
                    let t = *t;
                    self.frames.pop();
                    self.out.push_str(t);
                    continue;
                }
                Frame::Val(v) => {
                    let v = *v;
                    self.frames.pop();
                    v
                }
                Frame::Seq { items, pos, close, one_comma } => {
                    if *pos == items.len() {
                        if *one_comma && items.len() == 1 {
                            self.out.push(',');
                        }
                        self.out.push_str(close);
                        self.frames.pop();
                        continue;
                    }
                    if *pos > 0 {
                        self.out.push_str(", ");
                    }
                    *pos += 1;
                    &items[*pos - 1]
                }
                Frame::Dict { entries, pos, close } => {
                    if *pos == entries.len() * 2 {
                        self.out.push_str(close);
                        self.frames.pop();
                        continue;
                    }
                    let (k, v) = &entries[*pos / 2];
                    *pos += 1;
                    if *pos % 2 == 1 {
                        if *pos > 1 {
                            self.out.push_str(", ");
                        }
                        k
                    } else {
                        self.out.push_str(": ");
                        v
                    }
                }
            };
            self.value(next);
        }
        // A single str or bytes (or a name) stops growing past the limit by itself; cut it here.
        self.cut();
    }

    fn seq(&mut self, open: &str, items: &'a [Value], close: &'static str, one_comma: bool) {
        self.out.push_str(open);
        self.frames.push(Frame::Seq { items, pos: 0, close, one_comma });
    }

    fn value(&mut self, v: &'a Value) {
        match v.resolved() {
            Value::None => self.out.push_str("None"),
            Value::Bool(true) => self.out.push_str("True"),
            Value::Bool(false) => self.out.push_str("False"),
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::BigInt(n) => {
                // Decimal conversion is quadratic; beyond CPython's 4300-digit limit (where its own
                // repr refuses) print the same number as a hex literal, in linear time.
                if n.bits() > BIGINT_DECIMAL_BITS {
                    let sign = if n.sign() == num_bigint::Sign::Minus { "-" } else { "" };
                    let _ = write!(self.out, "{sign}0x{:x}", n.magnitude());
                } else {
                    let _ = write!(self.out, "{n}");
                }
            }
            Value::Float(f) => float_repr(&mut self.out, *f),
            Value::Str(s) | Value::Py2Str(s) => str_repr(&mut self.out, s, self.max),
            Value::Bytes(b) => bytes_repr(&mut self.out, b, false, self.max),
            Value::ByteArray(b) => {
                self.out.push_str("bytearray(");
                bytes_repr(&mut self.out, b, true, self.max);
                self.out.push(')');
            }
            Value::List(l) => self.seq("[", l, "]", false),
            Value::Tuple(t) => self.seq("(", t, ")", true),
            Value::Dict(d) => {
                self.out.push('{');
                self.frames.push(Frame::Dict { entries: d.entries(), pos: 0, close: "}" });
            }
            Value::Set(s) if s.is_empty() => self.out.push_str("set()"),
            Value::Set(s) => self.seq("{", s.as_slice(), "}", false),
            Value::FrozenSet(s) if s.is_empty() => self.out.push_str("frozenset()"),
            Value::FrozenSet(s) => self.seq("frozenset({", s.as_slice(), "})", false),
            Value::Global(g) => {
                name_repr(&mut self.out, &g.module, self.max);
                self.out.push('.');
                name_repr(&mut self.out, &g.name, self.max);
            }
            Value::Object(o) => self.object(o),
            Value::Shared(_) => {}
        }
    }

    fn object(&mut self, o: &'a Object) {
        if let Some(c) = complex_repr(o) {
            self.out.push_str(&c);
            return;
        }
        if is_plain_ordered_dict(o) {
            // As CPython 3.12+ prints it: OrderedDict() or OrderedDict({'a': 1}).
            self.out.push_str("OrderedDict(");
            if o.dict_items.is_empty() {
                self.out.push(')');
            } else {
                self.out.push('{');
                self.frames.push(Frame::Text(")"));
                self.frames.push(Frame::Dict { entries: &o.dict_items, pos: 0, close: "}" });
            }
            return;
        }
        name_repr(&mut self.out, &o.class.module, self.max);
        self.out.push('.');
        name_repr(&mut self.out, &o.class.name, self.max);
        self.out.push('(');
        // Frames run last-pushed first.
        if !o.dict_items.is_empty() {
            self.frames.push(Frame::Text("}>"));
            self.frames.push(Frame::Dict { entries: &o.dict_items, pos: 0, close: "" });
            self.frames.push(Frame::Text("<dict_items={"));
        }
        if !o.list_items.is_empty() {
            self.frames.push(Frame::Text("]>"));
            self.frames.push(Frame::Seq { items: &o.list_items, pos: 0, close: "", one_comma: false });
            self.frames.push(Frame::Text("<items=["));
        }
        if let Some(state) = &o.state {
            self.frames.push(Frame::Text(">"));
            self.frames.push(Frame::Val(state));
            self.frames.push(Frame::Text("<state="));
        }
        self.frames.push(Frame::Text(")"));
        if let Some(kw) = &o.kwargs {
            self.frames.push(Frame::Val(kw));
            self.frames.push(Frame::Text(if o.args().is_empty() { "**" } else { ", **" }));
        }
        match o.args.resolved() {
            Value::Tuple(t) => self.frames.push(Frame::Seq { items: t, pos: 0, close: "", one_comma: false }),
            other => {
                self.frames.push(Frame::Val(other));
                self.frames.push(Frame::Text("*"));
            }
        }
    }
}

/// A `collections.OrderedDict` as CPython pickles one: no arguments, no state, its items set.
fn is_plain_ordered_dict(o: &Object) -> bool {
    o.class.module == "collections"
        && o.class.name == "OrderedDict"
        && o.args().is_empty()
        && o.state.is_none()
        && o.kwargs.is_none()
        && o.list_items.is_empty()
}

/// `builtins.complex(re, im)` as Python prints the complex number.
fn complex_repr(o: &Object) -> Option<String> {
    if o.class.module != "builtins"
        || o.class.name != "complex"
        || o.kind != ObjectKind::Reduce
        || o.state.is_some()
        || o.kwargs.is_some()
    {
        return None;
    }
    let [re, im] = o.args() else { return None };
    let (re, im) = (re.as_f64()?, im.as_f64()?);
    let part = |f: f64| {
        let mut s = String::new();
        float_repr(&mut s, f);
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    };
    if re == 0.0 && re.is_sign_positive() {
        return Some(format!("{}j", part(im)));
    }
    let imag = part(im);
    let sign = if imag.starts_with('-') { "" } else { "+" };
    Some(format!("({}{sign}{imag}j)", part(re)))
}

/// Python's float repr: shortest round-trip digits, positional from 1e-4 to below 1e16.
pub(crate) fn float_repr(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push_str("0.0");
        return;
    }
    let (digits, exp) = shortest_digits(f.abs());
    // Python's repr: positional from 1e-4 up to 1e16, scientific outside.
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
    }
}

/// The shortest digits that read back as `a` (> 0, finite) and the decimal exponent of the
/// first one (`a = d.ddd × 10^exp`), as Python's `repr` chooses them: where two candidates of
/// that length lie exactly as far from `a`, the even last digit wins (CPython's dtoa rounds half
/// to even; Rust's shortest formatting may pick the odd one, e.g. 1e15 + 0.25).
fn shortest_digits(a: f64) -> (String, i32) {
    let (digits, exp) = split_exp(&format!("{a:e}"));
    let n = digits.len();
    let last = digits.as_bytes()[n - 1];
    if last % 2 == 1 {
        // A double has at most 767 significant decimal digits: 800 is its exact expansion.
        let (exact, exact_exp) = split_exp(&format!("{a:.800e}"));
        if exact_exp == exp {
            for alt in [last - 1, last + 1] {
                if alt > b'9' {
                    continue;
                }
                let mut mid = digits[..n - 1].to_string();
                mid.push(last.min(alt) as char);
                mid.push('5');
                let tie = exact.starts_with(&mid) && exact[mid.len()..].bytes().all(|d| d == b'0');
                if tie {
                    let mut candidate = digits[..n - 1].to_string();
                    candidate.push(alt as char);
                    let back: Option<f64> = format!("0.{candidate}e{}", exp + 1).parse().ok();
                    if back == Some(a) {
                        return (candidate, exp);
                    }
                }
            }
        }
    }
    (digits, exp)
}

/// `d.ddde±x` (Rust's `{:e}`) as its digits without the point, and the exponent.
fn split_exp(s: &str) -> (String, i32) {
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    (mantissa.replace('.', ""), exp.parse().unwrap_or(0))
}

fn quote_for(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double { '"' } else { '\'' }
}

/// A bytes literal as Python writes it. `bytearray`'s repr (CPython's `bytearray_repr`) escapes
/// a single quote even inside double quotes: `bytearray(b"\'")`. Stops once `out` is longer
/// than `limit` (the printer then cuts it and appends `...`), so a huge value costs no more
/// than the limit.
fn bytes_repr(out: &mut String, b: &[u8], bytearray: bool, limit: usize) {
    let q = quote_for(b.contains(&b'\''), b.contains(&b'"'));
    out.push('b');
    out.push(q);
    for &c in b {
        if out.len() > limit {
            return;
        }
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c as char == q || (bytearray && c == b'\'') => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(q);
}

/// Python's `str.isprintable` for one character: false for the categories Python escapes in a
/// str repr (Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but space), from a table generated by CPython 3.13
/// itself. A character it rejects is one that must not reach a terminal raw.
///
/// ```
/// use mpconn::pickle::is_printable;
/// assert!(is_printable('é') && is_printable(' '));
/// assert!(!is_printable('\n') && !is_printable('\u{202e}') && !is_printable('\u{e0041}'));
/// ```
pub fn is_printable(c: char) -> bool {
    let u = c as u32;
    UNPRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < u {
                std::cmp::Ordering::Less
            } else if lo > u {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

/// A module or class name. Python's are identifiers joined by dots, so they print as they are;
/// a name no Python could have made (a peer's pickle can hold any text) is escaped as inside a
/// str repr, without quotes: a backslash, a control character (`\n`, `\x1b`, `\x00`) or any
/// other character Python would escape. So a repr never carries a control byte from the peer:
/// `mpconn listen` prints one line per message, and a name cannot forge another line or send
/// the terminal an escape sequence.
fn name_repr(out: &mut String, s: &str, limit: usize) {
    for c in s.chars() {
        if out.len() > limit {
            return;
        }
        push_escaped(out, c);
    }
}

/// One character of a str's repr (without its quotes): as Python escapes it.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        ' '..='~' => out.push(c),
        c if is_printable(c) => out.push(c),
        c => {
            let u = c as u32;
            let _ = if u < 0x100 {
                write!(out, "\\x{u:02x}")
            } else if u < 0x10000 {
                write!(out, "\\u{u:04x}")
            } else {
                write!(out, "\\U{u:08x}")
            };
        }
    }
}

/// A str literal as Python writes it; stops once `out` is longer than `limit` (as `bytes_repr`).
fn str_repr(out: &mut String, s: &str, limit: usize) {
    let q = quote_for(s.contains('\''), s.contains('"'));
    out.reserve(s.len().min(limit.saturating_sub(out.len())) + 2);
    out.push(q);
    for c in s.chars() {
        if out.len() > limit {
            return;
        }
        if c == q {
            out.push('\\');
            out.push(q);
        } else {
            push_escaped(out, c);
        }
    }
    out.push(q);
}

#[cfg(test)]
mod name_tests {
    use super::super::value::{Global, Value};
    use super::{repr, repr_limited};

    #[test]
    fn a_single_huge_str_bytes_or_name_is_cut_at_the_limit() {
        let limit = 1000;
        for v in [
            Value::Bytes(vec![0; 100_000]),
            Value::ByteArray(vec![b'x'; 100_000]),
            Value::Str("\u{1}".repeat(100_000).as_str().into()),
            Value::Global(Box::new(Global::new("m", "\n".repeat(100_000)))),
        ] {
            let r = repr_limited(&v, limit);
            assert!(r.len() <= limit + 3 && r.ends_with("..."), "{}: {}", r.len(), &r[..20]);
            assert!(repr(&v).starts_with(&r[..limit]), "the cut repr is a prefix of the whole");
        }
    }

    #[test]
    fn impossible_names_print_escaped_and_never_carry_a_control_byte() {
        let g = Value::Global(Box::new(Global::new("os\u{7}", "x\nclose 1 ok\n\x1b[2J\0\\\u{202e}\u{9b}")));
        let r = repr(&g);
        assert_eq!(r, "os\\x07.x\\nclose 1 ok\\n\\x1b[2J\\x00\\\\\\u202e\\x9b");
        assert!(!r.chars().any(|c| c.is_control()), "{r:?}");
        // Real names are untouched, non-ASCII identifiers included.
        assert_eq!(
            repr(&Value::Global(Box::new(Global::new("collections.abc", "Mapping")))),
            "collections.abc.Mapping"
        );
        assert_eq!(repr(&Value::Global(Box::new(Global::new("modé", "Classé")))), "modé.Classé");
    }
}

#[cfg(test)]
mod float_tests {
    use super::float_repr;

    #[test]
    fn floats_print_as_cpython_3_13_prints_them() {
        // (bits, repr(x)) from CPython 3.13, ties to even included (1e15 + 0.25, 1e15 + 0.75).
        let cases = [
            (0x430c6bf526340002_u64, "1000000000000000.2"),
            (0x430c6bf526340006, "1000000000000000.8"),
            (0x3fb999999999999a, "0.1"),
            (0x4341c37937e08000, "1e+16"),
            (0x3eef75104d551d69, "1.5e-05"),
            (0x437b69b4ba630f35, "1.2345678901234568e+17"),
            (0x8000000000000000, "-0.0"),
            (0x0000000000000001, "5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0x3f1a36e2eb1c432d, "0.0001"),
            (0x3ee4f8b588e368f1, "1e-05"),
            (0x4004000000000000, "2.5"),
            (0x4480f0cf064dd592, "1e+22"),
            (0x4340000000000000, "9007199254740992.0"),
            (0x3fd3333333333333, "0.3"),
            (0x3fe5555555555555, "0.6666666666666666"),
            (0x4011666666666666, "4.35"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x3f0a36e2eb1c432d, "5e-05"),
        ];
        for (bits, want) in cases {
            let mut got = String::new();
            float_repr(&mut got, f64::from_bits(bits));
            assert_eq!(got, want, "{bits:#x}");
        }
    }
}
