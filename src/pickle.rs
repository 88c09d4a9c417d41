//! Python objects over a connection: `send` / `recv` through pickle (serde + serde-pickle).
//!
//! Rust values that implement `serde::Serialize` are written as pickles Python reads (protocol 3,
//! or 2 for Python 2 and the `processing` package); pickles of protocols 0-5 are read into any
//! `serde::Deserialize` type or into [`Value`], the dynamic "whatever Python sent" type.
//!
//! Decoding runs no code (unlike Python's `pickle.loads`). A pickle that refers to a Python object
//! with no Rust value (a class instance, `datetime`, a type such as `float`) is a
//! [`PickleError::UnsupportedGlobal`] naming that object, never a silent `None`; the connection
//! stays usable after any decode error because the whole message was already read.

use std::fmt::Write as _;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_pickle::{DeOptions, SerOptions};
pub use serde_pickle::{HashableValue, Value};

use crate::blocking::Connection;
use crate::error::Result;

/// A pickle could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The pickle names a Python object that has no Rust value.
    #[error("the pickle refers to the Python object {0}, which has no Rust value")]
    UnsupportedGlobal(String),
    /// The bytes are not a pickle this decoder understands, or do not fit the requested type.
    #[error("cannot decode the pickle: {0}")]
    Decode(#[source] serde_pickle::Error),
    /// The value cannot be pickled.
    #[error("cannot encode the value as a pickle: {0}")]
    Encode(#[source] serde_pickle::Error),
    /// The pickle would expand far beyond its size when decoded (memo references that the
    /// decoder copies: a "pickle bomb"). Refused before decoding.
    #[error("the pickle would expand beyond {limit} decoded nodes; refused")]
    TooLarge {
        /// The bound that was exceeded.
        limit: u64,
    },
    /// A set, or a dict's keys, hold a NaN or floats beside integers beyond 2^53: they have no
    /// consistent order, which the decoder needs to build them. Refused before decoding.
    #[error("the pickle has a NaN, or floats beside very large integers, in a set or among dict keys; refused")]
    Unordered,
    /// Writing supports protocols 2 and 3.
    #[error("pickle protocol {0} cannot be written (use 2 or 3)")]
    UnsupportedProtocol(u8),
}

fn ser_options(protocol: u8) -> Result<SerOptions, PickleError> {
    match protocol {
        2 => Ok(SerOptions::new().proto_v2()),
        3 => Ok(SerOptions::new()),
        p => Err(PickleError::UnsupportedProtocol(p)),
    }
}

/// Pickles `value` with `protocol` (2 or 3).
pub fn dumps<T: Serialize>(value: &T, protocol: u8) -> Result<Vec<u8>, PickleError> {
    serde_pickle::to_vec(value, ser_options(protocol)?).map_err(PickleError::Encode)
}

/// Pickles a dynamic [`Value`] with `protocol` (2 or 3).
pub fn dumps_value(value: &Value, protocol: u8) -> Result<Vec<u8>, PickleError> {
    serde_pickle::value_to_vec(value, ser_options(protocol)?).map_err(PickleError::Encode)
}

/// Unpickles `bytes` into `T`.
pub fn loads<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PickleError> {
    check_pickle(bytes)?;
    serde_pickle::from_slice(bytes, DeOptions::new()).map_err(|e| explain(e, bytes))
}

/// Unpickles `bytes` into a dynamic [`Value`].
pub fn loads_value(bytes: &[u8]) -> Result<Value, PickleError> {
    check_pickle(bytes)?;
    serde_pickle::value_from_slice(bytes, DeOptions::new()).map_err(|e| explain(e, bytes))
}

fn explain(e: serde_pickle::Error, bytes: &[u8]) -> PickleError {
    if let serde_pickle::Error::Syntax(serde_pickle::ErrorCode::UnresolvedGlobal) = e {
        let name = first_unsupported_global(bytes).unwrap_or_else(|| "(unknown)".into());
        return PickleError::UnsupportedGlobal(name);
    }
    PickleError::Decode(e)
}

impl Connection {
    /// Sends a Rust value as a pickle (Python's `send(obj)`), with this connection's protocol.
    pub fn send<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let bytes = dumps(value, self.pickle_protocol())?;
        self.send_bytes(&bytes)
    }

    /// Sends a dynamic [`Value`] as a pickle.
    pub fn send_value(&mut self, value: &Value) -> Result<()> {
        let bytes = dumps_value(value, self.pickle_protocol())?;
        self.send_bytes(&bytes)
    }

    /// Receives a pickle into a Rust type (Python's `recv()`).
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let bytes = self.recv_bytes()?;
        Ok(loads(&bytes)?)
    }

    /// Receives a pickle as a dynamic [`Value`].
    pub fn recv_value(&mut self) -> Result<Value> {
        let bytes = self.recv_bytes()?;
        Ok(loads_value(&bytes)?)
    }
}

