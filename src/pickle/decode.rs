//! The unpickler: a VM over the opcode stream, as CPython's `_pickle.c`, for protocols 0 to 5.
//!
//! Why it is built this way:
//!
//! * **No recursion.** The stack, the mark stack and the memo are heap vectors; every opcode is
//!   one step of a loop. Nesting depth costs one stack entry per level, nothing more.
//! * **Sharing without copies.** A first linear pass collects the memo ids the pickle ever
//!   fetches (GET, BINGET, `LONG_BINGET`). PUT / MEMOIZE of any other id costs nothing. PUT of a
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
//! Python 2 `str` (STRING, BINSTRING, `SHORT_BINSTRING`) decodes as `Py2Str` when it is ASCII (a
//! `str` to everything but the encoder, which writes it back to Python 2 as a `str`) and as
//! `Bytes` otherwise; protocol 0's `I01` / `I00` are `True` / `False`, as in CPython.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use compact_str::CompactString;
use num_bigint::BigInt;

use super::PickleError;
use super::key;
use super::opcodes;
use super::opcodes as op;
use super::value::{Dict, Global, List, Object, ObjectKind, Set, Value};

/// The most decimal digits a protocol-0 integer may have: CPython's default
/// `sys.get_int_max_str_digits()`, for the same reason (the conversion is quadratic).
pub const MAX_INT_TEXT_DIGITS: usize = 4300;

/// Bytes of heap the budget allows per byte of pickle.
///
/// The budget bounds the real heap of a decode: every vector's capacity (the VM's stack, its
/// marks, memo and slots, each container), every box, `Arc` and string, charged before it is
/// allocated, and while a vector grows both its old and its new block. The densest legitimate
/// pickles create one 32-byte [`Value`] per input byte (`N`, `)`, `]`, `}`): CPython's
/// `[None]*N` appends them 1,000 at a time to a list that doubles, so it holds up to 64 bytes per
/// input byte, and 96 while it moves to a block twice as big. 128 leaves room above that.
pub const EXPANSION: u64 = 128;

/// Bytes every pickle may use whatever its length (so tiny pickles are never refused).
pub const EXPANSION_FLOOR: u64 = 1 << 20;

/// The default cap on decoded memory, whatever the pickle's length: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// The budget, in bytes of decoded memory, for a pickle of `input_len` bytes under `cap`.
pub fn budget(input_len: usize, cap: u64) -> u64 {
    (input_len as u64).saturating_mul(EXPANSION).saturating_add(EXPANSION_FLOOR).min(cap)
}

/// Steps of hashing, probing and comparing dict keys and set elements the work budget allows per
/// byte of pickle. A step is one leaf hashed or compared (plus one per 64 bytes it reads), one
/// tuple or frozenset element, one probe of a hash index. Ordinary data takes under one step
/// per byte (a dict of N str keys: one hash and about one probe per key of several bytes).
pub const WORK_PER_BYTE: u64 = 16;

/// Steps every pickle may take whatever its length.
pub const WORK_FLOOR: u64 = 1 << 20;

/// The work budget, in steps, for a pickle of `input_len` bytes: beyond it the decode is refused
/// as [`PickleError::TooComplex`]. Independent of [`DecodeOptions::max_bytes`] (time, not memory).
pub fn work_budget(input_len: usize) -> u64 {
    (input_len as u64).saturating_mul(WORK_PER_BYTE).saturating_add(WORK_FLOOR)
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

/// The heap of an `Arc<Value>`: two counters and the value.
const ARC: u64 = 16 + NODE;

/// Bytes charged for each new entry of a `HashMap` / `HashSet` of entries of `size` bytes: a
/// bucket (entry + control byte) for each entry at the fullest (7/8) and emptiest (7/16, just
/// after doubling) load, and both tables while it doubles: at most (size + 1) × 16/7 × 1.5.
const fn hash_entry(size: usize) -> u64 {
    ((size as u64 + 1) * 24).div_ceil(7) + 1
}

/// Bytes charged for a str of `len` bytes: `CompactString` keeps up to 24 inline; beyond, it
/// allocates at least 32.
fn str_heap(len: usize) -> u64 {
    if len <= 24 { 0 } else { len.max(32) as u64 + 8 }
}

/// The name of an opcode, for error messages.
pub(crate) fn op_name(op: u8) -> &'static str {
    // The one table: opcodes::TABLE.
    opcodes::name(op)
}

/// A set of memo ids: a bitmap for ids below the input length (allocated whole, exactly, at the
/// first insert: one bit per byte of input), a hash set above.
struct IdSet {
    bits: Vec<u64>,
    dense: u64,
    sparse: HashSet<u64>,
}

