//! Python's key semantics: hashing and equality of values, and the dict / set index built on them.
//!
//! Why a module of its own: dict keys and set elements must behave as in Python (`1 == 1.0 ==
//! True`, `'a' != b'a'`, tuples and frozensets as keys, NaN never equal, lists unhashable), and
//! must do so on hostile input without recursion on depth and without quadratic time. Hashing is
//! iterative (frozensets hash order-independently); equality is an iterative lockstep walk that
//! sees through [`Value::Shared`] and shortcuts on identity (the same object is equal to itself,
//! as CPython's `PyObject_RichCompareBool`). Only a lookup inside a nested set or dict (a
//! frozenset inside a frozenset key) recurses, and that is bounded by [`MAX_KEY_DEPTH`]; deeper,
//! two keys are equal when their keyed 64-bit hashes are.
//!
//! **Every hash, probe and comparison is charged** to one per-decode work budget ([`WorkBudget`],
//! steps proportional to the input's length): a leaf hash or comparison costs one step plus one
//! per 64 bytes it reads, a tuple or frozenset one step per element, a probe of the hash index one
//! step per candidate. So the total work of keys is linear in the input whatever it holds.
//!
//! **NaN hashes by identity**, as in CPython 3.10+: a NaN is equal to nothing but itself, so
//! hashing NaNs by value put every NaN in one probe chain (a set of N NaNs took N²/2 probes).
//! Identity here: a NaN behind a [`Value::Shared`] (a memoised NaN fetched again, a DUP) is the
//! object inside the `Arc`; a NaN inside a tuple or frozenset is its place in that container's
//! heap buffer (immutable once built); a NaN that is the key itself is a fresh object, equal to
//! nothing else (a fresh number each time it is hashed).

use std::cell::Cell;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use num_bigint::BigInt;
use num_traits::FromPrimitive;

use super::PickleError;
use super::value::{Dict, Object, Set, Value};

/// Dicts and sets with more entries than this keep a hash index; smaller ones are scanned.
const INDEX_AT: usize = 8;

/// How deep lookups inside nested sets and dicts (a frozenset in a frozenset in a key) may go
/// when comparing; beyond it two keys are equal when their keyed 64-bit hashes are.
pub const MAX_KEY_DEPTH: usize = 64;

/// The hash index of a big dict or set: (hash, position) pairs.
#[derive(Clone, Default)]
pub(crate) struct Index {
    table: hashbrown::HashTable<(u64, u32)>,
}

/// The storage of a dict's entries or a set's elements: a plain vector while small, the vector
/// and its hash index once big. An enum so that it takes 24 bytes, as a `Vec` (the vector's
/// capacity has room for the tag), which keeps [`Value`] at 32 bytes.
#[derive(Clone)]
pub(crate) enum Store<T> {
    Small(Vec<T>),
    Big(Box<(Vec<T>, Index)>),
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store::Small(Vec::new())
    }
}

impl<T> Store<T> {
    pub(crate) fn slice(&self) -> &[T] {
        match self {
            Store::Small(v) => v,
            Store::Big(b) => &b.0,
        }
    }

    pub(crate) fn index(&self) -> Option<&Index> {
        match self {
            Store::Small(_) => None,
            Store::Big(b) => Some(&b.1),
        }
    }

    /// A copy of the index, for a copy of the store with the same keys in the same places.
    pub(crate) fn index_clone(&self) -> Option<Index> {
        self.index().cloned()
    }

    pub(crate) fn take(&mut self) -> Vec<T> {
        match std::mem::take(self) {
            Store::Small(v) => v,
            Store::Big(b) => b.0,
        }
    }

    /// The heap bytes the store holds: the vector's capacity, and for a big store its box and
    /// its index table (as hashbrown lays it out: 16-byte entries, one control byte each, one
    /// group of 16 more).
    pub(crate) fn heap_bytes(&self) -> u64 {
        match self {
            Store::Small(v) => vec_bytes(v.capacity(), size_of::<T>()),
            Store::Big(b) => {
                BIG_BOX::<T>() + vec_bytes(b.0.capacity(), size_of::<T>()) + table_bytes(b.1.table.capacity())
            }
        }
    }