/// The most a pickle may expand to when decoded, in the walk's units (one per decoded node plus
/// one per 16 bytes of strings and bytes, counted over everything alive at once: the stack and
/// the memo): 8 per byte of pickle, and at least 4 Mi units (about 160 MiB of decoded values).
/// Every node of a well-formed pickle costs at least one byte of it, so only the copies the
/// decoder makes at DUP and memo references can get near this.
pub fn expansion_limit(len: usize) -> u64 {
    (len as u64).saturating_mul(8).max(4 << 20)
}

/// What the walk knows of one item on the unpickler's stack.
#[derive(Clone, Default)]
struct Item {
    /// Bytes plus one per node, as the decoder will build it.
    weight: u64,
    /// Contains a NaN float.
    nan: bool,
    /// Contains a float.
    float: bool,
    /// Contains an integer beyond ±2^53 (which the decoder compares with floats only roughly).
    big: bool,
    /// For dicts and sets: the same three, over their keys or elements.
    keys: (bool, bool, bool),
    /// A global naming `set` or `frozenset`, which REDUCE then calls.
    set_constructor: bool,
    /// A short string literal, for STACK_GLOBAL's module and name.
    text: Option<Box<[u8]>>,
}

impl Item {
    fn leaf(weight: u64) -> Item {
        Item { weight, ..Item::default() }
    }

    /// This item with `other` inside it.
    fn absorb(&mut self, other: &Item) {
        self.weight = self.weight.saturating_add(other.weight);
        self.nan |= other.nan;
        self.float |= other.float;
        self.big |= other.big;
        self.set_constructor = false;
        self.text = None;
    }

    fn flags(&self) -> (bool, bool, bool) {
        (self.nan, self.float, self.big)
    }
}

/// Keys of a dict or elements of a set must have a total order for the decoder (it builds sorted
/// trees, and Rust's sort panics on an inconsistent order): a NaN, or floats beside integers
/// beyond 2^53, do not.
fn ordered(keys: (bool, bool, bool)) -> Result<(), PickleError> {
    let (nan, float, big) = keys;
    if nan || (float && big) { Err(PickleError::Unordered) } else { Ok(()) }
}

