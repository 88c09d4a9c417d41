//! The dynamic "whatever Python sent" type, [`Value`], and its container payloads.
//!
//! Why a module of its own: the containers carry the invariants the rest of the codec relies on
//! (dict and set keys deduplicated with Python's key semantics, insertion order kept) and the
//! non-recursive `Drop` that lets a value nested a million levels deep be dropped on a small
//! stack. `Drop` sits on the payload types ([`List`], [`Dict`], [`Set`], [`Object`]), not on
//! [`Value`], so a `match` can still move out of a variant.

use std::sync::Arc;

use compact_str::CompactString;
use num_bigint::BigInt;

use super::PickleError;
use super::key;

/// A Python value as a pickle carries it.
///
/// Plain data maps to the variants of the same Python type. Anything else is kept as what the
/// pickle says, never run: a reference to a class or function is a [`Value::Global`], a class
/// instance (or any other `REDUCE` / `NEWOBJ` / `INST` / `OBJ` result) is a [`Value::Object`]
/// holding the callable's module and name, its arguments and its state.
///
/// A sub-object the pickle references more than once (Python's memo) is decoded once and held
/// as [`Value::Shared`]; accessors and equality see through it ([`Value::resolved`]), and the
/// encoder writes it once and references it afterwards, so sharing survives a round trip.
///
/// Equality is Python's `==`: `1 == 1.0 == True`, `b'a' == bytearray(b'a')`, a set equals a
/// frozenset of the same elements, dicts compare without regard to order, and a NaN is not equal
/// to itself (except through the same [`Value::Shared`]).
///
/// ```
/// use mpconn::pickle::{Dict, Value, dumps_value, loads_value};
///
/// // What Python's pickle.dumps({'id': 7, 'tags': ['a', 'b']}, 2) holds, built by hand:
/// let mut record = Dict::new();
/// record.insert("id".into(), 7.into())?;
/// record.insert("tags".into(), vec![Value::from("a"), Value::from("b")].into())?;
/// let value = Value::from(record);
/// assert_eq!(value.to_string(), "{'id': 7, 'tags': ['a', 'b']}"); // Python's repr
///
/// // Through the codec and back; then read it as Python code would.
/// let back = loads_value(&dumps_value(&value, 2)?)?;
/// assert_eq!(back, value);
/// let dict = back.as_dict().expect("a dict");
/// assert_eq!(dict.get_str("id").and_then(Value::as_i64), Some(7));
/// let tags = dict.get_str("tags").and_then(Value::as_slice).expect("a list");
/// assert_eq!(tags.iter().filter_map(Value::as_str).collect::<Vec<_>>(), ["a", "b"]);
/// # Ok::<(), mpconn::pickle::PickleError>(())
/// ```
#[non_exhaustive]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits 64 bits.
    Int(i64),
    /// An `int` that does not fit 64 bits (the decoder never makes one that does).
    BigInt(Box<BigInt>),
    /// A `float`.
    Float(f64),
    /// A `str`. A [`CompactString`]: up to 24 bytes inline, without an allocation (dict keys,
    /// short strings); it dereferences to `&str` and converts from `String` and `&str`
    /// (`Value::Str("a".into())`). A Python 2 `str` made of ASCII bytes is a [`Value::Py2Str`];
    /// [`Value::as_str`] returns both.
    Str(CompactString),
    /// A Python 2 `str` (a byte string: STRING, BINSTRING, `SHORT_BINSTRING`) made only of ASCII
    /// bytes, as the decoder makes it. Python 3 reads such a pickle as a `str`, and so does
    /// everything here but the encoder: it is equal to, hashes as, is one dict key with, and
    /// prints as the [`Value::Str`] of the same text, and [`Value::as_str`] and `serde` see a
    /// `str`. The encoder writes it back at protocol 2 (what a Python 2 peer reads) as Python 2
    /// wrote it, a byte string (`SHORT_BINSTRING` / BINSTRING, which Python 3 again reads as a
    /// `str`), so a relay gives a Python 2 peer its `str` back, not a `unicode`; at protocols
    /// 3-5, as the `str` CPython 3 would have made of it. (A Python 2 `str` with a byte beyond
    /// ASCII is [`Value::Bytes`], which protocol 2 also writes back as a Python 2 `str`.)
    /// Build one with [`Value::py2_str`]; text beyond ASCII held here is written as a `str` at
    /// every protocol.
    Py2Str(CompactString),
    /// `bytes` (and a Python 2 `str` holding a byte beyond ASCII).
    Bytes(Vec<u8>),
    /// A `bytearray`.
    ByteArray(Vec<u8>),
    /// A `list`.
    List(List),
    /// A `tuple`.
    Tuple(List),
    /// A `dict`, in insertion order. (A `collections.OrderedDict` is an [`Object`] with its
    /// items in [`Object::dict_items`], so it goes back to Python as one.)
    Dict(Dict),
    /// A `set`, in insertion order.
    Set(Set),
    /// A `frozenset`, in insertion order.
    FrozenSet(Set),
    /// A reference to a class or function by name (`queue.Empty`, `builtins.float`).
    Global(Box<Global>),
    /// A class instance or other object a pickle builds by calling something.
    Object(Box<Object>),
    /// A sub-object referenced more than once in the pickle.
    Shared(Arc<Value>),
}