impl IdSet {
    fn new(dense: usize) -> IdSet {
        IdSet { bits: Vec::new(), dense: dense as u64, sparse: HashSet::new() }
    }

    /// The bitmap's bytes at the most while it grew (its old and new blocks).
    fn bitmap_bytes(&self) -> u64 {
        self.bits.capacity() as u64 * 8 * 3 / 2
    }

    /// Readies the set for `id` with the allocation charged: the bitmap grown as a vector
    /// ([`Meter::grow`]), or a new entry of the hash set above it.
    fn ready(&mut self, id: u64, meter: &mut Meter) -> R<()> {
        if id < self.dense {
            let w = (id / 64) as usize;
            if w >= self.bits.len() {
                let more = w + 1 - self.bits.len();
                meter.grow(&mut self.bits, more)?;
            }
            Ok(())
        } else if !self.sparse.contains(&id) {
            meter.charge(hash_entry(8))
        } else {
            Ok(())
        }
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
    b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x))
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
            op::MARK
            | op::POP
            | op::POP_MARK
            | op::DUP
            | op::NONE
            | op::BINPERSID
            | op::REDUCE
            | op::APPEND
            | op::BUILD
            | op::DICT
            | op::EMPTY_DICT
            | op::APPENDS
            | op::LIST
            | op::EMPTY_LIST
            | op::OBJ
            | op::SETITEM
            | op::TUPLE
            | op::EMPTY_TUPLE
            | op::SETITEMS
            | op::NEWOBJ
            | op::TUPLE1..=op::NEWFALSE
            | op::EMPTY_SET..=op::MEMOIZE
            | op::NEXT_BUFFER
            | op::READONLY_BUFFER => Some(i),
            op::STOP => break,
            op::BININT1 | op::PROTO | op::BINPUT | op::EXT1 => Some(i + 1),
            op::BINGET => {
                if let Some(&id) = data.get(i) {
                    fetched.insert(u64::from(id));
                }
                Some(i + 1)
            }
            op::BININT2 | op::EXT2 => Some(i + 2),
            op::BININT | op::LONG_BINPUT | op::EXT4 => Some(i + 4),
            op::LONG_BINGET => {
                if let Some(b) = data.get(i..i + 4) {
                    fetched.insert(le(b));
                }
                Some(i + 4)
            }
            op::BINFLOAT | op::FRAME => Some(i + 8),
            op::SHORT_BINSTRING | op::SHORT_BINBYTES | op::SHORT_BINUNICODE | op::LONG1 => {
                data.get(i).map(|&l| i + 1 + l as usize)
            }
            op::BINSTRING | op::BINUNICODE | op::BINBYTES | op::LONG4 => {
                data.get(i..i + 4).and_then(|b| usize::try_from(le(b)).ok()).and_then(|l| (i + 4).checked_add(l))
            }
            op::BINUNICODE8 | op::BINBYTES8 | op::BYTEARRAY8 => {
                data.get(i..i + 8).and_then(|b| usize::try_from(le(b)).ok()).and_then(|l| (i + 8).checked_add(l))
            }
            op::GET => line_end(i).inspect(|&e| {
                if let Some(id) = parse_id(&data[i..e - 1]) {
                    fetched.insert(id);
                }
            }),
            op::FLOAT | op::INT | op::LONG | op::STRING | op::UNICODE | op::PERSID | op::PUT => line_end(i),
            op::GLOBAL | op::INST => line_end(i).and_then(line_end),
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

/// The value of an item already embedded ([`Vm::embed_from`]).
fn value_of(it: Item) -> Value {
    match it {
        Item::V(v) => v,
        Item::H(_) => Value::None,
    }
}

/// The value at stack index `i` (or in the slot it refers to), to modify.
fn target_in<'s>(stack: &'s mut [Item], slots: &'s mut [Slot], i: usize, op: u8, offset: usize) -> R<&'s mut Value> {
    match stack.get_mut(i) {
        Some(Item::V(v)) => Ok(v),
        Some(Item::H(s)) => match &mut slots[*s as usize] {
            Slot::Open(v) => Ok(v),
            Slot::Frozen(_) => Err(PickleError::Cycle { offset }),
        },
        None => Err(PickleError::Invalid { opcode: op_name(op), offset, reason: "the stack is empty".into() }),
    }
}

/// A float that is NaN: the memo and DUP share it (as an object with an identity, which Python
/// keys use), rather than copying it.
fn is_nan(v: &Value) -> bool {
    matches!(v, Value::Float(f) if f.is_nan())
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
            | Value::Py2Str(_)
            | Value::Bytes(_)
            | Value::Global(_)
    )
}