/// Checks a pickle before the decoder sees it, by walking its opcodes once with a model of the
/// stack:
///
/// * its decoded size must stay within [`expansion_limit`]: the decoder copies a memoised or
///   duplicated object at every reference to it (Python shares it), so a few hundred bytes of
///   references to references can ask for gigabytes;
/// * the keys of its dicts and the elements of its sets must be totally ordered (see `ordered`).
///
/// Anything the walk does not understand it leaves to the decoder, which reports it.
fn check_pickle(p: &[u8]) -> Result<(), PickleError> {
    let limit = expansion_limit(p.len());
    let mut stack: Vec<Item> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Item> = std::collections::HashMap::new();
    // Units alive at once: everything on the stack plus everything in the memo.
    let mut live: u64 = 0;
    let mut i = 0usize;
    let uint = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64);
    let line_len = |i: usize| p.get(i..).and_then(|s| s.iter().position(|&b| b == b'\n'));
    let is_set_constructor = |module: &[u8], name: &[u8]| {
        matches!(module, b"builtins" | b"__builtin__") && matches!(name, b"set" | b"frozenset")
    };
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            let s = match p.get(i..i.saturating_add(n)) {
                Some(s) => s,
                None => return Ok(()),
            };
            i += n;
            s
        }};
    }
    macro_rules! line {
        () => {{
            let Some(n) = line_len(i) else { return Ok(()) };
            let s = &p[i..i + n];
            i += n + 1;
            s
        }};
    }
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(item) => {
                    live = live.saturating_sub(item.weight);
                    item
                }
                None => return Ok(()),
            }
        };
    }
    // Everything above the last mark.
    macro_rules! pop_mark {
        () => {{
            let Some(m) = marks.pop() else { return Ok(()) };
            if m > stack.len() {
                return Ok(());
            }
            let items = stack.split_off(m);
            live = live.saturating_sub(items.iter().fold(0u64, |w, it| w.saturating_add(it.weight)));
            items
        }};
    }
    macro_rules! top {
        () => {
            match stack.last_mut() {
                Some(item) => item,
                None => return Ok(()),
            }
        };
    }
    let joined = |items: &[Item]| {
        let mut all = Item::leaf(1);
        for it in items {
            all.absorb(it);
        }
        all
    };
    let keys_of = |items: &[Item], step: usize| {
        items.iter().step_by(step).fold((false, false, false), |k, it| (k.0 | it.nan, k.1 | it.float, k.2 | it.big))
    };
    let or = |a: (bool, bool, bool), b: (bool, bool, bool)| (a.0 | b.0, a.1 | b.1, a.2 | b.2);
    let text_item =
        |s: &[u8]| Item { weight: 1 + s.len() as u64 / 16, text: (s.len() <= 32).then(|| s.into()), ..Item::default() };
    while i < p.len() {
        let op = p[i];
        i += 1;
        let pushed: Option<Item> = match op {
            b'(' => {
                marks.push(stack.len());
                None
            }
            b'.' => return Ok(()),
            b'0' => {
                pop!();
                None
            }
            b'1' => {
                drop(pop_mark!());
                None
            }
            b'2' => Some(stack.last().cloned().unwrap_or_else(|| Item::leaf(1))),
            b'F' => {
                let s = line!();
                let f = std::str::from_utf8(s).ok().and_then(|s| s.trim().parse::<f64>().ok());
                Some(Item { weight: 1, float: true, nan: f.is_none_or(f64::is_nan), ..Item::default() })
            }
            b'I' | b'L' => {
                let s = line!();
                let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
                Some(Item { weight: 1, big: digits > 15, ..Item::default() })
            }
            b'S' | b'V' => Some(text_item(line!())),
            b'P' => {
                line!();
                Some(Item::leaf(1))
            }
            b'c' => {
                let module = line!();
                let name = line!();
                Some(Item { weight: 1, set_constructor: is_set_constructor(module, name), ..Item::default() })
            }
            b'i' => {
                line!();
                line!();
                let items = pop_mark!();
                Some(joined(&items))
            }
            b'N' | 0x88 | 0x89 | b']' | b'}' | b')' | 0x8f | 0x97 | 0x98 => Some(Item::leaf(1)),
            b'Q' => {
                pop!();
                Some(Item::leaf(1))
            }
            b'J' | b'K' | b'M' | 0x82..=0x84 => {
                take!(match op {
                    b'J' | 0x84 => 4,
                    b'M' | 0x83 => 2,
                    _ => 1,
                });
                Some(Item::leaf(1))
            }
            b'G' => {
                let b = take!(8);
                let f = f64::from_be_bytes(b.try_into().unwrap_or_default());
                Some(Item { weight: 1, float: true, nan: f.is_nan(), ..Item::default() })
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    take!(1)[0] as usize
                } else {
                    usize::try_from(uint(take!(4))).unwrap_or(usize::MAX)
                };
                take!(n);
                Some(Item { weight: 1 + n as u64 / 16, big: n > 6, ..Item::default() })
            }
            b'U' | b'C' | 0x8c => {
                let n = take!(1)[0] as usize;
                Some(text_item(take!(n)))
            }
            b'T' | b'X' | b'B' => {
                let n = usize::try_from(uint(take!(4))).unwrap_or(usize::MAX);
                Some(text_item(take!(n)))
            }
            0x8d | 0x8e | 0x96 => {
                let n = usize::try_from(uint(take!(8))).unwrap_or(usize::MAX);
                Some(text_item(take!(n)))
            }
            0x80 => {
                take!(1);
                None
            }
            0x95 => {
                take!(8);
                None
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                let set_constructor = match (&module.text, &name.text) {
                    (Some(m), Some(n)) => is_set_constructor(m, n),
                    _ => false,
                };
                Some(Item { weight: 1, set_constructor, ..Item::default() })
            }
            b'l' | b't' | b'o' => {
                let items = pop_mark!();
                Some(joined(&items))
            }
            b'd' => {
                let items = pop_mark!();
                let keys = keys_of(&items, 2);
                ordered(keys)?;
                Some(Item { keys, ..joined(&items) })
            }
            0x91 => {
                let items = pop_mark!();
                let keys = keys_of(&items, 1);
                ordered(keys)?;
                Some(Item { keys, ..joined(&items) })
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Ok(());
                }
                let items = stack.split_off(stack.len() - n);
                live = live.saturating_sub(items.iter().fold(0u64, |w, it| w.saturating_add(it.weight)));
                Some(joined(&items))
            }
            b'a' | b'b' => {
                let x = pop!();
                top!().absorb(&x);
                live = live.saturating_add(x.weight);
                None
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                let top = top!();
                top.keys = or(top.keys, k.flags());
                ordered(top.keys)?;
                top.absorb(&k);
                top.absorb(&v);
                live = live.saturating_add(k.weight).saturating_add(v.weight);
                None
            }
            b'e' | b'u' | 0x90 => {
                let items = pop_mark!();
                let top = top!();
                match op {
                    b'u' => top.keys = or(top.keys, keys_of(&items, 2)),
                    0x90 => top.keys = or(top.keys, keys_of(&items, 1)),
                    _ => {}
                }
                ordered(top.keys)?;
                for it in &items {
                    top.absorb(it);
                    live = live.saturating_add(it.weight);
                }
                None
            }
            b'R' | 0x81 => {
                let args = pop!();
                let mut f = pop!();
                if f.set_constructor {
                    ordered(args.flags())?;
                }
                f.absorb(&args);
                Some(f)
            }
            0x92 => {
                let a = pop!();
                let b = pop!();
                let mut c = pop!();
                c.absorb(&a);
                c.absorb(&b);
                Some(c)
            }
            // The memo: a reference copies the whole object in the decoder.
            b'p' | b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'p' => String::from_utf8_lossy(line!()).trim().parse().unwrap_or(u64::MAX),
                    b'q' => uint(take!(1)),
                    b'r' => uint(take!(4)),
                    _ => memo.len() as u64,
                };
                let item = stack.last().cloned().unwrap_or_else(|| Item::leaf(1));
                live = live.saturating_add(item.weight);
                if let Some(old) = memo.insert(idx, item) {
                    live = live.saturating_sub(old.weight);
                }
                None
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => String::from_utf8_lossy(line!()).trim().parse().unwrap_or(u64::MAX),
                    b'h' => uint(take!(1)),
                    _ => uint(take!(4)),
                };
                Some(memo.get(&idx).cloned().unwrap_or_else(|| Item::leaf(1)))
            }
            _ => return Ok(()),
        };
        if let Some(item) = pushed {
            live = live.saturating_add(item.weight);
            stack.push(item);
        }
        if live > limit {
            return Err(PickleError::TooLarge { limit });
        }
    }
    Ok(())
}

