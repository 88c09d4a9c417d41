//! The unpickler: a VM over the opcode stream, as CPython's `_pickle.c`, for protocols 0 to 5.
//!
//! Why it is built this way:
//!
//! * **No recursion.** The stack, the mark stack and the memo are heap vectors; every opcode is
//!   one step of a loop. Nesting depth costs one stack entry per level, nothing more.
//! * **Sharing without copies.** A first linear pass collects the memo ids the pickle ever
//!   fetches (GET, BINGET, LONG_BINGET). PUT / MEMOIZE of any other id costs nothing. PUT of a
//!   fetched container moves it into a *slot* and leaves a handle on the stack; APPENDS,
//!   SETITEMS, ADDITEMS and BUILD on a handle go into the slot. The first time a handle is
//!   embedded (in a container, or as the result) the slot is frozen into an `Arc` and embedded as
//!   [`Value::Shared`]; later embeddings clone the `Arc`. Mutating a frozen slot only happens for
//!   a self-referencing structure (or hostile input): refused as [`PickleError::Cycle`]. A
//!   fetched scalar (str, bytes, int) is cloned and counted at its full size at every fetch.
//! * **A memory budget by construction.** Every node is counted where it is created: the size of
//!   a [`Value`] plus its heap bytes. The budget is `min(max_bytes, EXPANSION × input length +
//!   EXPANSION_FLOOR)` ([`budget`]); going beyond it is [`PickleError::TooLarge`], before the
//!   allocation. Declared lengths are checked against the remaining input before anything is
//!   allocated.
//! * **Nothing runs.** Globals are names; `REDUCE` / `NEWOBJ` / `INST` / `OBJ` build a
//!   [`Value::Object`]. Only the forms CPython itself uses for plain data are turned into plain
//!   values: `_codecs.encode(str, 'latin1')` and `bytes()` (Python 3's bytes at protocol 2),
//!   `bytearray(...)`, `set(...)` / `frozenset(...)`, and `copyreg._reconstructor(cls, object,
//!   None)` (an [`Object`] of `cls`). `collections.OrderedDict` stays an [`Object`] (its items in
//!   `dict_items`, printed as Python prints it), so it goes back to Python as an `OrderedDict`.
//!
//! Python 2 `str` (STRING, BINSTRING, SHORT_BINSTRING) decodes as `Str` when it is ASCII and as
//! `Bytes` otherwise; protocol 0's `I01` / `I00` are `True` / `False`, as in CPython.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use compact_str::CompactString;
use num_bigint::BigInt;

use super::PickleError;
use super::key;
use super::value::{Dict, Global, List, Object, ObjectKind, Set, Value};

/// The most decimal digits a protocol-0 integer may have: CPython's default
/// `sys.get_int_max_str_digits()`, for the same reason (the conversion is quadratic).
pub const MAX_INT_TEXT_DIGITS: usize = 4300;

/// Bytes of decoded memory the budget allows per byte of pickle.
///
/// The densest legitimate pickles create one [`Value`] per input byte (`N`, `)`, `]`, `}`, and
/// a 2-byte BINGET of a shared object creates a 32-byte handle), so about 32 bytes per byte are
/// reached by ordinary data; 64 leaves room for container growth and dict indexes.
pub const EXPANSION: u64 = 64;

/// Bytes every pickle may use whatever its length (so tiny pickles are never refused).
pub const EXPANSION_FLOOR: u64 = 1 << 20;

/// The default cap on decoded memory, whatever the pickle's length: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// The budget, in bytes of decoded memory, for a pickle of `input_len` bytes under `cap`.
pub fn budget(input_len: usize, cap: u64) -> u64 {
    (input_len as u64).saturating_mul(EXPANSION).saturating_add(EXPANSION_FLOOR).min(cap)
}

/// What to do with a pickle that refers to a class or function (a global, a class instance, a
/// `REDUCE` of anything but the plain-data forms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectPolicy {
    /// Keep it as [`Value::Global`] / [`Value::Object`] (nothing is run or resolved).
    #[default]
    Represent,
    /// Refuse the pickle with [`PickleError::ObjectRefused`] naming the class.
    Refuse,
}

/// Options of [`loads_value_with`](super::loads_value_with).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// The cap on decoded memory in bytes, whatever the input length (default 2 GiB). The
    /// budget is the smaller of this and [`EXPANSION`] × input length + [`EXPANSION_FLOOR`].
    pub max_bytes: u64,
    /// Globals and class instances: represent (default) or refuse.
    pub objects: ObjectPolicy,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_bytes: DEFAULT_MAX_BYTES, objects: ObjectPolicy::Represent }
    }
}

impl DecodeOptions {
    /// The defaults: 2 GiB cap, objects represented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the cap on decoded memory.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets the policy for globals and class instances.
    pub fn objects(mut self, policy: ObjectPolicy) -> Self {
        self.objects = policy;
        self
    }
}

const NODE: u64 = std::mem::size_of::<Value>() as u64;

/// The name of an opcode, for error messages.
pub(crate) fn op_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown opcode",
    }
}

/// A set of memo ids: a bitmap for ids below the input length, a hash set above.
struct IdSet {
    bits: Vec<u64>,
    dense: u64,
    sparse: HashSet<u64>,
}

impl IdSet {
    fn new(dense: usize) -> IdSet {
        IdSet { bits: Vec::new(), dense: dense as u64, sparse: HashSet::new() }
    }