/// The payload of [`Value::List`] and [`Value::Tuple`]: a vector of values whose `Drop` does not
/// recurse. Dereferences to `Vec<Value>`.
#[derive(Clone, Default, PartialEq)]
pub struct List(pub(crate) Vec<Value>);

impl List {
    /// An empty list.
    pub fn new() -> List {
        List(Vec::new())
    }

    /// The items, taken out.
    pub fn into_vec(mut self) -> Vec<Value> {
        std::mem::take(&mut self.0)
    }
}

impl std::fmt::Debug for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_limited_value(self.as_slice(), 4096, "[", "]"))
    }
}

impl std::ops::Deref for List {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.0
    }
}

impl std::ops::DerefMut for List {
    fn deref_mut(&mut self) -> &mut Vec<Value> {
        &mut self.0
    }
}

impl From<Vec<Value>> for List {
    fn from(v: Vec<Value>) -> List {
        List(v)
    }
}

impl FromIterator<Value> for List {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> List {
        List(iter.into_iter().collect())
    }
}

impl Drop for List {
    fn drop(&mut self) {
        if self.0.iter().any(Value::is_nested) {
            drop_flat(std::mem::take(&mut self.0));
        }
    }
}

/// The payload of [`Value::Dict`]: entries in insertion order, keys unique under Python's key
/// semantics (`1`, `1.0` and `True` are one key; `'a'` and `b'a'` are two). Big dicts keep a hash
/// index, so building one is linear even from hostile input.
#[derive(Clone, Default)]
pub struct Dict {
    pub(crate) store: key::Store<(Value, Value)>,
}

impl Dict {
    /// An empty dict.
    pub fn new() -> Dict {
        Dict::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.store.slice().len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.store.slice().is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, (Value, Value)> {
        self.store.slice().iter()
    }

    /// The entries as a slice, in insertion order.
    pub fn entries(&self) -> &[(Value, Value)] {
        self.store.slice()
    }

    /// The keys in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &Value> {
        self.store.slice().iter().map(|(k, _)| k)
    }

    /// Room for `n` more entries.
    pub fn reserve(&mut self, n: usize) {
        match &mut self.store {
            key::Store::Small(v) => v.reserve(n),
            key::Store::Big(b) => b.0.reserve(n),
        }
    }

    /// The value under `key` (Python's `d[key]`, `1` finds `1.0`).
    pub fn get(&self, key: &Value) -> Option<&Value> {
        key::dict_find(self, key).map(|i| &self.store.slice()[i].1)
    }

    /// The value under a `str` key.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        if self.store.index().is_none() {
            return self.store.slice().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v);
        }
        self.get(&Value::Str(key.into()))
    }

    /// Python's `d[key] = value`: a new key goes last, an existing key keeps its place and takes
    /// the new value. An unhashable key (list, dict, set, bytearray) is an error, as Python's
    /// `TypeError`.
    pub fn insert(&mut self, key: Value, value: Value) -> Result<(), PickleError> {
        key::dict_insert(self, key, value)
    }

    /// The entries, taken out.
    pub fn into_entries(mut self) -> Vec<(Value, Value)> {
        self.store.take()
    }
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_dict_limited(self, 4096))
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        if self.store.slice().iter().any(|(k, v)| k.is_nested() || v.is_nested()) {
            let mut work = Vec::new();
            for (k, v) in self.store.take() {
                for c in [k, v] {
                    if c.is_nested() {
                        work.push(c);
                    }
                }
            }
            drop_flat(work);
        }
    }
}

/// The payload of [`Value::Set`] and [`Value::FrozenSet`]: elements in insertion order, unique
/// under Python's key semantics.
#[derive(Clone, Default)]
pub struct Set {
    pub(crate) store: key::Store<Value>,
}