/// The globals serde-pickle resolves itself.
fn is_supported_global(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("_codecs", "encode")
            | ("copy_reg" | "copyreg", "_reconstructor")
            | ("__builtin__" | "builtins", "set" | "frozenset" | "list" | "bytearray" | "int")
    )
}

/// Walks the opcodes of a pickle to name the first global (class, function, type) that
/// serde-pickle cannot resolve. Best effort, for error messages only.
fn first_unsupported_global(p: &[u8]) -> Option<String> {
    let mut i = 0usize;
    // Strings recently pushed, and the memo, to resolve STACK_GLOBAL's two arguments.
    let mut recent: Vec<Option<String>> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Option<String>> = std::collections::HashMap::new();
    let line = |i: &mut usize| -> Option<String> {
        let end = p.get(*i..)?.iter().position(|&b| b == b'\n')?;
        let s = String::from_utf8_lossy(&p[*i..*i + end]).into_owned();
        *i += end + 1;
        Some(s)
    };
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = p.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let uint = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64);
    while i < p.len() {
        let op = p[i];
        i += 1;
        let mut pushed: Option<Option<String>> = Some(None);
        match op {
            b'c' | b'i' => {
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                if !is_supported_global(&module, &name) {
                    return Some(format!("{module}.{name}"));
                }
            }
            0x93 => {
                let name = recent.pop().flatten();
                let module = recent.pop().flatten();
                if let (Some(m), Some(n)) = (module, name) {
                    if !is_supported_global(&m, &n) {
                        return Some(format!("{m}.{n}"));
                    }
                } else {
                    return Some("(a global whose name is computed)".into());
                }
            }
            0x8c | b'U' | b'C' => {
                let n = *take(&mut i, 1)?.first()? as usize;
                let s = take(&mut i, n)?;
                pushed = Some(Some(String::from_utf8_lossy(s).into_owned()));
            }
            b'X' | b'T' | b'B' | 0x8d | 0x8e | 0x96 => {
                let w = if matches!(op, 0x8d | 0x8e | 0x96) { 8 } else { 4 };
                let n = usize::try_from(uint(take(&mut i, w)?)).ok()?;
                let s = take(&mut i, n)?;
                pushed = Some(Some(String::from_utf8_lossy(s).into_owned()));
            }
            b'V' | b'S' => pushed = Some(Some(line(&mut i)?)),
            0x94 => {
                memo.insert(memo.len() as u64, recent.last().cloned().flatten());
                pushed = None;
            }
            b'q' | b'r' | b'p' => {
                let idx = match op {
                    b'q' => uint(take(&mut i, 1)?),
                    b'r' => uint(take(&mut i, 4)?),
                    _ => line(&mut i)?.trim().parse().ok()?,
                };
                memo.insert(idx, recent.last().cloned().flatten());
                pushed = None;
            }
            b'h' | b'j' | b'g' => {
                let idx = match op {
                    b'h' => uint(take(&mut i, 1)?),
                    b'j' => uint(take(&mut i, 4)?),
                    _ => line(&mut i)?.trim().parse().ok()?,
                };
                pushed = Some(memo.get(&idx).cloned().flatten());
            }
            b'F' | b'I' | b'L' | b'P' => {
                line(&mut i)?;
            }
            b'J' => i += 4,
            b'K' | 0x80 | 0x82 => i += 1,
            b'M' | 0x83 => i += 2,
            0x84 => i += 4,
            b'G' | 0x95 => i += 8,
            0x8a => {
                let n = *take(&mut i, 1)?.first()? as usize;
                i += n;
            }
            0x8b => {
                let n = usize::try_from(uint(take(&mut i, 4)?)).ok()?;
                i += n;
            }
            b'.' => return None,
            _ => {}
        }
        if let Some(v) = pushed {
            recent.push(v);
        }
    }
    None
}