/// Heap bytes of a scalar's copy.
fn heap(v: &Value) -> u64 {
    match v {
        Value::Str(s) | Value::Py2Str(s) => str_heap(s.len()),
        Value::Bytes(b) | Value::ByteArray(b) => b.len() as u64,
        Value::BigInt(b) => 32 + b.bits().div_ceil(64) * 8,
        Value::Global(g) => std::mem::size_of::<Global>() as u64 + (g.module.len() + g.name.len()) as u64,
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

/// The memory budget of one decode: the heap bytes the decoder holds, charged before each
/// allocation (and a growing vector's old block given back once it is freed).
struct Meter {
    used: u64,
    limit: u64,
    /// Where the current opcode starts, for the error.
    at: usize,
}

impl Meter {
    #[inline]
    fn charge(&mut self, n: u64) -> R<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(PickleError::TooLarge { limit: self.limit, offset: self.at });
        }
        Ok(())
    }

    #[inline]
    fn refund(&mut self, n: u64) {
        self.used = self.used.saturating_sub(n);
    }

    /// Makes room in `v` for `n` more items (doubling, see [`key::grown_capacity`]): the new block
    /// is charged before it is allocated, and the old one (alive while the items move) given
    /// back after.
    #[inline]
    fn grow<T>(&mut self, v: &mut Vec<T>, n: usize) -> R<()> {
        if v.capacity() - v.len() >= n {
            return Ok(());
        }
        self.grow_slow(v, n)
    }

    #[inline(never)]
    fn grow_slow<T>(&mut self, v: &mut Vec<T>, n: usize) -> R<()> {
        let size = std::mem::size_of::<T>() as u64;
        let old = v.capacity() as u64 * size;
        let need = v.len().saturating_add(n);
        self.charge(key::grown_capacity(v.capacity(), need) as u64 * size)?;
        key::reserve_vec(v, n);
        self.refund(old);
        Ok(())
    }

    /// Makes room in a dict or set's storage for `n` more items, charged as [`Meter::grow`].
    #[inline(never)]
    fn grow_store<T>(&mut self, store: &mut key::Store<T>, n: usize, key_of: impl Fn(&T) -> &Value) -> R<()> {
        let old = store.heap_bytes();
        self.charge(store.bytes_after_reserve(n))?;
        key::reserve_store(store, n, key_of)?;
        self.refund(old);
        Ok(())
    }

    /// A vector of exactly `n` items, charged.
    fn vec_exact<T>(&mut self, n: usize) -> R<Vec<T>> {
        self.charge(n as u64 * std::mem::size_of::<T>() as u64)?;
        Ok(Vec::with_capacity(n))
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
    meter: Meter,
    refuse_objects: bool,
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
        meter: Meter { used: 0, limit, at: 0 },
        refuse_objects: options.objects == ObjectPolicy::Refuse,
        fetched,
    };
    // The first pass's id set (its bitmap, and its hash set at the most a hash set takes per
    // entry while it grows), then the memo, exactly.
    let prescanned = vm.fetched.bitmap_bytes() + vm.fetched.sparse.len() as u64 * hash_entry(8);
    vm.meter.charge(prescanned)?;
    vm.memo_dense = vm.meter.vec_exact(dense)?;
    vm.memo_dense.resize(dense, None);
    let work = key::WorkBudget::new(work_budget(data.len()));
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
        self.meter.charge(n)
    }

    /// Pushes onto the VM stack, growing it (charged) when it is full.
    #[inline]
    fn push_item(&mut self, item: Item) -> R<()> {
        if self.stack.len() == self.stack.capacity() {
            self.meter.grow(&mut self.stack, 1)?;
        }
        self.stack.push(item);
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

    /// Pushes a value: its 32 bytes are the stack's (charged as its capacity); its heap bytes
    /// were charged by the caller.
    #[inline]
    fn push(&mut self, v: Value) -> R<()> {
        self.push_item(Item::V(v))
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
        self.charge(str_heap(b.len()))?;
        let s = self.str_of(b)?;
        self.push(Value::Str(s))
    }

    fn push_bytes(&mut self, b: &[u8], array: bool) -> R<()> {
        // Exact: `to_vec`.
        self.charge(b.len() as u64)?;
        self.push(if array { Value::ByteArray(b.to_vec()) } else { Value::Bytes(b.to_vec()) })
    }

    /// A Python 2 `str`: `Py2Str` when ASCII (Python 3 reads it as a `str`; the encoder writes
    /// it back to Python 2 as a `str`), else `Bytes`.
    fn push_py2_str(&mut self, b: &[u8]) -> R<()> {
        self.charge(b.len() as u64)?;
        if b.is_ascii() {
            let s = std::str::from_utf8(b).map_err(|_| self.invalid("not ASCII"))?;
            self.push(Value::Py2Str(s.into()))
        } else {
            self.push(Value::Bytes(b.to_vec()))
        }
    }

    fn push_long_bytes(&mut self, b: &[u8]) -> R<()> {
        if b.len() <= 8 {
            let mut v: i64 = 0;
            for (i, &x) in b.iter().enumerate() {
                v |= i64::from(x) << (8 * i);
            }
            if let Some(&last) = b.last()
                && b.len() < 8
                && last & 0x80 != 0
            {
                v |= -1i64 << (8 * b.len());
            }
            return self.push(Value::Int(v));
        }
        // The box, the digits, and the copy a negative number is converted through.
        self.charge(48 + 2 * b.len() as u64)?;
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
                self.charge(64 + 2 * t.len() as u64)?;
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
        self.charge(64 + 2 * t.len() as u64)?;
        match t.parse::<BigInt>() {
            Ok(b) => self.push(Value::int(b)),
            Err(_) => Err(self.invalid(format!("{t:?} is not an integer"))),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> R<()> {
        // The box, the two strings (a Python 2 module name may map to a longer one).
        self.charge(std::mem::size_of::<Global>() as u64 + (module.len() + name.len()) as u64 + 16)?;
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
                        self.meter.charge(ARC)?;
                        let a = Arc::new(std::mem::replace(v, Value::None));
                        *slot = Slot::Frozen(a.clone());
                        a
                    }
                };
                Ok(Value::Shared(arc))
            }
        }
    }

    /// Embeds the items above stack index `k` where they are (a handle becomes its shared
    /// value; nothing is allocated but the `Arc` of a slot frozen now).
    #[inline(never)]
    fn embed_from(&mut self, k: usize) -> R<()> {
        for i in k..self.stack.len() {
            let needs = match &self.stack[i] {
                Item::H(_) => true,
                Item::V(Value::Global(_)) => self.refuse_objects,
                Item::V(_) => false,
            };
            if needs {
                let it = std::mem::replace(&mut self.stack[i], Item::V(Value::None));
                let v = self.embed(it)?;
                self.stack[i] = Item::V(v);
            }
        }
        Ok(())
    }

    /// The items above stack index `k`, embedded, moved into a vector of exactly their number
    /// (charged): the stack keeps its capacity, and no other copy is made.
    #[inline(never)]
    fn take_from(&mut self, k: usize) -> R<Vec<Value>> {
        self.embed_from(k)?;
        let mut out = self.meter.vec_exact(self.stack.len() - k)?;
        out.extend(self.stack.drain(k..).map(value_of));
        Ok(out)
    }

    /// The value at stack index `i`, to modify, with the meter beside it.
    fn target(&mut self, i: usize) -> R<(&mut Value, &mut Meter)> {
        let offset = self.start;
        let v = target_in(&mut self.stack, &mut self.slots, i, self.op, offset)?;
        Ok((v, &mut self.meter))
    }

    fn memo_get(&self, id: u64) -> Option<&Memo> {
        if (id as usize as u64) == id && (id as usize) < self.memo_dense.len() {
            self.memo_dense[id as usize].as_ref()
        } else {
            self.memo_sparse.get(&id)
        }
    }

    /// Stores a memo entry; a new entry of the sparse memo (an id beyond the input's length) is
    /// charged as a hash map entry first. (The dense memo was charged whole.)
    fn memo_set(&mut self, id: u64, m: Memo) -> R<()> {
        if (id as usize as u64) == id && (id as usize) < self.memo_dense.len() {
            self.memo_dense[id as usize] = Some(m);
        } else {
            if !self.memo_sparse.contains_key(&id) {
                self.meter.charge(hash_entry(std::mem::size_of::<(u64, Memo)>()))?;
            }
            self.memo_sparse.insert(id, m);
        }
        Ok(())
    }

    /// Moves the top of the stack into a new slot (charged), leaving a handle.
    fn top_to_slot(&mut self) -> R<u32> {
        let n = self.slots.len() as u32;
        if self.slots.len() == self.slots.capacity() {
            self.meter.grow(&mut self.slots, 1)?;
        }
        let Some(top) = self.stack.last_mut() else { return Err(self.invalid("the stack is empty")) };
        let Item::V(v) = std::mem::replace(top, Item::H(n)) else { return Err(self.invalid("not a value")) };
        self.slots.push(Slot::Open(v));
        Ok(n)
    }

    fn put(&mut self, id: u64) -> R<()> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid("the stack is empty"));
        }
        self.present.ready(id, &mut self.meter)?;
        if self.present.insert(id) {
            self.memo_len += 1;
        }
        if !self.fetched.contains(id) {
            return Ok(());
        }
        let m = match self.stack.last() {
            Some(Item::H(s)) => Memo::Slot(*s),
            Some(Item::V(v)) if is_scalar(v) && !is_nan(v) => {
                self.meter.charge(heap(v))?;
                Memo::Scalar(v.clone())
            }
            Some(Item::V(_)) => Memo::Slot(self.top_to_slot()?),
            None => return Err(self.invalid("the stack is empty")),
        };
        self.memo_set(id, m)
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
        self.push_item(item)
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
        let v = match plain_reduce(&class, args, &mut self.meter)? {
            Ok(v) => v,
            Err(args) => {
                if (class.module.as_str(), class.name.as_str()) == ("copyreg", "_reconstructor")
                    && matches!(args.as_slice(), Some([Value::Global(_), _, _]))
                {
                    if let Ok(mut parts) = into_items(args) {
                        let state = parts.pop().unwrap_or(Value::None);
                        let base = parts.pop().unwrap_or(Value::None);
                        if let Some(Value::Global(cls)) = parts.pop() {
                            let mut rest = self.meter.vec_exact(2)?;
                            rest.extend([base, state]);
                            let v =
                                self.make_object(*cls, ObjectKind::Reconstructor, Value::Tuple(List(rest)), None)?;
                            return self.push_item(Item::V(v));
                        }
                    }
                    return Err(self.invalid("copyreg._reconstructor with shared arguments"));
                }
                self.make_object(class, ObjectKind::Reduce, args, None)?
            }
        };
        self.push_item(Item::V(v))
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let Some(&op) = self.data.get(self.pos) else {
                return Err(PickleError::NoStop { offset: self.data.len() });
            };
            self.start = self.pos;
            self.meter.at = self.pos;
            self.op = op;
            self.pos += 1;
            match op {
                op::STOP => {
                    let item = self.pop()?;
                    return self.embed(item);
                }
                op::MARK => {
                    if self.marks.len() == self.marks.capacity() {
                        self.meter.grow(&mut self.marks, 1)?;
                    }
                    self.marks.push(self.stack.len());
                }
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BININT1 => {
                    let b = self.byte()?;
                    self.push(Value::Int(i64::from(b)))?;
                }
                op::BININT2 => {
                    let n = self.uint(2)?;
                    self.push(Value::Int(n as i64))?;
                }
                op::BININT => {
                    let n = self.uint(4)? as u32 as i32;
                    self.push(Value::Int(i64::from(n)))?;
                }
                op::LONG1 => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_long_bytes(b)?;
                }
                op::LONG4 => {
                    let n = self.uint(4)? as u32 as i32;
                    if n < 0 {
                        return Err(self.invalid("LONG pickle has negative byte count"));
                    }
                    let b = self.take(n as usize)?;
                    self.push_long_bytes(b)?;
                }
                op::BINFLOAT => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?;
                }
                op::FLOAT => {
                    let l = self.line()?;
                    let f = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<f64>().ok());
                    match f {
                        Some(f) => self.push(Value::Float(f))?,
                        None => return Err(self.invalid("not a float")),
                    }
                }
                op::INT => {
                    let l = self.line()?;
                    self.push_int_text(l, true)?;
                }
                op::LONG => {
                    let l = self.line()?;
                    self.push_int_text(l, false)?;
                }
                op::SHORT_BINUNICODE => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                op::BINUNICODE => {
                    let n = self.len_arg(4)?;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                op::BINUNICODE8 => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                op::UNICODE => {
                    let l = self.line()?;
                    // The decoded `String` (at most the line's length) and the str made of it.
                    self.charge(l.len() as u64 + str_heap(l.len()))?;
                    let s = raw_unicode_escape(l).ok_or_else(|| self.invalid("bad \\u escape"))?;
                    self.push(Value::Str(s.into()))?;
                }
                op::SHORT_BINBYTES => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?;
                }
                op::BINBYTES => {
                    let n = self.len_arg(4)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?;
                }
                op::BINBYTES8 => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, false)?;
                }
                op::BYTEARRAY8 => {
                    let n = self.len_arg(8)?;
                    let b = self.take(n)?;
                    self.push_bytes(b, true)?;
                }
                op::SHORT_BINSTRING => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    self.push_py2_str(b)?;
                }
                op::BINSTRING => {
                    let n = self.uint(4)? as u32 as i32;
                    if n < 0 {
                        return Err(self.invalid("BINSTRING pickle has negative byte count"));
                    }
                    let b = self.take(n as usize)?;
                    self.push_py2_str(b)?;
                }
                op::STRING => {
                    let l = self.line()?;
                    let inner = match l {
                        [q, inner @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => inner,
                        _ => return Err(self.invalid("the STRING opcode argument must be quoted")),
                    };
                    let b = escape_decode(inner).ok_or_else(|| self.invalid("bad escape in STRING"))?;
                    self.push_py2_str(&b)?;
                }
                op::EMPTY_TUPLE => self.push(Value::Tuple(List::new()))?,
                op::EMPTY_LIST => self.push(Value::List(List::new()))?,
                op::EMPTY_DICT => self.push(Value::Dict(Dict::new()))?,
                op::EMPTY_SET => self.push(Value::Set(Set::new()))?,
                op::TUPLE1..=op::TUPLE3 => {
                    let n = (op - op::TUPLE1) as usize + 1;
                    if self.stack.len() < self.fence() + n {
                        return Err(self.invalid("the stack is empty (unpickling stack underflow)"));
                    }
                    let items = self.take_from(self.stack.len() - n)?;
                    self.push(Value::Tuple(List(items)))?;
                }
                op::TUPLE => {
                    let k = self.pop_mark()?;
                    let items = self.take_from(k)?;
                    self.push(Value::Tuple(List(items)))?;
                }
                op::LIST => {
                    let k = self.pop_mark()?;
                    let items = self.take_from(k)?;
                    self.push(Value::List(List(items)))?;
                }
                op::DICT => {
                    let k = self.pop_mark()?;
                    if !(self.stack.len() - k).is_multiple_of(2) {
                        return Err(self.invalid("odd number of items for DICT"));
                    }
                    self.embed_from(k)?;
                    let mut d = Dict::new();
                    self.meter.grow_store(&mut d.store, (self.stack.len() - k) / 2, |e| &e.0)?;
                    let mut it = self.stack.drain(k..).map(value_of);
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.insert(k, v)?;
                    }
                    drop(it);
                    self.push(Value::Dict(d))?;
                }
                op::FROZENSET => {
                    let k = self.pop_mark()?;
                    self.embed_from(k)?;
                    let mut s = Set::new();
                    self.meter.grow_store(&mut s.store, self.stack.len() - k, |e| e)?;
                    for v in self.stack.drain(k..).map(value_of) {
                        s.insert(v)?;
                    }
                    self.push(Value::FrozenSet(s))?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let v = self.embed(item)?;
                    let i = self.stack.len().wrapping_sub(1);
                    self.extend_list(i, std::iter::once(v), 1)?;
                }
                op::APPENDS => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no list below the MARK"));
                    }
                    self.embed_from(k)?;
                    self.extend_from_stack(k)?;
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let v = self.embed(v)?;
                    let k = self.pop()?;
                    let k = self.embed(k)?;
                    let i = self.stack.len().wrapping_sub(1);
                    self.set_items(i, [k, v].into_iter(), 1)?;
                }
                op::SETITEMS => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no dict below the MARK"));
                    }
                    if !(self.stack.len() - k).is_multiple_of(2) {
                        return Err(self.invalid("odd number of items for SETITEMS"));
                    }
                    self.embed_from(k)?;
                    self.set_items_from_stack(k)?;
                }
                op::ADDITEMS => {
                    let k = self.pop_mark()?;
                    if k == 0 {
                        return Err(self.invalid("no set below the MARK"));
                    }
                    self.embed_from(k)?;
                    let n = self.stack.len() - k;
                    let (head, tail) = self.stack.split_at_mut(k);
                    match target_in(head, &mut self.slots, k - 1, op, self.start)? {
                        Value::Set(s) => {
                            self.meter.grow_store(&mut s.store, n, |e| e)?;
                            for it in tail.iter_mut() {
                                s.insert(value_of(std::mem::replace(it, Item::V(Value::None))))?;
                            }
                        }
                        other => {
                            let t = other.type_name();
                            return Err(PickleError::Invalid {
                                opcode: "ADDITEMS",
                                offset: self.start,
                                reason: format!("cannot add items to a {t}"),
                            });
                        }
                    }
                    self.stack.truncate(k);
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let state = self.embed(state)?;
                    let offset = self.start;
                    let i = self.stack.len().wrapping_sub(1);
                    match self.target(i)?.0 {
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
                op::POP => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    let k = self.pop_mark()?;
                    self.stack.truncate(k);
                }
                op::DUP => {
                    if self.stack.len() <= self.fence() {
                        return Err(self.invalid("the stack is empty"));
                    }
                    let dup = match self.stack.last() {
                        Some(Item::H(s)) => Item::H(*s),
                        Some(Item::V(v)) if is_scalar(v) && !is_nan(v) => {
                            self.meter.charge(heap(v))?;
                            Item::V(v.clone())
                        }
                        Some(Item::V(_)) => Item::H(self.top_to_slot()?),
                        None => return Err(self.invalid("the stack is empty")),
                    };
                    self.push_item(dup)?;
                }
                op::PUT => {
                    let l = self.line()?;
                    let id = parse_id(l).ok_or_else(|| self.invalid("bad memo id"))?;
                    self.put(id)?;
                }
                op::BINPUT => {
                    let id = u64::from(self.byte()?);
                    self.put(id)?;
                }
                op::LONG_BINPUT => {
                    let id = self.uint(4)?;
                    self.put(id)?;
                }
                op::MEMOIZE => {
                    let id = self.memo_len;
                    self.put(id)?;
                }
                op::GET => {
                    let l = self.line()?;
                    let id = parse_id(l).ok_or_else(|| self.invalid("bad memo id"))?;
                    self.get(id)?;
                }
                op::BINGET => {
                    let id = u64::from(self.byte()?);
                    self.get(id)?;
                }
                op::LONG_BINGET => {
                    let id = self.uint(4)?;
                    self.get(id)?;
                }
                op::GLOBAL => {
                    let m = self.line()?;
                    let n = self.line()?;
                    // The two names read (freed at once; charged, not given back).
                    self.charge(str_heap(m.len()) + str_heap(n.len()))?;
                    let m = self.str_of(m)?;
                    let n = self.str_of(n)?;
                    self.global(&m, &n)?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Item::V(Value::Str(m) | Value::Py2Str(m)), Item::V(Value::Str(n) | Value::Py2Str(n))) => {
                            self.meter.charge(str_heap(m.len()) + str_heap(n.len()))?;
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?;
                        }
                        _ => return Err(self.invalid("STACK_GLOBAL requires str")),
                    }
                }
                op::REDUCE => self.reduce()?,
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let args = self.embed(args)?;
                    let class = self.pop_global("the class of NEWOBJ")?;
                    let v = self.make_object(class, ObjectKind::NewObj, args, None)?;
                    self.push_item(Item::V(v))?;
                }
                op::NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let kwargs = self.embed(kwargs)?;
                    let args = self.pop()?;
                    let args = self.embed(args)?;
                    let class = self.pop_global("the class of NEWOBJ_EX")?;
                    let v = self.make_object(class, ObjectKind::NewObjEx, args, Some(kwargs))?;
                    self.push_item(Item::V(v))?;
                }
                op::INST => {
                    let m = self.line()?;
                    let n = self.line()?;
                    self.charge(str_heap(m.len()) + str_heap(n.len()))?;
                    let m = self.str_of(m)?;
                    let n = self.str_of(n)?;
                    let k = self.pop_mark()?;
                    let items = self.take_from(k)?;
                    self.charge(std::mem::size_of::<Global>() as u64 + (m.len() + n.len()) as u64 + 16)?;
                    let class = Global { module: py3_module(&m, &n), name: n.into() };
                    let v = self.make_object(class, ObjectKind::Inst, Value::Tuple(List(items)), None)?;
                    self.push(v)?;
                }
                op::OBJ => {
                    let k = self.pop_mark()?;
                    let class = match self.stack.get_mut(k) {
                        None => return Err(self.invalid("OBJ needs a class")),
                        Some(Item::V(Value::Global(g))) => std::mem::replace(&mut **g, Global::new("", "")),
                        Some(_) => return Err(self.invalid("the class of OBJ must be a global")),
                    };
                    let items = self.take_from(k + 1)?;
                    self.stack.truncate(k);
                    let v = self.make_object(class, ObjectKind::Inst, Value::Tuple(List(items)), None)?;
                    self.push(v)?;
                }
                op::PROTO => {
                    let p = self.byte()?;
                    if p > 5 {
                        return Err(self.invalid(format!("unsupported pickle protocol: {p}")));
                    }
                }
                op::FRAME => {
                    self.len_arg(8)?;
                }
                op::PERSID | op::BINPERSID => {
                    return Err(PickleError::Unsupported {
                        opcode: op_name(op),
                        offset: self.start,
                        why: "persistent ids need a persistent_load of the sender's program",
                    });
                }
                op::EXT1..=op::EXT4 => {
                    return Err(PickleError::Unsupported {
                        opcode: op_name(op),
                        offset: self.start,
                        why: "the copyreg extension registry is not supported",
                    });
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
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

    /// APPEND: `n` values into the list (or object) at stack index `i`, its storage grown
    /// (charged) first.
    fn extend_list(&mut self, i: usize, items: impl Iterator<Item = Value>, n: usize) -> R<()> {
        let (op, offset) = (self.op, self.start);
        let (target, meter) = self.target(i)?;
        let list = match target {
            Value::List(l) => &mut l.0,
            Value::Object(o) => &mut o.list_items,
            other => {
                let t = other.type_name();
                return Err(PickleError::Invalid {
                    opcode: op_name(op),
                    offset,
                    reason: format!("cannot append to a {t}"),
                });
            }
        };
        meter.grow(list, n)?;
        list.extend(items);
        Ok(())
    }

    /// APPENDS: the (embedded) values above stack index `k` into the list below it, moved out
    /// of the stack one by one (no intermediate vector).
    #[inline(never)]
    fn extend_from_stack(&mut self, k: usize) -> R<()> {
        let n = self.stack.len() - k;
        let (head, tail) = self.stack.split_at_mut(k);
        let target = target_in(head, &mut self.slots, k - 1, self.op, self.start)?;
        let list = match target {
            Value::List(l) => &mut l.0,
            Value::Object(o) => &mut o.list_items,
            other => {
                let t = other.type_name();
                return Err(self.invalid(format!("cannot append to a {t}")));
            }
        };
        self.meter.grow(list, n)?;
        list.extend(tail.iter_mut().map(|it| value_of(std::mem::replace(it, Item::V(Value::None)))));
        self.stack.truncate(k);
        Ok(())
    }

    /// SETITEM: `n` key-value pairs (`items` alternate) into the dict (or object) at stack
    /// index `i`, its storage grown (charged) first.
    fn set_items(&mut self, i: usize, items: impl Iterator<Item = Value>, n: usize) -> R<()> {
        let (op, offset) = (self.op, self.start);
        let mut pair: Vec<Item> = items.map(Item::V).collect();
        let (target, meter) = self.target(i)?;
        insert_pairs(target, meter, &mut pair, n, op, offset)
    }

    /// SETITEMS: the (embedded) pairs above stack index `k` into the dict below it.
    #[inline(never)]
    fn set_items_from_stack(&mut self, k: usize) -> R<()> {
        let n = (self.stack.len() - k) / 2;
        let (head, tail) = self.stack.split_at_mut(k);
        let target = target_in(head, &mut self.slots, k - 1, self.op, self.start)?;
        insert_pairs(target, &mut self.meter, tail, n, self.op, self.start)?;
        self.stack.truncate(k);
        Ok(())
    }
}

