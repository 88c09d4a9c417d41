//! `serde::Deserialize` from a [`Value`]: how pickles are received into typed Rust values.
//!
//! Why a module of its own: typed `recv` goes pickle → [`Value`] → Rust value, so the one decoder
//! (with its budget and its refusal of cycles) reads everything. This walk recurses, once per
//! level of the value, so it stops at [`SERDE_DEPTH_LIMIT`] levels with
//! [`PickleError::TooDeep`] (as serde_json stops at 128). The mapping is the reverse of
//! `ser.rs`; lists, tuples, sets and frozensets all read as sequences, bytes and bytearray as
//! bytes (or as a str when the Rust side asks for one and they are UTF-8), and a class instance
//! is an error naming its class.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::value::Value;
use super::{PickleError, SERDE_DEPTH_LIMIT};

pub(crate) fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, PickleError> {
    T::deserialize(ValueDe { v, depth: 0 })
}

#[derive(Clone, Copy)]
struct ValueDe<'a> {
    v: &'a Value,
    depth: usize,
}

impl<'a> ValueDe<'a> {
    fn child(&self, v: &'a Value) -> Result<ValueDe<'a>, PickleError> {
        if self.depth >= SERDE_DEPTH_LIMIT {
            return Err(PickleError::TooDeep { limit: SERDE_DEPTH_LIMIT });
        }
        Ok(ValueDe { v, depth: self.depth + 1 })
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Value>,
    parent: ValueDe<'a>,
}

impl<'de, 'a> de::SeqAccess<'de> for Seq<'a> {
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

impl<'de, 'a> de::MapAccess<'de> for Map<'a> {
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

impl<'de, 'a> de::EnumAccess<'de> for Enum<'a> {
    type Error = PickleError;
    type Variant = Self;
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), PickleError> {
        let d: de::value::StrDeserializer<'_, PickleError> = self.name.into_deserializer();
        let v = seed.deserialize(d)?;
        Ok((v, self))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for Enum<'a> {
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

impl<'de, 'a> de::Deserializer<'de> for ValueDe<'a> {
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
            Value::Str(s) => visitor.visit_str(s),
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
            Value::Str(s) => visitor.visit_enum(Enum { name: s, payload: None }),
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