/// A Python-like `repr` of a value, as Python's `print` would show it:
/// `[2.25, None, 'junk']`, `b'hello'`, `{'a': 1}`.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F64(f) => out.push_str(&float_repr(*f)),
        Value::Bytes(b) => bytes_repr(out, b),
        Value::String(s) => str_repr(out, s),
        Value::List(items) => seq(out, "[", items.iter(), "]"),
        Value::Tuple(items) if items.len() == 1 => {
            out.push('(');
            write_repr(out, &items[0]);
            out.push_str(",)");
        }
        Value::Tuple(items) => seq(out, "(", items.iter(), ")"),
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => seq_h(out, "{", items.iter(), "}"),
        Value::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
        Value::FrozenSet(items) => seq_h(out, "frozenset({", items.iter(), "})"),
        Value::Dict(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, &k.clone().into_value());
                out.push_str(": ");
                write_repr(out, v);
            }
            out.push('}');
        }
    }
}

fn seq<'a>(out: &mut String, open: &str, items: impl Iterator<Item = &'a Value>, close: &str) {
    out.push_str(open);
    for (i, v) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(out, v);
    }
    out.push_str(close);
}

fn seq_h<'a>(out: &mut String, open: &str, items: impl Iterator<Item = &'a HashableValue>, close: &str) {
    let values: Vec<Value> = items.map(|h| h.clone().into_value()).collect();
    seq(out, open, values.iter(), close);
}