    /// The heap bytes [`Store::reserve`] for `n` more items would leave the store holding (an
    /// upper bound; computed without allocating, to be charged first).
    pub(crate) fn bytes_after_reserve(&self, n: usize) -> u64 {
        let v = self.slice();
        let need = v.len().saturating_add(n);
        let cap = match self {
            Store::Small(v) => v.capacity(),
            Store::Big(b) => b.0.capacity(),
        };
        let vec = vec_bytes(grown_capacity(cap, need), size_of::<T>());
        if need <= INDEX_AT && matches!(self, Store::Small(_)) {
            return vec;
        }
        let table = match self {
            Store::Small(_) => table_bytes_for(need),
            Store::Big(b) if b.1.table.capacity() >= need => table_bytes(b.1.table.capacity()),
            Store::Big(b) => table_bytes_for(need.max(b.1.table.capacity() + 1)),
        };
        BIG_BOX::<T>() + vec + table
    }
}

/// The bytes of a vector of `cap` items of `size` bytes.
fn vec_bytes(cap: usize, size: usize) -> u64 {
    cap as u64 * size as u64
}

/// The box of a big store.
#[allow(non_snake_case)]
const fn BIG_BOX<T>() -> u64 {
    size_of::<(Vec<T>, Index)>() as u64
}

/// The capacity a vector of capacity `cap` grows to when `need` items must fit: doubling (at
/// least 4), or exactly `need` when that is more. The decoder grows every vector this way, with
/// `reserve_exact`, so it knows the capacity it charges for.
pub(crate) fn grown_capacity(cap: usize, need: usize) -> usize {
    if need <= cap { cap } else { need.max(cap.saturating_mul(2)).max(4) }
}

/// Grows `v` so that `n` more items fit, as [`grown_capacity`] says.
pub(crate) fn reserve_vec<T>(v: &mut Vec<T>, n: usize) {
    let need = v.len().saturating_add(n);
    let cap = grown_capacity(v.capacity(), need);
    if cap > v.capacity() {
        v.reserve_exact(cap - v.len());
    }
}

/// Bytes of a hash index table whose capacity (`HashTable::capacity`) is `cap`.
fn table_bytes(cap: usize) -> u64 {
    if cap == 0 {
        return 0;
    }
    // hashbrown keeps one bucket free below 8 buckets, an eighth of them above.
    let buckets = if cap < 8 { cap + 1 } else { cap / 7 * 8 };
    buckets as u64 * (size_of::<(u64, u32)>() as u64 + 1) + 16
}

/// Bytes of a hash index table made for `cap` items (`with_capacity` / `reserve`): an upper
/// bound of hashbrown's choice (at least 16 buckets below 15 items, else the next power of two
/// of 8/7 of them).
fn table_bytes_for(cap: usize) -> u64 {
    let buckets = if cap < 15 { 16 } else { (cap.saturating_mul(8) / 7).next_power_of_two() };
    buckets as u64 * (size_of::<(u64, u32)>() as u64 + 1) + 16
}

fn state() -> &'static std::collections::hash_map::RandomState {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

fn unhashable(v: &Value) -> PickleError {
    PickleError::Unhashable { type_name: v.type_name(), offset: None }
}

/// Bytes a step of hashing or comparing may read: a leaf costs one step plus one per this many
/// bytes of it.
const BYTES_PER_STEP: usize = 64;

/// The steps of hashing or comparing one leaf (a str, bytes, int, ...): 1 + its bytes / 64.
#[inline]
fn leaf_cost(v: &Value) -> u64 {
    let bytes = match v {
        Value::Str(s) | Value::Py2Str(s) => s.len(),
        Value::Bytes(b) | Value::ByteArray(b) => b.len(),
        Value::BigInt(b) => (b.bits() / 8) as usize,
        Value::Global(g) => g.module.len() + g.name.len(),
        _ => 0,
    };
    1 + (bytes / BYTES_PER_STEP) as u64
}

/// A big int's hash: its sign and 64-bit digits, read in place (no copy).
fn big_hash(b: &BigInt, h: &mut impl Hasher) {
    (2u8, b.sign() == num_bigint::Sign::Minus).hash(h);
    for d in b.iter_u64_digits() {
        h.write_u64(d);
    }
}

