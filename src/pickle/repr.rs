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
//! Python prints a complex (`(1+2j)`).

use std::fmt::Write as _;

use super::value::{Dict, Object, ObjectKind, Set, Value};

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
    fn run(&mut self) {
        while let Some(f) = self.frames.last_mut() {
            if self.out.len() > self.max {
                let mut cut = self.max;
                while !self.out.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.out.truncate(cut);
                self.out.push_str("...");
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
                let _ = write!(self.out, "{n}");
            }
            Value::Float(f) => float_repr(&mut self.out, *f),
            Value::Str(s) => str_repr(&mut self.out, s),
            Value::Bytes(b) => bytes_repr(&mut self.out, b),
            Value::ByteArray(b) => {
                self.out.push_str("bytearray(");
                bytes_repr(&mut self.out, b);
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
                let _ = write!(self.out, "{}.{}", g.module, g.name);
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
        let _ = write!(self.out, "{}.{}(", o.class.module, o.class.name);
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
    let a = f.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let start = out.len();
        let _ = write!(out, "{f}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
    } else {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
    }
}

fn quote_for(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double { '"' } else { '\'' }
}

fn bytes_repr(out: &mut String, b: &[u8]) {
    let q = quote_for(b.contains(&b'\''), b.contains(&b'"'));
    out.push('b');
    out.push(q);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c as char == q => {
                out.push('\\');
                out.push(q);
            }
            0x20..=0x7e => out.push(c as char),
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(q);
}

/// Python's `str.isprintable` for one character, from the Unicode categories Python treats as
/// unprintable (Cc, Cf, Zl, Zp, Zs but space, Co, Cs); unassigned code points (Cn) are not
/// known here and print as themselves.
fn printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000
        | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

fn str_repr(out: &mut String, s: &str) {
    let q = quote_for(s.contains('\''), s.contains('"'));
    out.reserve(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(q);
            }
            ' '..='~' => out.push(c),
            c if printable(c) => out.push(c),
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
    out.push(q);
}