/// Python's float repr: shortest round-trip digits, positional between 1e-4 and 1e16.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') { s } else { s + ".0" }
    } else {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
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

fn str_repr(out: &mut String, s: &str) {
    let q = quote_for(s.contains('\''), s.contains('"'));
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
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        let v = Value::List(vec![Value::F64(2.25), Value::None, Value::String("junk".into())]);
        assert_eq!(repr(&v), "[2.25, None, 'junk']");
        assert_eq!(repr(&Value::Bytes(b"hello".to_vec())), "b'hello'");
        assert_eq!(repr(&Value::Bytes(b"a'b\x00".to_vec())), "b\"a'b\\x00\"");
        assert_eq!(repr(&Value::Tuple(vec![Value::I64(1)])), "(1,)");
        assert_eq!(repr(&Value::F64(1.0)), "1.0");
        assert_eq!(repr(&Value::F64(1e16)), "1e+16");
        assert_eq!(repr(&Value::F64(1.5e-5)), "1.5e-05");
        assert_eq!(repr(&Value::F64(0.0001)), "0.0001");
        assert_eq!(repr(&Value::Set(Default::default())), "set()");
    }

    #[test]
    fn round_trip_in_both_protocols() {
        for proto in [2, 3] {
            let v = vec![(1i64, "x".to_string()), (2, "y".to_string())];
            let b = dumps(&v, proto).unwrap();
            assert_eq!(loads::<Vec<(i64, String)>>(&b).unwrap(), v);
        }
        assert!(matches!(dumps(&1, 4), Err(PickleError::UnsupportedProtocol(4))));
    }

    #[test]
    fn a_type_object_is_named_in_the_error() {
        // pickle.dumps([2.25, None, 'junk', float], protocol=4) from CPython 3.11
        let p = b"\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00]\x94(G@\x02\x00\x00\x00\x00\x00\x00N\x8c\x04junk\x94\x8c\x08builtins\x94\x8c\x05float\x94\x93\x94e.";
        match loads_value(p) {
            Err(PickleError::UnsupportedGlobal(name)) => assert_eq!(name, "builtins.float"),
            other => panic!("{other:?}"),
        }
        // pickle.dumps(datetime.date(2026, 11, 25), protocol=2): the GLOBAL opcode.
        let p = b"\x80\x02cdatetime\ndate\nq\x00c_codecs\nencode\nq\x01X\x05\x00\x00\x00\x07\xc3\xaa\x0b\x19q\x02X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05\x85q\x06Rq\x07.";
        match loads_value(p) {
            Err(PickleError::UnsupportedGlobal(name)) => assert_eq!(name, "datetime.date"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pickle_bomb_is_refused_before_decoding() {
        // 'a', then 40 times DUP and TUPLE2: t = (t, t); 2^40 nodes from 90 bytes (the decoder
        // copies at DUP where Python shares).
        let bomb = |rounds: u8| {
            let mut p = b"\x80\x02X\x01\x00\x00\x00a".to_vec();
            for _ in 0..rounds {
                p.extend_from_slice(b"2\x86");
            }
            p.push(b'.');
            p
        };
        let p = bomb(40);
        assert!(matches!(loads_value(&p), Err(PickleError::TooLarge { .. })));
        // The same shape, shallow, is fine: ((('a', 'a'), ('a', 'a')), ...).
        let r = loads_value(&bomb(3));
        assert!(r.is_ok(), "{r:?}");
        // The fuzzer's out-of-memory input: the wide form, many DUPs alive on the stack at once.
        let wide = include_bytes!("../fuzz/corpus/pickle/seed-oom-dup-tuples");
        assert!(matches!(loads_value(wide), Err(PickleError::TooLarge { .. })));
    }

    #[test]
    fn pickles_with_shared_references_from_python_pass_the_check() {
        // pickle.dumps([s, s, s]) for one 100-byte str s, protocol 4 (memo references).
        let s = "x".repeat(100);
        let v = vec![s.clone(), s.clone(), s];
        let p = dumps(&v, 3).unwrap();
        assert_eq!(loads::<Vec<String>>(&p).unwrap(), v);
    }

    #[test]
    fn unordered_set_elements_are_refused_instead_of_panicking() {
        // Found by the fuzzer: a frozenset with a NaN made the decoder's sort panic.
        let crash = include_bytes!("../fuzz/corpus/pickle/seed-crash-nan-frozenset");
        assert!(matches!(loads_value(crash), Err(PickleError::Unordered)));
        // pickle.dumps({float('nan'), 1.0}, protocol=4) and {1: 'a', 2**70: 'b', 0.5: 'c'}
        let nan_set = b"\x80\x04\x95\x17\x00\x00\x00\x00\x00\x00\x00\x8f\x94(G\x7f\xf8\x00\x00\x00\x00\x00\x00G?\xf0\x00\x00\x00\x00\x00\x00\x90.";
        assert!(matches!(loads_value(nan_set), Err(PickleError::Unordered)));
        // NaN as a value, floats as keys: fine.
        let ok = dumps(&std::collections::BTreeMap::from([("a", f64::NAN)]), 3).unwrap();
        assert!(loads_value(&ok).is_ok());
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for p in [&b""[..], b"\x80", b"\x80\x04\x95", b"garbage", b"\x80\x03X\xff\xff\xff\xff"] {
            assert!(loads_value(p).is_err());
        }
    }
}