/// A fresh identity for a NaN that is the key itself: no other value is that object.
fn fresh_identity() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Hashes one value that is not a tuple or frozenset. `place`: where the value lives when that
/// is its identity (inside an `Arc`, or inside an immutable container); `None` for the key
/// itself. Only NaN hashes by identity.
fn leaf_hash(v: &Value, place: Option<usize>, h: &mut impl Hasher) -> Result<(), PickleError> {
    match v {
        Value::None => 0u8.hash(h),
        Value::Bool(b) => (1u8, i64::from(*b)).hash(h),
        Value::Int(i) => (1u8, *i).hash(h),
        Value::BigInt(b) => match i64::try_from(&**b) {
            Ok(i) => (1u8, i).hash(h),
            Err(_) => big_hash(b, h),
        },
        Value::Float(f) if f.is_nan() => match place {
            Some(p) => (8u8, 0u8, p as u64).hash(h),
            None => (8u8, 1u8, fresh_identity()).hash(h),
        },
        Value::Float(f) => {
            if f.fract() == 0.0 {
                if *f >= -9.223_372_036_854_776e18 && *f < 9.223_372_036_854_776e18 {
                    (1u8, *f as i64).hash(h);
                } else if let Some(b) = BigInt::from_f64(*f) {
                    big_hash(&b, h);
                } else {
                    (3u8, f.to_bits()).hash(h);
                }
            } else {
                (3u8, f.to_bits()).hash(h);
            }
        }
        Value::Str(s) | Value::Py2Str(s) => (4u8, s.as_str()).hash(h),
        Value::Bytes(b) => (5u8, b.as_slice()).hash(h),
        Value::Global(g) => (6u8, &g.module, &g.name).hash(h),
        // Instances hash and compare by identity, as Python's default: the address of the
        // boxed object, which stays put while the value moves and is the same through every
        // `Shared` handle to it.
        Value::Object(o) => (7u8, object_identity(o)).hash(h),
        _ => return Err(unhashable(v)),
    }
    Ok(())
}

/// An object's identity as a key: where its box lives.
fn object_identity(o: &Object) -> usize {
    std::ptr::from_ref::<Object>(o) as usize
}

fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Python's `hash(v)` in spirit: equal keys hash equal; an unhashable value (list, dict, set,
/// bytearray, or a tuple holding one) is [`PickleError::Unhashable`]. Iterative.
pub(crate) fn hash_key(v: &Value) -> Result<u64, PickleError> {
    // The key's own identity, when it has one beyond this call: the object inside its `Arc`.
    let place = matches!(v, Value::Shared(_)).then(|| place_of(v));
    let v = v.resolved();
    if !matches!(v, Value::Tuple(_) | Value::FrozenSet(_)) {
        if !spend(leaf_cost(v)) {
            return Err(PickleError::TooComplex);
        }
        let mut h = state().build_hasher();
        leaf_hash(v, place, &mut h)?;
        return Ok(h.finish());
    }
    // Frames: (items, next position, accumulator, is a frozenset).
    let mut frames: Vec<(&[Value], usize, u64, bool)> = Vec::new();
    fn open(v: &Value) -> Option<(&[Value], usize, u64, bool)> {
        match v {
            Value::Tuple(t) => Some((t.as_slice(), 0, 0x345678, false)),
            Value::FrozenSet(s) => Some((s.as_slice(), 0, 0x9e37_79b9, true)),
            _ => None,
        }
    }
    frames.extend(open(v));
    let mut done: Option<u64> = None;
    while let Some(top) = frames.last_mut() {
        if let Some(h) = done.take() {
            top.2 = if top.3 { top.2.wrapping_add(mix(h)) } else { mix(top.2 ^ h).wrapping_add(top.1 as u64) };
        }
        if top.1 == top.0.len() {
            let (items, _, acc, fset) = frames.pop().unwrap_or((&[], 0, 0, false));
            done = Some(mix(acc ^ (items.len() as u64) ^ if fset { 0x5555 } else { 0xaaaa }));
            continue;
        }
        let child = top.0[top.1].resolved();
        if !spend(leaf_cost(child)) {
            return Err(PickleError::TooComplex);
        }
        top.1 += 1;
        if let Some(f) = open(child) {
            frames.push(f)
        } else {
            // Inside an immutable tuple or frozenset (or an `Arc`), the child stays put:
            // its place is its identity.
            let mut h = state().build_hasher();
            leaf_hash(child, Some(std::ptr::from_ref::<Value>(child) as usize), &mut h)?;
            done = Some(h.finish());
        }
    }
    Ok(done.unwrap_or(0))
}