/// Inserts `n` key-value pairs into a dict (or an object's dict items), growing its storage
/// (charged) first, so inserting allocates nothing more.
fn insert_pairs(target: &mut Value, meter: &mut Meter, items: &mut [Item], n: usize, op: u8, offset: usize) -> R<()> {
    let take = |it: &mut Item| value_of(std::mem::replace(it, Item::H(0)));
    match target {
        Value::Dict(d) => {
            meter.grow_store(&mut d.store, n, |e| &e.0)?;
            for pair in items.chunks_exact_mut(2) {
                let (k, v) = pair.split_at_mut(1);
                d.insert(take(&mut k[0]), take(&mut v[0]))?;
            }
        }
        Value::Object(o) => {
            meter.grow(&mut o.dict_items, n)?;
            for pair in items.chunks_exact_mut(2) {
                let (k, v) = pair.split_at_mut(1);
                o.dict_items.push((take(&mut k[0]), take(&mut v[0])));
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
    Ok(())
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
/// What it allocates is charged to `meter` first.
fn plain_reduce(class: &Global, args: Value, meter: &mut Meter) -> R<Result<Value, Value>> {
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
    // A copy of bytes, or a str's latin-1 bytes (at most its length).
    let copied = match items.as_slice() {
        [Value::Bytes(b)] => b.len(),
        [Value::Str(s), _] => s.len(),
        _ => 0,
    };
    meter.charge(copied as u64)?;
    let out = match ((m, n), items.as_slice()) {
        (("_codecs", "encode"), [Value::Str(s) | Value::Py2Str(s), Value::Str(e) | Value::Py2Str(e)])
            if is_latin1_name(e) =>
        {
            latin1(s).map(Value::Bytes)
        }
        (("builtins", "bytes"), []) => Some(Value::Bytes(Vec::new())),
        (("builtins", "bytes"), [Value::Bytes(b)]) => Some(Value::Bytes(b.clone())),
        (("builtins", "bytearray"), []) => Some(Value::ByteArray(Vec::new())),
        (("builtins", "bytearray"), [Value::Bytes(b)]) => Some(Value::ByteArray(b.clone())),
        (("builtins", "bytearray"), [Value::Str(s) | Value::Py2Str(s), Value::Str(e) | Value::Py2Str(e)])
            if is_latin1_name(e) =>
        {
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
            Err(arg) => {
                items.push(arg);
                return Ok(Err(Value::Tuple(List(items))));
            }
        };
        let mut s = Set::new();
        meter.grow_store(&mut s.store, elems.len(), |e| e)?;
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
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
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