impl Set {
    /// An empty set.
    pub fn new() -> Set {
        Set::default()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.store.slice().len()
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.store.slice().is_empty()
    }

    /// The elements in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.store.slice().iter()
    }

    /// The elements as a slice.
    pub fn as_slice(&self) -> &[Value] {
        self.store.slice()
    }

    /// Python's `x in s`.
    pub fn contains(&self, item: &Value) -> bool {
        key::set_find(self, item).is_some()
    }

    /// Python's `s.add(x)`; `Ok(false)` when an equal element was there already. An unhashable
    /// element is an error.
    pub fn insert(&mut self, item: Value) -> Result<bool, PickleError> {
        key::set_insert(self, item)
    }

    /// The elements, taken out.
    pub fn into_vec(mut self) -> Vec<Value> {
        self.store.take()
    }
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_set_limited(self, 4096))
    }
}

impl Drop for Set {
    fn drop(&mut self) {
        if self.store.slice().iter().any(Value::is_nested) {
            drop_flat(self.store.take());
        }
    }
}

/// A reference to a Python global by name: `module.name` (a class, a function, a type).
///
/// Python 2 module names are read as Python 3's (`__builtin__` and `exceptions` as `builtins`,
/// `copy_reg` as `copyreg`), as CPython's unpickler does; the encoder writes them back for
/// protocol 2.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Global {
    /// The module, e.g. `queue`.
    pub module: String,
    /// The qualified name inside the module, e.g. `Empty`.
    pub name: String,
}

impl Global {
    /// `module.name`.
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Global {
        Global { module: module.into(), name: name.into() }
    }
}

/// Which opcode built an [`Object`], so the encoder can write it back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectKind {
    /// `REDUCE`: `callable(*args)`.
    Reduce,
    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    NewObj,
    /// `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx,
    /// `copyreg._reconstructor(cls, base, state)` through `REDUCE` (Python 2 new-style classes
    /// at protocols 0-1); `args` holds `(base, state)`.
    Reconstructor,
    /// Protocol 0 `INST` / protocol 1 `OBJ`: a class called with the arguments.
    Inst,
}

/// A class instance or any other object a pickle builds by calling a global, kept as the pickle
/// says and never run: the callable's module and name, the arguments, and what `BUILD`,
/// `APPENDS` and `SETITEMS` applied to it afterwards.
#[derive(Clone)]
pub struct Object {
    /// The callable (usually the class) that builds it.
    pub class: Global,
    /// The opcode that built it.
    pub kind: ObjectKind,
    /// The positional arguments, normally a [`Value::Tuple`].
    pub args: Value,
    /// The keyword arguments of `NEWOBJ_EX` (a dict), else `None`.
    pub kwargs: Option<Value>,
    /// The state `BUILD` gave it (`__setstate__` or `__dict__`), else `None`.
    pub state: Option<Value>,
    /// Items appended to it (`APPEND` / `APPENDS`: a list subclass, a deque).
    pub list_items: Vec<Value>,
    /// Items set on it (`SETITEM` / `SETITEMS`: a dict subclass, a `defaultdict`, a `Counter`).
    pub dict_items: Vec<(Value, Value)>,
}

impl Object {
    /// `module.name(*args)` written with `REDUCE`, e.g. `Object::new("_queue", "Empty", vec![])`
    /// for `queue.Empty()`.
    pub fn new(module: impl Into<String>, name: impl Into<String>, args: Vec<Value>) -> Object {
        Object {
            class: Global::new(module, name),
            kind: ObjectKind::Reduce,
            args: Value::Tuple(List(args)),
            kwargs: None,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        }
    }

    /// The arguments as a slice (empty when `args` is not a tuple).
    pub fn args(&self) -> &[Value] {
        self.args.as_slice().unwrap_or(&[])
    }

    fn children_nested(&self) -> bool {
        self.args.is_nested()
            || self.kwargs.as_ref().is_some_and(Value::is_nested)
            || self.state.as_ref().is_some_and(Value::is_nested)
            || !self.list_items.is_empty()
            || !self.dict_items.is_empty()
    }