/// Python's `==` for two values with no containers to walk, or `None` when either is one.
fn scalar_eq(a: &Value, b: &Value) -> Option<bool> {
    use Value::*;
    Some(match (a, b) {
        (None, None) => true,
        (Str(x) | Py2Str(x), Str(y) | Py2Str(y)) => x == y,
        (Bytes(x) | ByteArray(x), Bytes(y) | ByteArray(y)) => x == y,
        (Int(x), Int(y)) => x == y,
        (Float(x), Float(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        (Global(x), Global(y)) => x == y,
        (Int(_) | Bool(_) | BigInt(_) | Float(_), Int(_) | Bool(_) | BigInt(_) | Float(_)) => num_eq(a, b),
        (List(_) | Tuple(_) | Dict(_) | Set(_) | FrozenSet(_) | Object(_) | Shared(_), _)
        | (_, List(_) | Tuple(_) | Dict(_) | Set(_) | FrozenSet(_) | Object(_) | Shared(_)) => return Option::None,
        _ => false,
    })
}

enum Num<'a> {
    I(i64),
    B(&'a BigInt),
    F(f64),
}

fn num(v: &Value) -> Num<'_> {
    match v {
        Value::Int(i) => Num::I(*i),
        Value::Bool(b) => Num::I(i64::from(*b)),
        Value::BigInt(b) => Num::B(b),
        Value::Float(f) => Num::F(*f),
        _ => Num::F(f64::NAN),
    }
}

fn num_eq(a: &Value, b: &Value) -> bool {
    let int_float = |i: &BigInt, f: f64| f.fract() == 0.0 && BigInt::from_f64(f).is_some_and(|g| &g == i);
    match (num(a), num(b)) {
        (Num::I(x), Num::I(y)) => x == y,
        (Num::F(x), Num::F(y)) => x == y,
        (Num::B(x), Num::B(y)) => x == y,
        (Num::I(x), Num::B(y)) | (Num::B(y), Num::I(x)) => BigInt::from(x) == *y,
        (Num::I(x), Num::F(f)) | (Num::F(f), Num::I(x)) => int_float(&BigInt::from(x), f),
        (Num::B(x), Num::F(f)) | (Num::F(f), Num::B(x)) => int_float(x, f),
    }
}

type Work<'a> = Vec<(&'a Value, &'a Value)>;

/// Python's `a == b`.
pub(crate) fn eq(a: &Value, b: &Value) -> bool {
    if let Some(r) = scalar_eq(a, b) {
        return r;
    }
    eq_walk(vec![(a, b)], 0, false)
}

/// Where a value lives, seen through `Shared`: its identity.
#[inline]
fn place_of(v: &Value) -> usize {
    std::ptr::from_ref::<Value>(v.resolved()) as usize
}

/// Python's `a == b` between two keys (`PyObject_RichCompareBool`: the same object is equal to
/// itself, NaN included), charged to the work budget; unequal once the budget is spent.
///
/// Two scalars (no `Shared`, no container) are compared at once: the caller charged the
/// comparison (a step per candidate of a scan or a probe), and what a long str or bytes costs
/// to compare is bounded by its own bytes, which the decoder charged when it made that copy
/// (a key compared more than a few times is behind `Shared`, or inside a tuple, and charged
/// here by its length).
#[inline]
fn eq_at(a: &Value, b: &Value, depth: usize) -> bool {
    if let Some(r) = scalar_eq(a, b) {
        return r;
    }
    if !spend(leaf_cost(a.resolved())) {
        return false;
    }
    if place_of(a) == place_of(b) {
        return true;
    }
    if let Some(r) = scalar_eq(a.resolved(), b.resolved()) {
        return r;
    }
    if depth > MAX_KEY_DEPTH {
        // Deeper than the lookups may recurse: compare the keyed hashes, which are computed
        // without recursion (equal values hash equal; a collision needs the per-process key).
        return matches!((hash_key(a), hash_key(b)), (Ok(x), Ok(y)) if x == y);
    }
    eq_walk(vec![(a, b)], depth, true)
}

fn push_dicts<'a>(x: &'a Dict, y: &'a Dict, depth: usize, work: &mut Work<'a>) -> bool {
    if x.len() != y.len() {
        return false;
    }
    for (k, v) in x.iter() {
        match find_in_dict(y, k, depth + 1) {
            Some(i) => work.push((v, &y.store.slice()[i].1)),
            None => return false,
        }
    }
    true
}

