//! `serde::Deserialize` from a [`Value`]: how pickles are received into typed Rust values.
//!
//! Why a module of its own: typed `recv` goes pickle → [`Value`] → Rust value, so the one decoder
//! (with its budget and its refusal of cycles) reads everything. This walk recurses, once per
//! level of the value, so it stops at [`SERDE_DEPTH_LIMIT`] levels with
//! [`PickleError::TooDeep`] (as `serde_json` stops at 128). The mapping is the reverse of
//! `ser.rs`; lists, tuples, sets and frozensets all read as sequences, bytes and bytearray as
//! bytes (or as a str when the Rust side asks for one and they are UTF-8), and a class instance
//! is an error naming its class.
//!
//! A typed value cannot share: every [`Value::Shared`] it meets is materialised again, so a
//! 300-byte pickle sharing a list with itself 40 levels deep would ask for 2^40 nodes. The walk
//! therefore counts the nodes it visits against a budget of twice the value's own nodes (each
//! shared one counted once) plus [`SERDE_NODE_FLOOR`]; beyond it, [`PickleError::TooComplex`].

use std::cell::Cell;
use std::collections::HashSet;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::value::{Value, children};
use super::{PickleError, SERDE_DEPTH_LIMIT};

/// Nodes a typed value may always materialise beyond twice its own (see the module docs).
pub const SERDE_NODE_FLOOR: u64 = 1 << 16;

pub(crate) fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, PickleError> {
    let limit = 2 * own_nodes(v) + SERDE_NODE_FLOOR;
    let nodes = Cell::new(limit);
    T::deserialize(ValueDe { v, depth: 0, nodes: &nodes }).map_err(|e| match e {
        PickleError::SharedExpansion { .. } => PickleError::SharedExpansion { limit },
        PickleError::Serde(_) if nodes.get() == 0 => PickleError::SharedExpansion { limit },
        e => e,
    })
}

/// The nodes of `v`, each shared one once (iterative).
fn own_nodes(v: &Value) -> u64 {
    let mut seen: HashSet<*const Value> = HashSet::new();
    let mut work = vec![v];
    let mut n = 0u64;
    while let Some(v) = work.pop() {
        n += 1;
        match v {
            Value::Shared(a) if seen.insert(std::sync::Arc::as_ptr(a)) => work.push(a),
            Value::Shared(_) => {}
            v if v.is_nested() => work.extend(children(v)),
            _ => {}
        }
    }
    n
}

#[derive(Clone, Copy)]
struct ValueDe<'a> {
    v: &'a Value,
    depth: usize,
    /// Nodes the walk may still visit.
    nodes: &'a Cell<u64>,
}

impl<'a> ValueDe<'a> {
    fn child(&self, v: &'a Value) -> Result<ValueDe<'a>, PickleError> {
        if self.depth >= SERDE_DEPTH_LIMIT {
            return Err(PickleError::TooDeep { limit: SERDE_DEPTH_LIMIT });
        }
        let left = self.nodes.get();
        if left == 0 {
            return Err(PickleError::SharedExpansion { limit: 0 });
        }
        self.nodes.set(left - 1);
        Ok(ValueDe { v, depth: self.depth + 1, nodes: self.nodes })
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Value>,
    parent: ValueDe<'a>,
}

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = PickleError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, PickleError> {
        match self.items.next() {
            Some(v) => seed.deserialize(self.parent.child(v)?).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (Value, Value)>,
    value: Option<&'a Value>,
    parent: ValueDe<'a>,
}

impl<'de> de::MapAccess<'de> for Map<'_> {
    type Error = PickleError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, PickleError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(self.parent.child(k)?).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PickleError> {
        let v = self.value.take().ok_or_else(|| PickleError::Serde("a map value without a key".into()))?;
        seed.deserialize(self.parent.child(v)?)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Enum<'a> {
    name: &'a str,
    payload: Option<ValueDe<'a>>,
}

impl<'de> de::EnumAccess<'de> for Enum<'_> {
    type Error = PickleError;
    type Variant = Self;
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), PickleError> {
        let d: de::value::StrDeserializer<'_, PickleError> = self.name.into_deserializer();
        let v = seed.deserialize(d)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_> {
    type Error = PickleError;
    fn unit_variant(self) -> Result<(), PickleError> {
        Ok(())
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, PickleError> {
        match self.payload {
            Some(p) => seed.deserialize(p),
            None => Err(PickleError::Serde(format!("variant {} needs a payload", self.name))),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, PickleError> {
        match self.payload {
            Some(p) => de::Deserializer::deserialize_any(p, visitor),
            None => Err(PickleError::Serde(format!("variant {} needs a payload", self.name))),
        }
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        match self.payload {
            Some(p) => de::Deserializer::deserialize_any(p, visitor),
            None => Err(PickleError::Serde(format!("variant {} needs a payload", self.name))),
        }
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = PickleError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.v.resolved() {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::BigInt(b) => {
                if let Ok(u) = u64::try_from(&**b) {
                    visitor.visit_u64(u)
                } else if let Ok(i) = i128::try_from(&**b) {
                    visitor.visit_i128(i)
                } else if let Ok(u) = u128::try_from(&**b) {
                    visitor.visit_u128(u)
                } else {
                    Err(PickleError::Serde(format!("the int {b} does not fit 128 bits")))
                }
            }
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) | Value::Py2Str(s) => visitor.visit_str(s),
            Value::Bytes(b) | Value::ByteArray(b) => visitor.visit_bytes(b),
            Value::List(l) | Value::Tuple(l) => {
                self.child(self.v)?;
                visitor.visit_seq(Seq { items: l.iter(), parent: self })
            }
            Value::Set(s) | Value::FrozenSet(s) => {
                self.child(self.v)?;
                visitor.visit_seq(Seq { items: s.iter(), parent: self })
            }
            Value::Dict(d) => {
                self.child(self.v)?;
                visitor.visit_map(Map { entries: d.iter(), value: None, parent: self })
            }
            Value::Global(g) => Err(PickleError::Serde(format!(
                "the pickle refers to {}.{}, which has no Rust value here",
                g.module, g.name
            ))),
            Value::Object(o) => Err(PickleError::Serde(format!(
                "the pickle holds an instance of {}.{}, which has no Rust value here",
                o.class.module, o.class.name
            ))),
            Value::Shared(_) => visitor.visit_unit(),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.v.resolved() {
            Value::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, PickleError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        match self.v.resolved() {
            Value::Str(s) | Value::Py2Str(s) => visitor.visit_enum(Enum { name: s, payload: None }),
            Value::Dict(d) if d.len() == 1 => {
                let (k, v) = &d.entries()[0];
                let name = k.as_str().ok_or_else(|| PickleError::Serde("an enum variant name must be a str".into()))?;
                visitor.visit_enum(Enum { name, payload: Some(self.child(v)?) })
            }
            other => Err(PickleError::Serde(format!(
                "expected an enum (a str or a one-entry dict), got a {}",
                other.type_name()
            ))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.v.resolved() {
            Value::Bytes(b) | Value::ByteArray(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => visitor.visit_bytes(b),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A [`Value`] inside a typed value: `conn.recv::<(String, Value)>()`. Lists, tuples (as lists
/// from other formats), maps, scalars and bytes map to the variants of the same type; depth is
/// limited by the deserializer (this crate's stops at [`SERDE_DEPTH_LIMIT`]).
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any Python value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::from(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut d = super::value::Dict::new();
        while let Some((k, v)) = map.next_entry::<Value, Value>()? {
            d.insert(k, v).map_err(de::Error::custom)?;
        }
        Ok(Value::Dict(d))
    }
}