    fn take_children(&mut self, work: &mut Vec<Value>) {
        work.push(std::mem::replace(&mut self.args, Value::None));
        work.extend(self.kwargs.take());
        work.extend(self.state.take());
        work.append(&mut self.list_items);
        for (k, v) in std::mem::take(&mut self.dict_items) {
            work.push(k);
            work.push(v);
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if self.children_nested() {
            let mut work = Vec::new();
            self.take_children(&mut work);
            drop_flat(work);
        }
    }
}

/// Drops values without recursion: a container popped from the work list gives its nested
/// children to the list before it is dropped, so every `Drop` call below sees only flat children.
fn drop_flat(mut work: Vec<Value>) {
    // Children without children of their own are dropped on the spot; only containers go to the
    // work list, so it never grows beyond the number of containers pending.
    fn keep(work: &mut Vec<Value>, c: Value) {
        if c.is_nested() {
            work.push(c);
        }
    }
    while let Some(v) = work.pop() {
        match v {
            Value::List(mut l) | Value::Tuple(mut l) => {
                for c in l.0.drain(..) {
                    keep(&mut work, c);
                }
            }
            Value::Dict(mut d) => {
                for (k, v) in d.store.take() {
                    keep(&mut work, k);
                    keep(&mut work, v);
                }
            }
            Value::Set(mut s) | Value::FrozenSet(mut s) => {
                for c in s.store.take() {
                    keep(&mut work, c);
                }
            }
            Value::Object(mut o) => {
                let mut children = Vec::new();
                o.take_children(&mut children);
                for c in children {
                    keep(&mut work, c);
                }
            }
            Value::Shared(a) => {
                if let Ok(inner) = Arc::try_unwrap(a) {
                    work.push(inner);
                }
            }
            _ => {}
        }
    }
}

impl Value {
    /// A container or anything that may hold one (its drop, equality or repr walks children).
    pub(crate) fn is_nested(&self) -> bool {
        matches!(
            self,
            Value::List(_)
                | Value::Tuple(_)
                | Value::Dict(_)
                | Value::Set(_)
                | Value::FrozenSet(_)
                | Value::Object(_)
                | Value::Shared(_)
        )
    }

    /// The value itself, or for [`Value::Shared`] the value it shares (through any number of
    /// levels).
    pub fn resolved(&self) -> &Value {
        let mut v = self;
        while let Value::Shared(a) = v {
            v = a;
        }
        v
    }