    /// Inserts; true when it was not there.
    fn insert(&mut self, id: u64) -> bool {
        if id < self.dense {
            let (w, b) = ((id / 64) as usize, id % 64);
            if w >= self.bits.len() {
                self.bits.resize(w + 1, 0);
            }
            let was = self.bits[w] >> b & 1 == 1;
            self.bits[w] |= 1 << b;
            !was
        } else {
            self.sparse.insert(id)
        }
    }

    fn contains(&self, id: u64) -> bool {
        if id < self.dense {
            self.bits.get((id / 64) as usize).is_some_and(|w| w >> (id % 64) & 1 == 1)
        } else {
            self.sparse.contains(&id)
        }
    }

    /// One more than the largest dense id.
    fn dense_len(&self) -> usize {
        match self.bits.iter().rposition(|&w| w != 0) {
            Some(w) => w * 64 + 64 - self.bits[w].leading_zeros() as usize,
            None => 0,
        }
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64)
}

fn parse_id(line: &[u8]) -> Option<u64> {
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// The first pass: the memo ids the pickle fetches. It stops where the pickle ends or stops
/// making sense; the second pass reports the error there.
fn prescan(data: &[u8]) -> IdSet {
    let mut fetched = IdSet::new(data.len());
    let mut i = 0usize;
    let n = data.len();
    let line_end = |i: usize| data.get(i..).and_then(|s| s.iter().position(|&b| b == b'\n')).map(|p| i + p + 1);
    while i < n {
        let op = data[i];
        i += 1;
        let next = match op {
            b'('
            | b'0'
            | b'1'
            | b'2'
            | b'N'
            | b'Q'
            | b'R'
            | b'a'
            | b'b'
            | b'd'
            | b'}'
            | b'e'
            | b'l'
            | b']'
            | b'o'
            | b's'
            | b't'
            | b')'
            | b'u'
            | 0x81
            | 0x85..=0x89
            | 0x8f..=0x94
            | 0x97
            | 0x98 => Some(i),
            b'.' => break,
            b'K' | 0x80 | b'q' | 0x82 => Some(i + 1),
            b'h' => {
                if let Some(&id) = data.get(i) {
                    fetched.insert(id as u64);
                }
                Some(i + 1)
            }
            b'M' | 0x83 => Some(i + 2),
            b'J' | b'r' | 0x84 => Some(i + 4),
            b'j' => {
                if let Some(b) = data.get(i..i + 4) {
                    fetched.insert(le(b));
                }
                Some(i + 4)
            }
            b'G' | 0x95 => Some(i + 8),
            b'U' | b'C' | 0x8c | 0x8a => data.get(i).map(|&l| i + 1 + l as usize),
            b'T' | b'X' | b'B' | 0x8b => {
                data.get(i..i + 4).and_then(|b| usize::try_from(le(b)).ok()).and_then(|l| (i + 4).checked_add(l))
            }
            0x8d | 0x8e | 0x96 => {
                data.get(i..i + 8).and_then(|b| usize::try_from(le(b)).ok()).and_then(|l| (i + 8).checked_add(l))
            }
            b'g' => line_end(i).inspect(|&e| {
                if let Some(id) = parse_id(&data[i..e - 1]) {
                    fetched.insert(id);
                }
            }),
            b'F' | b'I' | b'L' | b'S' | b'V' | b'P' | b'p' => line_end(i),
            b'c' | b'i' => line_end(i).and_then(line_end),
            _ => None,
        };
        match next {
            Some(j) if j <= n => i = j,
            _ => break,
        }
    }
    fetched
}

/// An entry of the unpickler's stack: a value it owns, or a handle to a slot.
enum Item {
    V(Value),
    H(u32),
}

/// A shared object: mutable until it is first embedded, then frozen.
enum Slot {
    Open(Value),
    Frozen(Arc<Value>),
}

/// What a fetched memo id holds.
#[derive(Clone)]
enum Memo {
    Scalar(Value),
    Slot(u32),
}

/// A value the memo may hold as a copy (immutable, no children).
fn is_scalar(v: &Value) -> bool {
    matches!(
        v,
        Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Float(_)
            | Value::Str(_)
            | Value::Bytes(_)
            | Value::Global(_)
    )
}

/// Heap bytes of a scalar's copy.
fn heap(v: &Value) -> u64 {
    match v {
        Value::Str(s) => s.len() as u64,
        Value::Bytes(b) | Value::ByteArray(b) => b.len() as u64,
        Value::BigInt(b) => 32 + b.bits() / 8,
        Value::Global(g) => 48 + (g.module.len() + g.name.len()) as u64,
        _ => 0,
    }
}

/// Python 2 module names as Python 3 names them (CPython's `fix_imports`, the common part).
fn py3_module(module: &str, name: &str) -> String {
    match module {
        "__builtin__" | "exceptions" => "builtins".into(),
        "copy_reg" => "copyreg".into(),
        "Queue" => "queue".into(),
        "UserDict" if name == "UserDict" => "collections".into(),
        "UserList" => "collections".into(),
        "UserString" => "collections".into(),
        _ => module.into(),
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    start: usize,
    op: u8,
    stack: Vec<Item>,
    marks: Vec<usize>,
    slots: Vec<Slot>,
    memo_dense: Vec<Option<Memo>>,
    memo_sparse: HashMap<u64, Memo>,
    fetched: IdSet,
    present: IdSet,
    memo_len: u64,
    used: u64,
    limit: u64,
    refuse_objects: bool,
    scratch: Vec<Value>,
}

type R<T> = Result<T, PickleError>;

pub(crate) fn decode(data: &[u8], options: &DecodeOptions) -> R<Value> {
    let fetched = prescan(data);
    let limit = budget(data.len(), options.max_bytes);
    let dense = fetched.dense_len();
    let mut vm = Vm {
        data,
        pos: 0,
        start: 0,
        op: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        slots: Vec::new(),
        memo_dense: Vec::new(),
        memo_sparse: HashMap::new(),
        present: IdSet::new(data.len()),
        memo_len: 0,
        used: 0,
        limit,
        refuse_objects: options.objects == ObjectPolicy::Refuse,
        scratch: Vec::new(),
        fetched,
    };
    vm.charge(dense as u64 * std::mem::size_of::<Option<Memo>>() as u64)?;
    vm.memo_dense.resize(dense, None);
    let work = key::WorkBudget::new(limit);
    let v = vm.run().map_err(|e| match e {
        PickleError::Unhashable { type_name, offset: None } => {
            PickleError::Unhashable { type_name, offset: Some(vm.start) }
        }
        e => e,
    });
    if work.spent() {
        return Err(PickleError::TooComplex);
    }
    let v = v?;
    // Release the decoder's own references so a shared result held once can be unwrapped.
    vm.slots.clear();
    vm.memo_dense.clear();
    vm.memo_sparse.clear();
    vm.stack.clear();
    Ok(match v {
        Value::Shared(a) => Arc::try_unwrap(a).unwrap_or_else(Value::Shared),
        v => v,
    })
}

impl<'a> Vm<'a> {
    fn invalid(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Invalid { opcode: op_name(self.op), offset: self.start, reason: reason.into() }
    }

    #[inline]
    fn charge(&mut self, n: u64) -> R<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(PickleError::TooLarge { limit: self.limit, offset: self.start });
        }
        Ok(())
    }

    #[inline]
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let data = self.data;
        match data.get(self.pos..).and_then(|s| s.get(..n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(PickleError::Truncated { opcode: op_name(self.op), offset: self.start }),
        }
    }

    #[inline]
    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    fn uint(&mut self, n: usize) -> R<u64> {
        Ok(le(self.take(n)?))
    }

    /// A length argument of `n` bytes, checked against what is left of the input.
    #[inline]
    fn len_arg(&mut self, n: usize) -> R<usize> {
        let l = self.uint(n)?;
        let left = (self.data.len() - self.pos) as u64;
        if l > left {
            return Err(PickleError::Truncated { opcode: op_name(self.op), offset: self.start });
        }
        Ok(l as usize)
    }

    fn line(&mut self) -> R<&'a [u8]> {
        let data = self.data;
        let rest = &data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                self.pos += p + 1;
                Ok(&rest[..p])
            }
            None => Err(PickleError::Truncated { opcode: op_name(self.op), offset: self.start }),
        }
    }

    #[inline]
    fn push(&mut self, v: Value) -> R<()> {
        self.charge(NODE)?;
        self.stack.push(Item::V(v));
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> R<Item> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid("the stack is empty (unpickling stack underflow)"));
        }
        self.stack.pop().ok_or_else(|| self.invalid("the stack is empty"))
    }

    fn pop_mark(&mut self) -> R<usize> {
        match self.marks.pop() {
            Some(k) if k <= self.stack.len() => Ok(k),
            _ => Err(self.invalid("no MARK before it (could not find MARK)")),
        }
    }

    fn str_of(&self, b: &[u8]) -> R<CompactString> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(CompactString::from(s)),
            Err(e) => {
                let at = e.valid_up_to();
                if b.get(at) == Some(&0xed) && b.get(at + 1).is_some_and(|&c| (0xa0..=0xbf).contains(&c)) {
                    Err(PickleError::Surrogate { opcode: op_name(self.op), offset: self.start })
                } else {
                    Err(PickleError::Utf8 { opcode: op_name(self.op), offset: self.start, source: e })
                }
            }
        }
    }

    fn push_str(&mut self, b: &[u8]) -> R<()> {
        self.charge(b.len() as u64)?;
        let s = self.str_of(b)?;
        self.push(Value::Str(s))
    }

    fn push_bytes(&mut self, b: &[u8], array: bool) -> R<()> {
        self.charge(b.len() as u64)?;
        self.push(if array { Value::ByteArray(b.to_vec()) } else { Value::Bytes(b.to_vec()) })
    }

    /// A Python 2 `str`: `Str` when ASCII, else `Bytes`.
    fn push_py2_str(&mut self, b: &[u8]) -> R<()> {
        self.charge(b.len() as u64)?;
        if b.is_ascii() {
            let s = std::str::from_utf8(b).map_err(|_| self.invalid("not ASCII"))?;
            self.push(Value::Str(s.into()))
        } else {
            self.push(Value::Bytes(b.to_vec()))
        }
    }

    fn push_long_bytes(&mut self, b: &[u8]) -> R<()> {
        if b.len() <= 8 {
            let mut v: i64 = 0;
            for (i, &x) in b.iter().enumerate() {
                v |= (x as i64) << (8 * i);
            }
            if let Some(&last) = b.last()
                && b.len() < 8
                && last & 0x80 != 0
            {
                v |= -1i64 << (8 * b.len());
            }
            return self.push(Value::Int(v));
        }
        self.charge(32 + b.len() as u64)?;
        self.push(Value::int(BigInt::from_signed_bytes_le(b)))
    }

    /// INT and LONG (protocol 0's decimal integers).
    fn push_int_text(&mut self, s: &[u8], allow_bool: bool) -> R<()> {
        if allow_bool {
            if s == b"00" {
                return self.push(Value::Bool(false));
            }
            if s == b"01" {
                return self.push(Value::Bool(true));
            }
        }
        let t = std::str::from_utf8(s).map_err(|_| self.invalid("not a number"))?.trim();
        let t = t.strip_suffix('L').unwrap_or(t);
        if allow_bool {
            // INT is read by C's strtol(s, 0) (then Python's int(s, 0)): 0x.., 0o.., 0b.. and a
            // leading 0 (octal) change the base, as in _pickle.c.
            let (neg, body) = match t.as_bytes().first() {
                Some(b'-') => (true, &t[1..]),
                Some(b'+') => (false, &t[1..]),
                _ => (false, t),
            };
            let lower = body.get(..2).map(str::to_ascii_lowercase);
            let (radix, digits) = match lower.as_deref() {
                Some("0x") => (16, &body[2..]),
                Some("0o") => (8, &body[2..]),
                Some("0b") => (2, &body[2..]),
                _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
                _ => (10, body),
            };
            if radix != 10 {
                if digits.is_empty() || digits.len() > MAX_INT_TEXT_DIGITS {
                    return Err(self.invalid(format!("{t:?} is not an integer")));
                }
                self.charge(32 + t.len() as u64)?;
                let n = BigInt::parse_bytes(digits.as_bytes(), radix)
                    .ok_or_else(|| self.invalid(format!("{t:?} is not an integer")))?;
                return self.push(Value::int(if neg { -n } else { n }));
            }
        }
        if let Ok(i) = t.parse::<i64>() {
            return self.push(Value::Int(i));
        }
        let digits = t.trim_start_matches(['-', '+']).len();
        if digits > MAX_INT_TEXT_DIGITS {
            // Decimal to binary is quadratic: a megabyte of digits would hold the thread for
            // seconds. CPython refuses the same (sys.get_int_max_str_digits).
            return Err(self.invalid(format!(
                "an integer of {digits} decimal digits; the limit is {MAX_INT_TEXT_DIGITS}, as CPython's"
            )));
        }
        self.charge(32 + t.len() as u64)?;
        match t.parse::<BigInt>() {
            Ok(b) => self.push(Value::int(b)),
            Err(_) => Err(self.invalid(format!("{t:?} is not an integer"))),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> R<()> {
        self.charge(48 + (module.len() + name.len()) as u64)?;
        let module = py3_module(module, name);
        self.push(Value::Global(Box::new(Global { module, name: name.to_owned() })))
    }

    /// The item as a value to embed somewhere (a slot is frozen and shared).
    fn embed(&mut self, item: Item) -> R<Value> {
        match item {
            Item::V(v) => {
                if self.refuse_objects
                    && let Value::Global(g) = &v
                {
                    return Err(PickleError::ObjectRefused { module: g.module.clone(), name: g.name.clone() });
                }
                Ok(v)
            }
            Item::H(s) => {
                let slot = &mut self.slots[s as usize];
                let arc = match slot {
                    Slot::Frozen(a) => a.clone(),
                    Slot::Open(v) => {
                        let a = Arc::new(std::mem::replace(v, Value::None));
                        *slot = Slot::Frozen(a.clone());
                        a
                    }
                };
                self.charge(NODE)?;
                Ok(Value::Shared(arc))
            }
        }
    }

    /// Items taken off the stack as values (collected in place: no new allocation).
    fn embed_all(&mut self, items: Vec<Item>) -> R<Vec<Value>> {
        items.into_iter().map(|it| self.embed(it)).collect()
    }

    /// The items above stack index `k`, embedded, into the reused scratch vector.
    fn drain_embedded(&mut self, k: usize) -> R<Vec<Value>> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut stack = std::mem::take(&mut self.stack);
        let mut r = Ok(());
        for it in stack.drain(k..) {
            match self.embed(it) {
                Ok(v) => out.push(v),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        stack.truncate(k);
        self.stack = stack;
        r.map(|()| out)
    }

    /// The value at stack index `i`, to modify.
    fn target(&mut self, i: usize) -> R<&mut Value> {
        let offset = self.start;
        match self.stack.get_mut(i) {
            Some(Item::V(v)) => Ok(v),
            Some(Item::H(s)) => match &mut self.slots[*s as usize] {
                Slot::Open(v) => Ok(v),
                Slot::Frozen(_) => Err(PickleError::Cycle { offset }),
            },
            None => Err(PickleError::Invalid { opcode: op_name(self.op), offset, reason: "the stack is empty".into() }),
        }
    }

    fn memo_get(&self, id: u64) -> Option<&Memo> {
        if (id as usize as u64) == id && (id as usize) < self.memo_dense.len() {
            self.memo_dense[id as usize].as_ref()
        } else {
            self.memo_sparse.get(&id)
        }
    }

    fn memo_set(&mut self, id: u64, m: Memo) {
        if (id as usize as u64) == id && (id as usize) < self.memo_dense.len() {
            self.memo_dense[id as usize] = Some(m);
        } else {
            self.memo_sparse.insert(id, m);
        }
    }

    fn put(&mut self, id: u64) -> R<()> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid("the stack is empty"));
        }
        if self.present.insert(id) {
            self.memo_len += 1;
            self.charge(1)?;
        }
        if !self.fetched.contains(id) {
            return Ok(());
        }
        let n = self.slots.len() as u32;
        let Some(top) = self.stack.last_mut() else { return Err(self.invalid("the stack is empty")) };
        let m = match top {
            Item::H(s) => Memo::Slot(*s),
            Item::V(v) if is_scalar(v) => Memo::Scalar(v.clone()),
            Item::V(_) => {
                let Item::V(v) = std::mem::replace(top, Item::H(n)) else { unreachable!() };
                self.slots.push(Slot::Open(v));
                Memo::Slot(n)
            }
        };
        let cost = match &m {
            Memo::Scalar(v) => NODE + heap(v),
            Memo::Slot(_) => NODE,
        };
        self.charge(cost)?;
        self.memo_set(id, m);
        Ok(())
    }

    fn get(&mut self, id: u64) -> R<()> {
        let item = match self.memo_get(id) {
            Some(Memo::Scalar(v)) => {
                let cost = heap(v);
                let v = v.clone();
                self.charge(cost)?;
                Item::V(v)
            }
            Some(Memo::Slot(s)) => Item::H(*s),
            None => return Err(self.invalid(format!("memo key {id} not found"))),
        };
        self.charge(NODE)?;
        self.stack.push(item);
        Ok(())
    }

    fn make_object(&mut self, class: Global, kind: ObjectKind, args: Value, kwargs: Option<Value>) -> R<Value> {
        if self.refuse_objects {
            return Err(PickleError::ObjectRefused { module: class.module, name: class.name });
        }
        self.charge(std::mem::size_of::<Object>() as u64)?;
        Ok(Value::Object(Box::new(Object {
            class,
            kind,
            args,
            kwargs,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
    }

    fn pop_global(&mut self, what: &str) -> R<Global> {
        match self.pop()? {
            Item::V(Value::Global(g)) => Ok(*g),
            Item::V(v) => Err(self.invalid(format!("{what} must be a class or function, not a {}", v.type_name()))),
            Item::H(_) => Err(self.invalid(format!("{what} must be a class or function"))),
        }
    }

    fn reduce(&mut self) -> R<()> {
        let args = self.pop()?;
        let args = self.embed(args)?;
        let class = self.pop_global("the callable of REDUCE")?;
        let v = match plain_reduce(&class, args)? {
            Ok(v) => {
                let extra = match &v {
                    Value::Dict(d) => key_cost(d.len()),
                    Value::Set(s) | Value::FrozenSet(s) => key_cost(s.len()),
                    _ => 0,
                };
                self.charge(extra)?;
                v
            }
            Err(args) => {
                if (class.module.as_str(), class.name.as_str()) == ("copyreg", "_reconstructor")
                    && matches!(args.as_slice(), Some([Value::Global(_), _, _]))
                {
                    if let Ok(mut parts) = into_items(args) {
                        let state = parts.pop().unwrap_or(Value::None);
                        let base = parts.pop().unwrap_or(Value::None);
                        if let Some(Value::Global(cls)) = parts.pop() {
                            let rest = Value::Tuple(List(vec![base, state]));
                            let v = self.make_object(*cls, ObjectKind::Reconstructor, rest, None)?;
                            self.stack.push(Item::V(v));
                            return Ok(());
                        }
                    }
                    return Err(self.invalid("copyreg._reconstructor with shared arguments"));
                }
                self.make_object(class, ObjectKind::Reduce, args, None)?
            }
        };
        self.stack.push(Item::V(v));
        Ok(())
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let Some(&op) = self.data.get(self.pos) else {
                return Err(PickleError::NoStop { offset: self.data.len() });
            };
            self.start = self.pos;
            self.op = op;
            self.pos += 1;
            match op {
                b'.' => {
                    let item = self.pop()?;
                    return self.embed(item);
                }
                b'(' => {
                    self.charge(8)?;
                    self.marks.push(self.stack.len());
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let b = self.byte()?;
                    self.push(Value::Int(b as i64))?
                }
                b'M' => {
                    let n = self.uint(2)?;
                    self.push(Value::Int(n as i64))?
                }
                b'J' => {
                    let n = self.uint(4)? as u32 as i32;
                    self.push(Value::Int(n as i64))?
                }
                0x8a => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_long_bytes(b)?
                }
                0x8b => {
                    let n = self.uint(4)? as u32 as i32;
                    if n < 0 {
                        return Err(self.invalid("LONG pickle has negative byte count"));
                    }
                    let b = self.take(n as usize)?;
                    self.push_long_bytes(b)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?
                }
                b'F' => {
                    let l = self.line()?;
                    let f = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<f64>().ok());
                    match f {
                        Some(f) => self.push(Value::Float(f))?,
                        None => return Err(self.invalid("not a float")),
                    }
                }
                b'I' => {
                    let l = self.line()?;
                    self.push_int_text(l, true)?
                }
                b'L' => {
                    let l = self.line()?;
                    self.push_int_text(l, false)?
                }
                0x8c => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_str(b)?
                }
                b'X' => {
                    let n = self.len_arg(4)?;
                    let b = self.take(n)?;
                    self.push_str(b)?
                }
                0x8d => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_str(b)?
                }
                b'V' => {
                    let l = self.line()?;
                    let s = raw_unicode_escape(l).ok_or_else(|| self.invalid("bad \\u escape"))?;
                    self.charge(s.len() as u64)?;
                    self.push(Value::Str(s.into()))?
                }
                b'C' => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?
                }
                b'B' => {
                    let n = self.len_arg(4)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?
                }
                0x8e => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?
                }
                0x96 => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, true)?
                }
                b'U' => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_py2_str(b)?
                }
                b'T' => {
                    let n = self.uint(4)? as u32 as i32;
                    if n < 0 {
                        return Err(self.invalid("BINSTRING pickle has negative byte count"));
                    }
                    let b = self.take(n as usize)?;
                    self.push_py2_str(b)?
                }
                b'S' => {
                    let l = self.line()?;
                    let inner = match l {
                        [q, inner @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => inner,
                        _ => return Err(self.invalid("the STRING opcode argument must be quoted")),
                    };
                    let b = escape_decode(inner).ok_or_else(|| self.invalid("bad escape in STRING"))?;
                    self.push_py2_str(&b)?
                }
                b')' => self.push(Value::Tuple(List::new()))?,
                b']' => self.push(Value::List(List::new()))?,
                b'}' => self.push(Value::Dict(Dict::new()))?,
                0x8f => self.push(Value::Set(Set::new()))?,
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.fence() + n {
                        return Err(self.invalid("the stack is empty (unpickling stack underflow)"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let items = self.embed_all(items)?;
                    self.push(Value::Tuple(List(items)))?
                }
                b't' => {
                    let k = self.pop_mark()?;
                    let items = self.stack.split_off(k);
                    let items = self.embed_all(items)?;
                    self.push(Value::Tuple(List(items)))?
                }
                b'l' => {
                    let k = self.pop_mark()?;
                    let items = self.stack.split_off(k);
                    let items = self.embed_all(items)?;
                    self.push(Value::List(List(items)))?
                }
                b'd' => {
                    let k = self.pop_mark()?;
                    let items = self.stack.split_off(k);
                    if !items.len().is_multiple_of(2) {
                        return Err(self.invalid("odd number of items for DICT"));
                    }
                    self.charge(key_cost(items.len() / 2))?;
                    let items = self.embed_all(items)?;
                    let mut d = Dict::new();
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.insert(k, v)?;
                    }
                    self.push(Value::Dict(d))?
                }
                0x91 => {
                    let k = self.pop_mark()?;
                    let items = self.stack.split_off(k);
                    self.charge(key_cost(items.len()))?;
                    let items = self.embed_all(items)?;
                    let mut s = Set::new();
                    for v in items {
                        s.insert(v)?;
                    }
                    self.push(Value::FrozenSet(s))?
                }
                b'a' => {
                    let item = self.pop()?;
                    let v = self.embed(item)?;
                    let i = self.stack.len().wrapping_sub(1);
                    self.extend_list(i, vec![v])?
                }
                b'e' => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no list below the MARK"));
                    }
                    let in_place = !self.refuse_objects
                        && matches!(self.stack.get(k - 1), Some(Item::V(Value::List(_))))
                        && self.stack[k..].iter().all(|i| matches!(i, Item::V(_)));
                    if in_place {
                        let (head, tail) = self.stack.split_at_mut(k);
                        if let Some(Item::V(Value::List(l))) = head.last_mut() {
                            l.0.reserve(tail.len());
                            for it in tail.iter_mut() {
                                if let Item::V(v) = std::mem::replace(it, Item::V(Value::None)) {
                                    l.0.push(v);
                                }
                            }
                        }
                        self.stack.truncate(k);
                    } else {
                        let items = self.drain_embedded(k)?;
                        self.extend_list(k - 1, items)?
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let v = self.embed(v)?;
                    let k = self.pop()?;
                    let k = self.embed(k)?;
                    let i = self.stack.len().wrapping_sub(1);
                    self.set_items(i, vec![k, v])?
                }
                b'u' => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no dict below the MARK"));
                    }
                    if !(self.stack.len() - k).is_multiple_of(2) {
                        return Err(self.invalid("odd number of items for SETITEMS"));
                    }
                    if !self.set_items_in_place(k)? {
                        let items = self.drain_embedded(k)?;
                        self.set_items(k - 1, items)?
                    }
                }
                0x90 => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no set below the MARK"));
                    }
                    let items = self.stack.split_off(k);
                    self.charge(key_cost(items.len()))?;
                    let items = self.embed_all(items)?;
                    let offset = self.start;
                    match self.target(k - 1)? {
                        Value::Set(s) => {
                            for v in items {
                                s.insert(v)?;
                            }
                        }
                        other => {
                            let t = other.type_name();
                            return Err(PickleError::Invalid {
                                opcode: "ADDITEMS",
                                offset,
                                reason: format!("cannot add items to a {t}"),
                            });
                        }
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    let state = self.embed(state)?;
                    let offset = self.start;
                    let i = self.stack.len().wrapping_sub(1);
                    match self.target(i)? {
                        Value::Object(o) => o.state = Some(state),
                        other => {
                            let t = other.type_name();
                            return Err(PickleError::Invalid {
                                opcode: "BUILD",
                                offset,
                                reason: format!("cannot set the state of a {t}"),
                            });
                        }
                    }
                }
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    let k = self.pop_mark()?;
                    self.stack.truncate(k);
                }
                b'2' => {
                    if self.stack.len() <= self.fence() {
                        return Err(self.invalid("the stack is empty"));
                    }
                    self.charge(NODE)?;
                    let n = self.slots.len() as u32;
                    let Some(top) = self.stack.last_mut() else { return Err(self.invalid("the stack is empty")) };
                    let dup = match top {
                        Item::H(s) => Item::H(*s),
                        Item::V(v) if is_scalar(v) => {
                            let c = heap(v);
                            let v = v.clone();
                            self.charge(c)?;
                            Item::V(v)
                        }
                        Item::V(_) => {
                            let Item::V(v) = std::mem::replace(top, Item::H(n)) else { unreachable!() };
                            self.slots.push(Slot::Open(v));
                            Item::H(n)
                        }
                    };
                    self.stack.push(dup);
                }
                b'p' => {
                    let l = self.line()?;
                    let id = parse_id(l).ok_or_else(|| self.invalid("bad memo id"))?;
                    self.put(id)?
                }
                b'q' => {
                    let id = self.byte()? as u64;
                    self.put(id)?
                }
                b'r' => {
                    let id = self.uint(4)?;
                    self.put(id)?
                }
                0x94 => {
                    let id = self.memo_len;
                    self.put(id)?
                }
                b'g' => {
                    let l = self.line()?;
                    let id = parse_id(l).ok_or_else(|| self.invalid("bad memo id"))?;
                    self.get(id)?
                }
                b'h' => {
                    let id = self.byte()? as u64;
                    self.get(id)?
                }
                b'j' => {
                    let id = self.uint(4)?;
                    self.get(id)?
                }
                b'c' => {
                    let m = self.line()?;
                    let n = self.line()?;
                    let m = self.str_of(m)?;
                    let n = self.str_of(n)?;
                    self.global(&m, &n)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Item::V(Value::Str(m)), Item::V(Value::Str(n))) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?
                        }
                        _ => return Err(self.invalid("STACK_GLOBAL requires str")),
                    }
                }
                b'R' => self.reduce()?,
                0x81 => {
                    let args = self.pop()?;
                    let args = self.embed(args)?;
                    let class = self.pop_global("the class of NEWOBJ")?;
                    let v = self.make_object(class, ObjectKind::NewObj, args, None)?;
                    self.stack.push(Item::V(v));
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let kwargs = self.embed(kwargs)?;
                    let args = self.pop()?;
                    let args = self.embed(args)?;
                    let class = self.pop_global("the class of NEWOBJ_EX")?;
                    let v = self.make_object(class, ObjectKind::NewObjEx, args, Some(kwargs))?;
                    self.stack.push(Item::V(v));
                }
                b'i' => {
                    let m = self.line()?;
                    let n = self.line()?;
                    let m = self.str_of(m)?;
                    let n = self.str_of(n)?;
                    let k = self.pop_mark()?;
                    let items = self.stack.split_off(k);
                    let items = self.embed_all(items)?;
                    self.charge(NODE)?;
                    let class = Global { module: py3_module(&m, &n), name: n.into() };
                    let v = self.make_object(class, ObjectKind::Inst, Value::Tuple(List(items)), None)?;
                    self.push(v)?
                }
                b'o' => {
                    let k = self.pop_mark()?;
                    let mut items = self.stack.split_off(k);
                    if items.is_empty() {
                        return Err(self.invalid("OBJ needs a class"));
                    }
                    let class = match items.remove(0) {
                        Item::V(Value::Global(g)) => *g,
                        _ => return Err(self.invalid("the class of OBJ must be a global")),
                    };
                    let items = self.embed_all(items)?;
                    self.charge(NODE)?;
                    let v = self.make_object(class, ObjectKind::Inst, Value::Tuple(List(items)), None)?;
                    self.push(v)?
                }
                0x80 => {
                    let p = self.byte()?;
                    if p > 5 {
                        return Err(self.invalid(format!("unsupported pickle protocol: {p}")));
                    }
                }
                0x95 => {
                    self.len_arg(8)?;
                }
                b'P' | b'Q' => {
                    return Err(PickleError::Unsupported {
                        opcode: op_name(op),
                        offset: self.start,
                        why: "persistent ids need a persistent_load of the sender's program",
                    });
                }
                0x82..=0x84 => {
                    return Err(PickleError::Unsupported {
                        opcode: op_name(op),
                        offset: self.start,
                        why: "the copyreg extension registry is not supported",
                    });
                }
                0x97 | 0x98 => {
                    return Err(PickleError::Unsupported {
                        opcode: op_name(op),
                        offset: self.start,
                        why: "out-of-band buffers (protocol 5 with buffer_callback) are not supported",
                    });
                }
                byte => return Err(PickleError::UnknownOpcode { byte, offset: self.start }),
            }
        }
    }

    fn extend_list(&mut self, i: usize, mut items: Vec<Value>) -> R<()> {
        let offset = self.start;
        let op = self.op;
        match self.target(i)? {
            Value::List(l) => l.0.append(&mut items),
            Value::Object(o) => o.list_items.append(&mut items),
            other => {
                let t = other.type_name();
                return Err(PickleError::Invalid {
                    opcode: op_name(op),
                    offset,
                    reason: format!("cannot append to a {t}"),
                });
            }
        }
        self.scratch = items;
        Ok(())
    }

    /// SETITEMS straight from the stack into a dict the stack owns (the common case: no handles,
    /// no objects to refuse); false when it does not apply.
    fn set_items_in_place(&mut self, k: usize) -> R<bool> {
        let applies = !self.refuse_objects
            && matches!(self.stack.get(k - 1), Some(Item::V(Value::Dict(_))))
            && self.stack[k..].iter().all(|i| matches!(i, Item::V(_)));
        if !applies {
            return Ok(false);
        }
        let n = (self.stack.len() - k) / 2;
        if matches!(self.stack.get(k - 1), Some(Item::V(Value::Dict(d))) if d.len() + n > 8) {
            self.charge(key_cost(n))?;
        }
        let (head, tail) = self.stack.split_at_mut(k);
        if let Some(Item::V(Value::Dict(d))) = head.last_mut() {
            d.reserve(n);
            let mut it = tail.iter_mut();
            while let (Some(a), Some(b)) = (it.next(), it.next()) {
                let (a, b) = (std::mem::replace(a, Item::V(Value::None)), std::mem::replace(b, Item::V(Value::None)));
                if let (Item::V(key), Item::V(value)) = (a, b) {
                    d.insert(key, value)?;
                }
            }
        }
        self.stack.truncate(k);
        Ok(true)
    }

    fn set_items(&mut self, i: usize, mut items: Vec<Value>) -> R<()> {
        let offset = self.start;
        let op = self.op;
        let n = items.len() / 2;
        let big = matches!(self.stack.get(i), Some(Item::V(Value::Dict(d))) if d.len() + n > 8);
        if big {
            self.charge(key_cost(n))?;
        }
        match self.target(i)? {
            Value::Dict(d) => {
                d.reserve(n);
                let mut it = items.drain(..);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.insert(k, v)?;
                }
            }
            Value::Object(o) => {
                let mut it = items.drain(..);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    o.dict_items.push((k, v));
                }
            }
            other => {
                let t = other.type_name();
                return Err(PickleError::Invalid {
                    opcode: op_name(op),
                    offset,
                    reason: format!("cannot set items on a {t}"),
                });
            }
        }
        self.scratch = items;
        Ok(())
    }
}

