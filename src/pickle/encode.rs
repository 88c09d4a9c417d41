//! The pickler: protocols 2 to 5, written as CPython's `_pickle.c` writes them.
//!
//! Why it is built this way: it walks the value with an explicit stack of frames (no recursion
//! on depth); lists, dicts and sets go out in batches of 1000 as CPython's; every `str` is
//! memoised the first time and referenced by content afterwards (CPython memoises every str by
//! identity, so the output is never larger than CPython's), and [`Value::Shared`] by pointer
//! identity, so sharing survives a round trip. At protocol 2, `bytes`, `bytearray`, `set` and
//! `frozenset` are written exactly as Python 3 writes them (`_codecs.encode` / `__builtin__`
//! `REDUCE`), which Python 2.7 reads, and a Python 2 `str` ([`Value::Py2Str`]) as Python 2 wrote
//! it (`SHORT_BINSTRING` / BINSTRING); module names are mapped back to Python 2's at protocol 2,
//! as CPython's `fix_imports`. No FRAME opcode: it only adds bytes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use num_bigint::BigInt;

use super::PickleError;
use super::key::FastState;
use super::opcodes as op;
use super::value::{Global, Object, ObjectKind, Value};

const BATCH: usize = 1000;

enum Frame<'a> {
    /// Items of a list (or an object's `list_items`), in APPEND(S) batches.
    List { items: &'a [Value], pos: usize },
    /// Entries of a dict (or an object's `dict_items`), in SETITEM(S) batches; `pos` counts
    /// keys and values.
    Dict { entries: &'a [(Value, Value)], pos: usize },
    /// Elements of a set, in MARK ... ADDITEMS batches.
    Set { items: &'a [Value], pos: usize },
    /// Values written one after the other.
    Items { items: &'a [Value], pos: usize },
    /// One value.
    Val(&'a Value),
    /// Bytes to write.
    Bytes(&'static [u8]),
    /// Memoise the shared value just written.
    Memo(*const Value),
}

struct Enc<'a> {
    out: Vec<u8>,
    proto: u8,
    memo_len: u32,
    /// (hash, str, written as a Python 2 byte string, memo id): the hash is kept so growing the
    /// table never reads the strings again (they are scattered in memory; re-reading them was
    /// most of the memo's cost). A `str` and a Python 2 `str` of the same text are two entries:
    /// a reference to one must not stand for the other.
    strs: hashbrown::HashTable<(u64, &'a str, bool, u32)>,
    hasher: FastState,
    globals: HashMap<(&'a str, &'a str), u32, FastState>,
    shared: HashMap<*const Value, u32, FastState>,
}

type R<T> = Result<T, PickleError>;

pub(crate) fn encode(v: &Value, proto: u8) -> R<Vec<u8>> {
    if !(2..=5).contains(&proto) {
        return Err(PickleError::UnsupportedProtocol(proto));
    }
    let mut e = Enc {
        out: Vec::with_capacity(256),
        proto,
        memo_len: 0,
        strs: hashbrown::HashTable::new(),
        hasher: FastState::new(),
        globals: HashMap::with_hasher(FastState::new()),
        shared: HashMap::with_hasher(FastState::new()),
    };
    e.out.extend_from_slice(&[op::PROTO, proto]);
    let mut frames: Vec<Frame<'_>> = Vec::new();
    e.value(v, &mut frames)?;
    e.run(&mut frames)?;
    e.out.push(op::STOP);
    Ok(e.out)
}

/// Python 2's name of a Python 3 global (CPython's `REVERSE_NAME_MAPPING`, the common part).
pub(super) fn py2_name<'a>(module: &'a str, name: &str) -> &'a str {
    match module {
        "builtins" if is_py2_exception(name) => "exceptions",
        "builtins" => "__builtin__",
        "copyreg" => "copy_reg",
        "queue" => "Queue",
        _ => module,
    }
}

fn is_py2_exception(name: &str) -> bool {
    matches!(
        name,
        "ArithmeticError"
            | "AssertionError"
            | "AttributeError"
            | "BaseException"
            | "BufferError"
            | "BytesWarning"
            | "DeprecationWarning"
            | "EOFError"
            | "EnvironmentError"
            | "Exception"
            | "FloatingPointError"
            | "FutureWarning"
            | "GeneratorExit"
            | "IOError"
            | "ImportError"
            | "ImportWarning"
            | "IndentationError"
            | "IndexError"
            | "KeyError"
            | "KeyboardInterrupt"
            | "LookupError"
            | "MemoryError"
            | "NameError"
            | "NotImplementedError"
            | "OSError"
            | "OverflowError"
            | "PendingDeprecationWarning"
            | "ReferenceError"
            | "RuntimeError"
            | "RuntimeWarning"
            | "StopIteration"
            | "SyntaxError"
            | "SyntaxWarning"
            | "SystemError"
            | "SystemExit"
            | "TabError"
            | "TypeError"
            | "UnboundLocalError"
            | "UnicodeDecodeError"
            | "UnicodeEncodeError"
            | "UnicodeError"
            | "UnicodeTranslateError"
            | "UnicodeWarning"
            | "UserWarning"
            | "ValueError"
            | "Warning"
            | "ZeroDivisionError"
    )
}

/// How many of the little-endian two's-complement bytes `b` a LONG1 needs (at least one): the
/// trailing bytes that only repeat the sign are dropped.
pub(super) fn minimal_len(b: &[u8]) -> usize {
    let mut n = b.len();
    while n > 1 {
        let (last, prev) = (b[n - 1], b[n - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    n
}

/// An int as CPython writes it at protocol 2+: BININT1, BININT2, BININT or LONG1.
#[inline]
pub(super) fn write_int(out: &mut Vec<u8>, n: i64) {
    // One `extend` per opcode with its operand: one capacity check, not two.
    if (0..=0xff).contains(&n) {
        out.extend_from_slice(&[op::BININT1, n as u8]);
    } else if (0..=0xffff).contains(&n) {
        let [a, b] = (n as u16).to_le_bytes();
        out.extend_from_slice(&[op::BININT2, a, b]);
    } else if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&n) {
        let [a, b, c, d] = (n as i32).to_le_bytes();
        out.extend_from_slice(&[op::BININT, a, b, c, d]);
    } else {
        write_long1(out, n);
    }
}

/// An int beyond 32 bits (rare): LONG1 of its minimal bytes; out of line, so that the common
/// cases above stay small enough to inline.
#[cold]
#[inline(never)]
fn write_long1(out: &mut Vec<u8>, n: i64) {
    let b = n.to_le_bytes();
    let len = minimal_len(&b);
    out.extend_from_slice(&[op::LONG1, len as u8]);
    out.extend_from_slice(&b[..len]);
}

/// The opcode and length of a `str` of `n` bytes: `SHORT_BINUNICODE` (protocol 4+), BINUNICODE
/// or BINUNICODE8 (protocol 4+).
#[inline(always)]
pub(super) fn write_str_header(out: &mut Vec<u8>, proto: u8, n: usize) -> Result<(), PickleError> {
    if proto >= 4 && n < 256 {
        out.extend_from_slice(&[op::SHORT_BINUNICODE, n as u8]);
    } else if let Ok(n) = u32::try_from(n) {
        out.push(op::BINUNICODE);
        out.extend_from_slice(&n.to_le_bytes());
    } else if proto >= 4 {
        out.push(op::BINUNICODE8);
        out.extend_from_slice(&(n as u64).to_le_bytes());
    } else {
        return Err(PickleError::Serde("a str over 4 GiB needs protocol 4".into()));
    }
    Ok(())
}

/// Bytes at protocol 3+: `SHORT_BINBYTES`, BINBYTES or BINBYTES8 (protocol 4+).
#[inline]
pub(super) fn write_bytes3(out: &mut Vec<u8>, proto: u8, b: &[u8]) -> Result<(), PickleError> {
    let n = b.len();
    if n < 256 {
        out.extend_from_slice(&[op::SHORT_BINBYTES, n as u8]);
    } else if let Ok(n) = u32::try_from(n) {
        out.push(op::BINBYTES);
        out.extend_from_slice(&n.to_le_bytes());
    } else if proto >= 4 {
        out.push(op::BINBYTES8);
        out.extend_from_slice(&(n as u64).to_le_bytes());
    } else {
        return Err(PickleError::Serde("bytes over 4 GiB need protocol 4".into()));
    }
    out.extend_from_slice(b);
    Ok(())
}

/// Stores the value on top of the stack as memo entry `id` (the next one).
#[inline]
pub(super) fn write_put(out: &mut Vec<u8>, proto: u8, id: u32) {
    if proto >= 4 {
        out.push(op::MEMOIZE);
    } else if id < 256 {
        out.extend_from_slice(&[op::BINPUT, id as u8]);
    } else {
        out.push(op::LONG_BINPUT);
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Pushes memo entry `id`.
#[inline(always)]
pub(super) fn write_get(out: &mut Vec<u8>, id: u32) {
    if id < 256 {
        out.extend_from_slice(&[op::BINGET, id as u8]);
    } else {
        let [a, b, c, d] = id.to_le_bytes();
        out.extend_from_slice(&[op::LONG_BINGET, a, b, c, d]);
    }
}

impl<'a> Enc<'a> {
    fn put(&mut self) -> u32 {
        let id = self.memo_len;
        self.memo_len += 1;
        write_put(&mut self.out, self.proto, id);
        id
    }

    fn get(&mut self, id: u32) {
        write_get(&mut self.out, id);
    }

    fn int(&mut self, n: i64) {
        write_int(&mut self.out, n);
    }

    fn bigint(&mut self, n: &BigInt) {
        if let Ok(i) = i64::try_from(n) {
            return self.int(i);
        }
        let b = n.to_signed_bytes_le();
        if b.len() < 256 {
            self.out.extend_from_slice(&[op::LONG1, b.len() as u8]);
        } else {
            self.out.push(op::LONG4);
            self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(&b);
    }

    fn str(&mut self, s: &'a str) -> R<()> {
        self.memo_str(s, false)
    }

    /// A str, memoised: written the first time (as a Python 2 byte string when `py2`), fetched
    /// from the memo afterwards.
    fn memo_str(&mut self, s: &'a str, py2: bool) -> R<()> {
        let h = self.hasher.hash_one(s.as_bytes());
        match self.strs.entry(h, |&(hh, x, p, _)| hh == h && p == py2 && x == s, |&(h, _, _, _)| h) {
            hashbrown::hash_table::Entry::Occupied(e) => {
                let id = e.get().3;
                self.get(id);
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let id = self.memo_len;
                e.insert((h, s, py2, id));
                if py2 {
                    self.raw_py2_str(s.as_bytes());
                } else {
                    self.raw_str(s)?;
                }
                self.put();
            }
        }
        Ok(())
    }

    /// A [`Value::Py2Str`]: at protocol 2, what a Python 2 peer reads, the byte string Python 2
    /// wrote (and Python 3 reads as a `str`, as it read the original); at protocols 3-5 the
    /// `str` CPython 3 made of it. Text beyond ASCII (only a hand-built value holds it) is a
    /// `str` everywhere: as a byte string, Python 3 could not read it; so is text of 2 GiB or
    /// more, which BINSTRING's signed 32-bit length cannot hold.
    fn py2_str(&mut self, s: &'a str) -> R<()> {
        let py2 = self.proto == 2 && s.is_ascii() && i32::try_from(s.len()).is_ok();
        self.memo_str(s, py2)
    }

    /// `SHORT_BINSTRING` or BINSTRING, as Python 2.7 writes a `str` at protocols 1 and 2.
    fn raw_py2_str(&mut self, b: &[u8]) {
        let n = b.len();
        if n < 256 {
            self.out.extend_from_slice(&[op::SHORT_BINSTRING, n as u8]);
        } else {
            // py2_str sends text beyond i32::MAX bytes elsewhere.
            self.out.push(op::BINSTRING);
            self.out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        self.out.extend_from_slice(b);
    }

    fn raw_str(&mut self, s: &str) -> R<()> {
        write_str_header(&mut self.out, self.proto, s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// A global reference, memoised by name.
    fn global(&mut self, module: &'a str, name: &'a str) -> R<()> {
        if let Some(&id) = self.globals.get(&(module, name)) {
            self.get(id);
            return Ok(());
        }
        if self.proto >= 4 {
            self.str(module)?;
            self.str(name)?;
            self.out.push(op::STACK_GLOBAL);
        } else {
            if module.contains('\n') || name.contains('\n') {
                return Err(PickleError::Serde(format!(
                    "the global {module:?}.{name:?} has a newline: it cannot be written below protocol 4"
                )));
            }
            let m = if self.proto < 3 { py2_name(module, name) } else { module };
            self.out.push(op::GLOBAL);
            self.out.extend_from_slice(m.as_bytes());
            self.out.push(b'\n');
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'\n');
        }
        let id = self.put();
        self.globals.insert((module, name), id);
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> R<()> {
        let n = b.len();
        if self.proto < 3 {
            if n == 0 {
                self.global("builtins", "bytes")?;
                self.out.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
            } else {
                self.global("_codecs", "encode")?;
                let text: String = b.iter().map(|&c| c as char).collect();
                self.raw_str(&text)?;
                self.str("latin1")?;
                self.out.extend_from_slice(&[op::TUPLE2, op::REDUCE]);
            }
            return Ok(());
        }
        write_bytes3(&mut self.out, self.proto, b)
    }

    /// Writes `v`, or starts it and pushes the frames that finish it.
    fn value(&mut self, v: &'a Value, frames: &mut Vec<Frame<'a>>) -> R<()> {
        match v {
            Value::None => self.out.push(op::NONE),
            Value::Bool(true) => self.out.push(op::NEWTRUE),
            Value::Bool(false) => self.out.push(op::NEWFALSE),
            Value::Int(n) => self.int(*n),
            Value::BigInt(n) => self.bigint(n),
            Value::Float(f) => {
                let [a, b, c, d, e, g, h, i] = f.to_be_bytes();
                self.out.extend_from_slice(&[op::BINFLOAT, a, b, c, d, e, g, h, i]);
            }
            Value::Str(s) => self.str(s)?,
            Value::Py2Str(s) => self.py2_str(s)?,
            Value::Bytes(b) => self.bytes(b)?,
            Value::ByteArray(b) => {
                if self.proto >= 5 {
                    self.out.push(op::BYTEARRAY8);
                    self.out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                    self.out.extend_from_slice(b);
                } else if b.is_empty() {
                    self.global("builtins", "bytearray")?;
                    self.out.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
                } else {
                    self.global("builtins", "bytearray")?;
                    self.bytes(b)?;
                    self.out.extend_from_slice(&[op::TUPLE1, op::REDUCE]);
                }
            }
            Value::List(l) => {
                self.out.push(op::EMPTY_LIST);
                frames.push(Frame::List { items: l, pos: 0 });
            }
            Value::Tuple(t) => match t.len() {
                0 => self.out.push(op::EMPTY_TUPLE),
                n @ 1..=3 => {
                    frames.push(Frame::Bytes(match n {
                        1 => &[op::TUPLE1],
                        2 => &[op::TUPLE2],
                        _ => &[op::TUPLE3],
                    }));
                    frames.push(Frame::Items { items: t, pos: 0 });
                }
                _ => {
                    self.out.push(op::MARK);
                    frames.push(Frame::Bytes(&[op::TUPLE]));
                    frames.push(Frame::Items { items: t, pos: 0 });
                }
            },
            Value::Dict(d) => {
                self.out.push(op::EMPTY_DICT);
                frames.push(Frame::Dict { entries: d.entries(), pos: 0 });
            }
            Value::Set(s) | Value::FrozenSet(s) => {
                let frozen = matches!(v, Value::FrozenSet(_));
                if self.proto >= 4 {
                    if frozen {
                        self.out.push(op::MARK);
                        frames.push(Frame::Bytes(&[op::FROZENSET]));
                        frames.push(Frame::Items { items: s.as_slice(), pos: 0 });
                    } else {
                        self.out.push(op::EMPTY_SET);
                        frames.push(Frame::Set { items: s.as_slice(), pos: 0 });
                    }
                } else {
                    self.global("builtins", if frozen { "frozenset" } else { "set" })?;
                    self.out.push(op::EMPTY_LIST);
                    frames.push(Frame::Bytes(&[op::TUPLE1, op::REDUCE]));
                    frames.push(Frame::List { items: s.as_slice(), pos: 0 });
                }
            }
            Value::Global(g) => self.global(&g.module, &g.name)?,
            Value::Object(o) => self.object(o, frames)?,
            Value::Shared(a) => {
                let p = Arc::as_ptr(a);
                if let Some(&id) = self.shared.get(&p) {
                    self.get(id);
                } else {
                    frames.push(Frame::Memo(p));
                    frames.push(Frame::Val(a));
                }
            }
        }
        Ok(())
    }

    fn object(&mut self, o: &'a Object, frames: &mut Vec<Frame<'a>>) -> R<()> {
        if let Some(state) = &o.state {
            frames.push(Frame::Bytes(&[op::BUILD]));
            frames.push(Frame::Val(state));
        }
        if !o.dict_items.is_empty() {
            frames.push(Frame::Dict { entries: &o.dict_items, pos: 0 });
        }
        if !o.list_items.is_empty() {
            frames.push(Frame::List { items: &o.list_items, pos: 0 });
        }
        let Global { module, name } = &o.class;
        match o.kind {
            ObjectKind::Reduce | ObjectKind::Inst => {
                frames.push(Frame::Bytes(&[op::REDUCE]));
                frames.push(Frame::Val(&o.args));
                self.global(module, name)?;
            }
            ObjectKind::NewObj => {
                frames.push(Frame::Bytes(&[op::NEWOBJ]));
                frames.push(Frame::Val(&o.args));
                self.global(module, name)?;
            }
            ObjectKind::NewObjEx => {
                let Some(kwargs) = &o.kwargs else {
                    return Err(PickleError::Serde(format!("{module}.{name}: NEWOBJ_EX without kwargs")));
                };
                if self.proto >= 4 {
                    frames.push(Frame::Bytes(&[op::NEWOBJ_EX]));
                    frames.push(Frame::Val(kwargs));
                    frames.push(Frame::Val(&o.args));
                    self.global(module, name)?;
                } else {
                    frames.push(Frame::Bytes(&[op::TUPLE3, op::REDUCE]));
                    frames.push(Frame::Val(kwargs));
                    frames.push(Frame::Val(&o.args));
                    self.global("copyreg", "__newobj_ex__")?;
                    self.global(module, name)?;
                }
            }
            ObjectKind::Reconstructor => {
                let parts = o.args.as_slice().filter(|p| p.len() == 2).ok_or_else(|| {
                    PickleError::Serde(format!("{module}.{name}: a _reconstructor object needs (base, state) args"))
                })?;
                frames.push(Frame::Bytes(&[op::TUPLE3, op::REDUCE]));
                frames.push(Frame::Items { items: parts, pos: 0 });
                self.global("copyreg", "_reconstructor")?;
                self.global(module, name)?;
            }
        }
        Ok(())
    }

    fn run(&mut self, frames: &mut Vec<Frame<'a>>) -> R<()> {
        loop {
            let next: &'a Value = match frames.last_mut() {
                None => return Ok(()),
                Some(Frame::Val(v)) => {
                    let v = *v;
                    frames.pop();
                    v
                }
                Some(Frame::Bytes(b)) => {
                    self.out.extend_from_slice(b);
                    frames.pop();
                    continue;
                }
                Some(Frame::Memo(p)) => {
                    let p = *p;
                    frames.pop();
                    let id = self.put();
                    self.shared.insert(p, id);
                    continue;
                }
                Some(Frame::Items { items, pos }) => {
                    if *pos == items.len() {
                        frames.pop();
                        continue;
                    }
                    *pos += 1;
                    &items[*pos - 1]
                }
                Some(Frame::List { items, pos }) => {
                    let len = items.len();
                    if *pos % BATCH == 0 && *pos > 0 {
                        self.out.push(op::APPENDS);
                    }
                    if *pos == len {
                        if len % BATCH == 1 {
                            self.out.push(op::APPEND);
                        } else if len % BATCH != 0 {
                            self.out.push(op::APPENDS);
                        }
                        frames.pop();
                        continue;
                    }
                    if *pos % BATCH == 0 && len - *pos > 1 {
                        self.out.push(op::MARK);
                    }
                    *pos += 1;
                    &items[*pos - 1]
                }
                Some(Frame::Dict { entries, pos }) => {
                    let len = entries.len() * 2;
                    let b2 = BATCH * 2;
                    if *pos % b2 == 0 && *pos > 0 {
                        self.out.push(op::SETITEMS);
                    }
                    if *pos == len {
                        if len % b2 == 2 {
                            self.out.push(op::SETITEM);
                        } else if len % b2 != 0 {
                            self.out.push(op::SETITEMS);
                        }
                        frames.pop();
                        continue;
                    }
                    if *pos % b2 == 0 && len - *pos > 2 {
                        self.out.push(op::MARK);
                    }
                    let (k, v) = &entries[*pos / 2];
                    *pos += 1;
                    if *pos % 2 == 1 { k } else { v }
                }
                Some(Frame::Set { items, pos }) => {
                    let len = items.len();
                    if *pos % BATCH == 0 && *pos > 0 {
                        self.out.push(op::ADDITEMS);
                    }
                    if *pos == len {
                        if len % BATCH != 0 {
                            self.out.push(op::ADDITEMS);
                        }
                        frames.pop();
                        continue;
                    }
                    if *pos % BATCH == 0 {
                        self.out.push(op::MARK);
                    }
                    *pos += 1;
                    &items[*pos - 1]
                }
            };
            self.value(next, frames)?;
        }
    }
}