fn sets_equal(x: &Set, y: &Set, depth: usize) -> bool {
    x.len() == y.len() && x.iter().all(|v| find_in_set(y, v, depth + 1).is_some())
}

fn push_objects<'a>(x: &'a Object, y: &'a Object, work: &mut Work<'a>) -> bool {
    if x.class != y.class
        || x.kind != y.kind
        || x.kwargs.is_some() != y.kwargs.is_some()
        || x.state.is_some() != y.state.is_some()
        || x.list_items.len() != y.list_items.len()
        || x.dict_items.len() != y.dict_items.len()
    {
        return false;
    }
    work.push((&x.args, &y.args));
    if let (Some(a), Some(b)) = (&x.kwargs, &y.kwargs) {
        work.push((a, b));
    }
    if let (Some(a), Some(b)) = (&x.state, &y.state) {
        work.push((a, b));
    }
    work.extend(x.list_items.iter().zip(&y.list_items));
    for ((k1, v1), (k2, v2)) in x.dict_items.iter().zip(&y.dict_items) {
        work.push((k1, k2));
        work.push((v1, v2));
    }
    true
}

/// The lockstep walk. `keys`: the pairs are (parts of) dict keys or set members, where class
/// instances are equal only to themselves (Python's default `__eq__` and `__hash__`); elsewhere
/// two instances are equal when built the same way.
fn eq_walk(mut work: Work<'_>, depth: usize, keys: bool) -> bool {
    while let Some((a, b)) = work.pop() {
        let (a, b) = (a.resolved(), b.resolved());
        if !spend(leaf_cost(a)) {
            return false;
        }
        // The same object is equal to itself (Python's identity shortcut in comparisons: a
        // shared NaN, the same shared list through two handles).
        if std::ptr::eq(a, b) {
            continue;
        }
        if let Some(r) = scalar_eq(a, b) {
            if r {
                continue;
            }
            return false;
        }
        let ok = match (a, b) {
            (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
                work.extend(x.iter().zip(y.iter()));
                x.len() == y.len()
            }
            (Value::Dict(x), Value::Dict(y)) => push_dicts(x, y, depth, &mut work),
            (Value::Set(x) | Value::FrozenSet(x), Value::Set(y) | Value::FrozenSet(y)) => sets_equal(x, y, depth),
            (Value::Object(x), Value::Object(y)) if keys => object_identity(x) == object_identity(y),
            (Value::Object(x), Value::Object(y)) => push_objects(x, y, &mut work),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub(crate) fn eq_dicts(x: &Dict, y: &Dict) -> bool {
    let mut work = Vec::new();
    push_dicts(x, y, 0, &mut work) && eq_walk(work, 0, false)
}

pub(crate) fn eq_sets(x: &Set, y: &Set) -> bool {
    sets_equal(x, y, 0)
}

pub(crate) fn eq_objects(x: &Object, y: &Object) -> bool {
    let mut work = Vec::new();
    push_objects(x, y, &mut work) && eq_walk(work, 0, false)
}

thread_local! {
    /// Steps of key hashing and comparison the current decode may still take (unbounded
    /// outside a decode).
    static STEPS: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Takes `n` steps of the work budget; false (and the budget left at zero) once it is spent.
#[inline]
fn spend(n: u64) -> bool {
    STEPS.with(|c| {
        let v = c.get();
        if v < n {
            c.set(0);
            false
        } else {
            c.set(v - n);
            true
        }
    })
}

/// A budget of hashing and comparison steps for one decode: a small pickle could otherwise ask
/// for the same deep tuple key to be hashed and compared in many dicts (quadratic time). Restores
/// the unbounded default when dropped.
pub(crate) struct WorkBudget {
    before: u64,
}

impl WorkBudget {
    pub(crate) fn new(steps: u64) -> WorkBudget {
        WorkBudget { before: STEPS.with(|c| c.replace(steps)) }
    }

    /// The budget ran out: some comparison answered "unequal" without finishing.
    pub(crate) fn spent(&self) -> bool {
        STEPS.with(|c| c.get() == 0)
    }
}

impl Drop for WorkBudget {
    fn drop(&mut self) {
        STEPS.with(|c| c.set(self.before));
    }
}

/// Python's hashability check without computing the hash: tuples are walked (iteratively); a
/// frozenset's elements were checked when it was built, so it is not entered.
fn check_hashable(k: &Value) -> Result<(), PickleError> {
    let mut work: Vec<&Value> = vec![k];
    while let Some(v) = work.pop() {
        if !spend(1) {
            return Err(PickleError::TooComplex);
        }
        match v.resolved() {
            Value::Tuple(t) => work.extend(t.iter().filter(|x| x.is_nested() || matches!(x, Value::ByteArray(_)))),
            Value::List(_) | Value::Dict(_) | Value::Set(_) | Value::ByteArray(_) => return Err(unhashable(v)),
            _ => {}
        }
    }
    Ok(())
}

/// A key whose hash the index never needs: compared by a scan in small containers.
fn fast_key(k: &Value) -> bool {
    matches!(k, Value::Str(_) | Value::Py2Str(_) | Value::Int(_) | Value::None | Value::Bytes(_))
}

/// One probe of a hash index: a candidate whose hash is `hh` for a key whose hash is `h`. Charged
/// one step (a long probe chain is work too); false once the budget is spent.
#[inline]
fn probe(hh: u64, h: u64) -> bool {
    spend(1) && hh == h
}

/// The position of `k` among the keys of a small store (scanned), charged a step per key
/// compared.
#[inline]
fn scan<'a>(keys: impl Iterator<Item = &'a Value>, k: &Value, depth: usize) -> Option<usize> {
    let mut n = 0u64;
    let r = keys.inspect(|_| n += 1).position(|kk| eq_at(kk, k, depth));
    if !spend(n) {
        return None;
    }
    r
}

fn find_in_dict(d: &Dict, k: &Value, depth: usize) -> Option<usize> {
    let entries = d.store.slice();
    match d.store.index() {
        None => scan(entries.iter().map(|(kk, _)| kk), k, depth),
        Some(ix) => {
            let h = hash_key(k).ok()?;
            ix.table
                .find(h, |&(hh, i)| probe(hh, h) && eq_at(&entries[i as usize].0, k, depth))
                .map(|&(_, i)| i as usize)
        }
    }
}

fn find_in_set(s: &Set, k: &Value, depth: usize) -> Option<usize> {
    let items = s.store.slice();
    match s.store.index() {
        None => scan(items.iter(), k, depth),
        Some(ix) => {
            let h = hash_key(k).ok()?;
            ix.table.find(h, |&(hh, i)| probe(hh, h) && eq_at(&items[i as usize], k, depth)).map(|&(_, i)| i as usize)
        }
    }
}

pub(crate) fn dict_find(d: &Dict, k: &Value) -> Option<usize> {
    find_in_dict(d, k, 0)
}

pub(crate) fn set_find(s: &Set, k: &Value) -> Option<usize> {
    find_in_set(s, k, 0)
}

fn build_index<'a>(keys: impl Iterator<Item = &'a Value>) -> Result<Index, PickleError> {
    let mut ix = Index::default();
    for (i, k) in keys.enumerate() {
        let h = hash_key(k)?;
        ix.table.insert_unique(h, (h, i as u32), |&(h, _)| h);
    }
    Ok(ix)
}

/// Where `k` is (`Ok(position)`), or `Err(hash)` to insert it, checking it is hashable.
fn locate<T>(
    store: &Store<T>,
    k: &Value,
    key_of: impl Fn(&T) -> &Value,
) -> Result<Result<usize, Option<u64>>, PickleError> {
    let items = store.slice();
    match store.index() {
        None => {
            if !fast_key(k) {
                check_hashable(k)?;
            }
            Ok(scan(items.iter().map(key_of), k, 0).ok_or(None))
        }
        Some(ix) => {
            let h = hash_key(k)?;
            Ok(ix
                .table
                .find(h, |&(hh, i)| probe(hh, h) && eq_at(key_of(&items[i as usize]), k, 0))
                .map(|&(_, i)| i as usize)
                .ok_or(Some(h)))
        }
    }
}

/// Makes room for `n` more items without any allocation while they are inserted: the vector's
/// capacity (as [`grown_capacity`]) and, beyond [`INDEX_AT`], the index (built now for a small
/// store). What it allocates is at most [`Store::bytes_after_reserve`].
pub(crate) fn reserve_store<T>(
    store: &mut Store<T>,
    n: usize,
    key_of: impl Fn(&T) -> &Value,
) -> Result<(), PickleError> {
    let need = store.slice().len().saturating_add(n);
    match store {
        Store::Small(v) => {
            reserve_vec(v, n);
            if need > INDEX_AT {
                let mut ix = Index { table: hashbrown::HashTable::with_capacity(need) };
                for (i, k) in v.iter().enumerate() {
                    let h = hash_key(key_of(k))?;
                    ix.table.insert_unique(h, (h, i as u32), |&(h, _)| h);
                }
                let v = std::mem::take(v);
                *store = Store::Big(Box::new((v, ix)));
            }
        }
        Store::Big(b) => {
            reserve_vec(&mut b.0, n);
            let more = need.saturating_sub(b.1.table.len());
            b.1.table.reserve(more, |&(h, _)| h);
        }
    }
    Ok(())
}

/// Appends a new key (hash `h` when known) and indexes it, building the index when the store
/// grows past [`INDEX_AT`].
fn append<T>(store: &mut Store<T>, item: T, h: Option<u64>, key_of: impl Fn(&T) -> &Value) -> Result<(), PickleError> {
    match store {
        Store::Small(v) => {
            if v.len() >= INDEX_AT {
                let ix = build_index(v.iter().map(&key_of).chain(std::iter::once(key_of(&item))))?;
                let mut v = std::mem::take(v);
                v.push(item);
                *store = Store::Big(Box::new((v, ix)));
            } else {
                v.push(item);
            }
        }
        Store::Big(b) => {
            if b.0.len() >= u32::MAX as usize {
                return Err(PickleError::TooLarge { limit: u64::from(u32::MAX), offset: 0 });
            }
            let h = match h {
                Some(h) => h,
                None => hash_key(key_of(&item))?,
            };
            let i = b.0.len() as u32;
            b.0.push(item);
            b.1.table.insert_unique(h, (h, i), |&(h, _)| h);
        }
    }
    Ok(())
}

pub(crate) fn dict_insert(d: &mut Dict, k: Value, v: Value) -> Result<(), PickleError> {
    match locate(&d.store, &k, |e| &e.0)? {
        Ok(i) => {
            match &mut d.store {
                Store::Small(e) => e[i].1 = v,
                Store::Big(b) => b.0[i].1 = v,
            }
            Ok(())
        }
        Err(h) => append(&mut d.store, (k, v), h, |e| &e.0),
    }
}

pub(crate) fn set_insert(s: &mut Set, k: Value) -> Result<bool, PickleError> {
    match locate(&s.store, &k, |e| e)? {
        Ok(_) => Ok(false),
        Err(h) => append(&mut s.store, k, h, |e| e).map(|()| true),
    }
}

/// A fast keyed hash for the encoder's memo of strings (wyhash's multiply-fold over 8-byte
/// words, seeded per process from the OS-random `RandomState`): SipHash was a fifth of the
/// encoder's time, and the seed keeps collisions unpredictable to a peer.
#[derive(Clone, Copy)]
pub(crate) struct FastState {
    seed: u64,
}

impl FastState {
    pub(crate) fn new() -> FastState {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState { seed: *SEED.get_or_init(|| state().hash_one(0x5eed_u64) | 1) }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher { h: self.seed }
    }
}

/// The hasher of [`FastState`].
pub(crate) struct FastHasher {
    h: u64,
}

#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.h;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = mum(h ^ u64::from_le_bytes(w), 0xa076_1d64_78bd_642f);
        }
        let r = chunks.remainder();
        if !r.is_empty() {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(r);
            h = mum(h ^ u64::from_le_bytes(w), 0xe703_7ed1_a0b4_28db);
        }
        self.h ^= mum(h ^ bytes.len() as u64, 0x8ebc_6af0_9c88_c6e3);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.h = mum(self.h ^ n, 0xa076_1d64_78bd_642f);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        mum(self.h, 0x5899_65cc_7537_4cc3)
    }
}