/// Bytes of hash index for `n` keys.
fn key_cost(n: usize) -> u64 {
    n as u64 * 24
}

/// The items of a list or tuple argument, taken out; the value back if it is not one (or is
/// shared elsewhere).
fn into_items(v: Value) -> Result<Vec<Value>, Value> {
    match v {
        Value::List(l) | Value::Tuple(l) => Ok(l.into_vec()),
        Value::Shared(a) => match Arc::try_unwrap(a) {
            Ok(v) => into_items(v),
            Err(a) => Err(Value::Shared(a)),
        },
        v => Err(v),
    }
}

/// `s.encode('latin1')` for a str of code points below 256.
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(c as u32).ok()).collect()
}

fn is_latin1_name(e: &str) -> bool {
    matches!(
        e.to_ascii_lowercase().replace('_', "-").as_str(),
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1"
    )
}

/// The plain-data forms of REDUCE: `Ok(Ok(value))`, or `Ok(Err(args))` to build an object.
fn plain_reduce(class: &Global, args: Value) -> R<Result<Value, Value>> {
    let m = class.module.as_str();
    let n = class.name.as_str();
    let known = matches!((m, n), ("_codecs", "encode") | ("builtins", "bytes" | "bytearray" | "set" | "frozenset"));
    if !known {
        return Ok(Err(args));
    }
    let items = match into_items(args) {
        Ok(items) => items,
        Err(args) => return Ok(Err(args)),
    };
    let out = match ((m, n), items.as_slice()) {
        (("_codecs", "encode"), [Value::Str(s), Value::Str(e)]) if is_latin1_name(e) => latin1(s).map(Value::Bytes),
        (("builtins", "bytes"), []) => Some(Value::Bytes(Vec::new())),
        (("builtins", "bytes"), [Value::Bytes(b)]) => Some(Value::Bytes(b.clone())),
        (("builtins", "bytearray"), []) => Some(Value::ByteArray(Vec::new())),
        (("builtins", "bytearray"), [Value::Bytes(b)]) => Some(Value::ByteArray(b.clone())),
        (("builtins", "bytearray"), [Value::Str(s), Value::Str(e)]) if is_latin1_name(e) => {
            latin1(s).map(Value::ByteArray)
        }
        (("builtins", "set" | "frozenset"), []) => {
            Some(if n == "set" { Value::Set(Set::new()) } else { Value::FrozenSet(Set::new()) })
        }
        _ => None,
    };
    if let Some(v) = out {
        return Ok(Ok(v));
    }
    // set(list) / frozenset(list): take the one argument's items.
    let mut items = items;
    if items.len() == 1 && matches!((m, n), ("builtins", "set" | "frozenset")) {
        let Some(arg) = items.pop() else { return Ok(Err(Value::Tuple(List(items)))) };
        let elems = match into_items(arg) {
            Ok(e) => e,
            Err(arg) => return Ok(Err(Value::Tuple(List(vec![arg])))),
        };
        let mut s = Set::new();
        for v in elems {
            s.insert(v)?;
        }
        return Ok(Ok(if n == "set" { Value::Set(s) } else { Value::FrozenSet(s) }));
    }
    Ok(Err(Value::Tuple(List(items))))
}

/// Python's `codecs.escape_decode` of a protocol-0 STRING argument.
fn escape_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *s.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let h = std::str::from_utf8(s.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding of a protocol-0 UNICODE argument.
fn raw_unicode_escape(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' && matches!(s.get(i + 1), Some(b'u' | b'U')) {
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            let h = std::str::from_utf8(s.get(i + 2..i + 2 + n)?).ok()?;
            let cp = u32::from_str_radix(h, 16).ok()?;
            out.push(char::from_u32(cp)?);
            i += 2 + n;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Some(out)
}