    /// Python's type name of the value (`'int'`, `'str'`, `'dict'`; for an object, `'object'`).
    pub fn type_name(&self) -> &'static str {
        match self.resolved() {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) | Value::Py2Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global(_) => "global",
            Value::Object(_) | Value::Shared(_) => "object",
        }
    }

    /// `None`?
    pub fn is_none(&self) -> bool {
        matches!(self.resolved(), Value::None)
    }

    /// A `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.resolved() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An `int` that fits `i64` (a `bool` counts, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match self.resolved() {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::BigInt(b) => i64::try_from(&**b).ok(),
            _ => None,
        }
    }

    /// A big integer of any `int` (or `bool`).
    pub fn as_bigint(&self) -> Option<BigInt> {
        match self.resolved() {
            Value::Int(i) => Some(BigInt::from(*i)),
            Value::Bool(b) => Some(BigInt::from(i64::from(*b))),
            Value::BigInt(b) => Some((**b).clone()),
            _ => None,
        }
    }

    /// A `float`, or an `int` converted as Python's `float(x)` would.
    pub fn as_f64(&self) -> Option<f64> {
        match self.resolved() {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(i64::from(*b) as f64),
            Value::BigInt(b) => num_traits::ToPrimitive::to_f64(&**b),
            _ => None,
        }
    }

    /// A `str` (a [`Value::Str`] or a [`Value::Py2Str`]).
    pub fn as_str(&self) -> Option<&str> {
        match self.resolved() {
            Value::Str(s) | Value::Py2Str(s) => Some(s),
            _ => None,
        }
    }

    /// A Python 2 `str` (a byte string) as the decoder makes one from a Python 2 pickle: a
    /// [`Value::Py2Str`] when every byte is ASCII, else [`Value::Bytes`]. Both go back to a
    /// Python 2 peer (protocol 2) as a `str`; a Python 3 peer reads the first as a `str`, the
    /// second as `bytes`.
    pub fn py2_str(b: &[u8]) -> Value {
        match std::str::from_utf8(b) {
            Ok(s) if b.is_ascii() => Value::Py2Str(s.into()),
            _ => Value::Bytes(b.to_vec()),
        }
    }

    /// Was this (after [`Value::resolved`]) a Python 2 `str` made of ASCII bytes
    /// ([`Value::Py2Str`])?
    pub fn is_py2_str(&self) -> bool {
        matches!(self.resolved(), Value::Py2Str(_))
    }

    /// The bytes of `bytes` or `bytearray`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self.resolved() {
            Value::Bytes(b) | Value::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    /// A `list`.
    pub fn as_list(&self) -> Option<&List> {
        match self.resolved() {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// A `tuple`.
    pub fn as_tuple(&self) -> Option<&List> {
        match self.resolved() {
            Value::Tuple(l) => Some(l),
            _ => None,
        }
    }

    /// The items of a `list` or `tuple`.
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self.resolved() {
            Value::List(l) | Value::Tuple(l) => Some(l),
            _ => None,
        }
    }

    /// A `dict`.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self.resolved() {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A `set` or `frozenset`.
    pub fn as_set(&self) -> Option<&Set> {
        match self.resolved() {
            Value::Set(s) | Value::FrozenSet(s) => Some(s),
            _ => None,
        }
    }

    /// A class instance or other built object.
    pub fn as_object(&self) -> Option<&Object> {
        match self.resolved() {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// A reference to a global.
    pub fn as_global(&self) -> Option<&Global> {
        match self.resolved() {
            Value::Global(g) => Some(g),
            _ => None,
        }
    }

    /// For a dict, the value under `key` (Python's `d.get(key)`); `None` for anything else.
    /// `v.get("name")`, `v.get(3)`.
    pub fn get<K: Into<Value>>(&self, key: K) -> Option<&Value> {
        let d = self.as_dict()?;
        match key.into() {
            Value::Str(s) => d.get_str(&s),
            k => d.get(&k),
        }
    }

    /// An `int` of any size: `Int` when it fits `i64`, else `BigInt`.
    pub fn int(n: BigInt) -> Value {
        match i64::try_from(&n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(Box::new(n)),
        }
    }

    /// A `tuple` of `items`.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(List(items))
    }

    /// A `dict` from pairs, later duplicates overwriting earlier ones as Python's `dict(pairs)`.
    /// An unhashable key is an error.
    pub fn dict<I: IntoIterator<Item = (Value, Value)>>(pairs: I) -> Result<Value, PickleError> {
        let mut d = Dict::new();
        for (k, v) in pairs {
            d.insert(k, v)?;
        }
        Ok(Value::Dict(d))
    }

    /// A `set` of `items` (duplicates dropped). An unhashable element is an error.
    pub fn set<I: IntoIterator<Item = Value>>(items: I) -> Result<Value, PickleError> {
        let mut s = Set::new();
        for v in items {
            s.insert(v)?;
        }
        Ok(Value::Set(s))
    }
}

impl Clone for Value {
    /// A deep copy (a [`Value::Shared`] stays shared: its `Arc` is cloned), built without
    /// recursion, so a value nested a million deep can be cloned on a small stack.
    fn clone(&self) -> Value {
        if !self.is_nested() || matches!(self, Value::Shared(_)) {
            return shallow_clone(self);
        }
        // Frames: the container being copied, its children, the next child, the copies so far.
        let mut stack: Vec<(&Value, Vec<&Value>, usize, Vec<Value>)> = Vec::new();
        fn open(v: &Value) -> (Vec<&Value>, Vec<Value>) {
            let c = children(v);
            let n = c.len();
            (c, Vec::with_capacity(n))
        }
        let (c, out) = open(self);
        stack.push((self, c, 0, out));
        loop {
            let Some(top) = stack.last_mut() else { return Value::None };
            if top.2 == top.1.len() {
                let Some((src, _, _, out)) = stack.pop() else { return Value::None };
                let built = assemble(src, out);
                match stack.last_mut() {
                    Some(parent) => parent.3.push(built),
                    None => return built,
                }
                continue;
            }
            let child = top.1[top.2];
            top.2 += 1;
            if child.is_nested() && !matches!(child, Value::Shared(_)) {
                let (c, out) = open(child);
                stack.push((child, c, 0, out));
            } else {
                top.3.push(shallow_clone(child));
            }
        }
    }
}

/// A copy of a value without children to copy (a shared value's `Arc` is cloned).
fn shallow_clone(v: &Value) -> Value {
    match v {
        Value::None => Value::None,
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) => Value::Int(*i),
        Value::BigInt(b) => Value::BigInt(b.clone()),
        Value::Float(f) => Value::Float(*f),
        Value::Str(s) => Value::Str(s.clone()),
        Value::Py2Str(s) => Value::Py2Str(s.clone()),
        Value::Bytes(b) => Value::Bytes(b.clone()),
        Value::ByteArray(b) => Value::ByteArray(b.clone()),
        Value::Global(g) => Value::Global(g.clone()),
        Value::Shared(a) => Value::Shared(a.clone()),
        Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Set(_) | Value::FrozenSet(_) | Value::Object(_) => {
            Value::None
        }
    }
}

/// The children of a container, in the order `assemble` takes them back.
pub(crate) fn children(v: &Value) -> Vec<&Value> {
    match v {
        Value::List(l) | Value::Tuple(l) => l.iter().collect(),
        Value::Dict(d) => d.iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Set(s) | Value::FrozenSet(s) => s.iter().collect(),
        Value::Object(o) => {
            let mut c = vec![&o.args];
            c.extend(o.kwargs.iter());
            c.extend(o.state.iter());
            c.extend(o.list_items.iter());
            c.extend(o.dict_items.iter().flat_map(|(k, v)| [k, v]));
            c
        }
        _ => Vec::new(),
    }
}

/// A container like `src` holding the copies `out` of its children.
fn assemble(src: &Value, out: Vec<Value>) -> Value {
    fn pairs(out: Vec<Value>) -> Vec<(Value, Value)> {
        let mut it = out.into_iter();
        let mut v = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(x)) = (it.next(), it.next()) {
            v.push((k, x));
        }
        v
    }
    fn store<T>(like: &key::Store<impl Sized>, items: Vec<T>) -> key::Store<T> {
        match like.index_clone() {
            Some(ix) => key::Store::Big(Box::new((items, ix))),
            None => key::Store::Small(items),
        }
    }
    match src {
        Value::List(_) => Value::List(List(out)),
        Value::Tuple(_) => Value::Tuple(List(out)),
        Value::Dict(d) => Value::Dict(Dict { store: store(&d.store, pairs(out)) }),
        Value::Set(s) => Value::Set(Set { store: store(&s.store, out) }),
        Value::FrozenSet(s) => Value::FrozenSet(Set { store: store(&s.store, out) }),
        Value::Object(o) => {
            let mut it = out.into_iter();
            let args = it.next().unwrap_or(Value::None);
            let kwargs = if o.kwargs.is_some() { it.next() } else { None };
            let state = if o.state.is_some() { it.next() } else { None };
            let list_items: Vec<Value> = it.by_ref().take(o.list_items.len()).collect();
            let dict_items = pairs(it.collect());
            Value::Object(Box::new(Object {
                class: o.class.clone(),
                kind: o.kind,
                args,
                kwargs,
                state,
                list_items,
                dict_items,
            }))
        }
        other => shallow_clone(other),
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        key::eq(self, other)
    }
}

impl PartialEq for Dict {
    fn eq(&self, other: &Dict) -> bool {
        key::eq_dicts(self, other)
    }
}

impl PartialEq for Set {
    fn eq(&self, other: &Set) -> bool {
        key::eq_sets(self, other)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        key::eq_objects(self, other)
    }
}

impl std::fmt::Debug for Value {
    /// Python's `repr`, cut at 4 KiB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_limited(self, 4096))
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_object_limited(self, 4096))
    }
}

impl std::fmt::Display for Value {
    /// Python's `repr`, cut at 64 KiB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::repr::repr_limited(self, 64 * 1024))
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::Int(n as i64)
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(Box::new(BigInt::from(n))),
        }
    }
}

impl From<i128> for Value {
    fn from(n: i128) -> Value {
        Value::int(BigInt::from(n))
    }
}

impl From<u128> for Value {
    fn from(n: u128) -> Value {
        Value::int(BigInt::from(n))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::from(n as u64)
    }
}

impl From<isize> for Value {
    fn from(n: isize) -> Value {
        Value::Int(n as i64)
    }
}

impl From<BigInt> for Value {
    fn from(n: BigInt) -> Value {
        Value::int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<f32> for Value {
    fn from(f: f32) -> Value {
        Value::Float(f64::from(f))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s.into())
    }
}

impl From<CompactString> for Value {
    fn from(s: CompactString) -> Value {
        Value::Str(s)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(List(items))
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Value {
        Value::Dict(d)
    }
}

impl From<Global> for Value {
    fn from(g: Global) -> Value {
        Value::Global(Box::new(g))
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Value {
        Value::Object(Box::new(o))
    }
}

impl From<()> for Value {
    fn from((): ()) -> Value {
        Value::None
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::None, Into::into)
    }
}

impl From<Arc<Value>> for Value {
    fn from(a: Arc<Value>) -> Value {
        Value::Shared(a)
    }
}
