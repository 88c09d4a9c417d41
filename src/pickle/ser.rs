//! `serde::Serialize` into a [`Value`]: how typed Rust values are pickled.
//!
//! Why a module of its own: typed `send` goes Rust value → [`Value`] → pickle, so the one encoder
//! writes everything. Structs and maps become dicts in field / insertion order, sequences lists,
//! tuples tuples, `Option::None` and `()` `None`, `serde_bytes` bytes; a unit enum variant is its
//! name as a str, any other variant a one-entry dict `{name: payload}` (`serde_json`'s external
//! tagging). It recurses on the Rust value's own nesting, which the program controls.

use serde::ser::{self, Serialize};

use compact_str::CompactString;

use super::PickleError;
use super::value::{Dict, List, Value};

pub(crate) fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, PickleError> {
    v.serialize(ValueSerializer)
}

struct ValueSerializer;

pub(crate) struct SeqSer {
    items: Vec<Value>,
    tuple: bool,
    variant: Option<&'static str>,
}

pub(crate) struct MapSer {
    dict: Dict,
    key: Option<Value>,
    variant: Option<&'static str>,
}

fn tagged(variant: &'static str, v: Value) -> Result<Value, PickleError> {
    let mut d = Dict::new();
    d.insert(Value::Str(variant.into()), v)?;
    Ok(Value::Dict(d))
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = PickleError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = SeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = MapSer;

    fn serialize_bool(self, v: bool) -> Result<Value, PickleError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, PickleError> {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, PickleError> {
        Ok(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, PickleError> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, PickleError> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, PickleError> {
        Ok(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, PickleError> {
        Ok(Value::Float(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, PickleError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, PickleError> {
        Ok(Value::Str(CompactString::from(&*v.encode_utf8(&mut [0; 4]))))
    }
    fn serialize_str(self, v: &str) -> Result<Value, PickleError> {
        Ok(Value::Str(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, PickleError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, PickleError> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, PickleError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, PickleError> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, PickleError> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Value, PickleError> {
        Ok(Value::Str(variant.into()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<Value, PickleError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, PickleError> {
        tagged(variant, v.serialize(ValueSerializer)?)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, PickleError> {
        Ok(SeqSer { items: Vec::with_capacity(len.unwrap_or(0).min(4096)), tuple: false, variant: None })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, PickleError> {
        Ok(SeqSer { items: Vec::with_capacity(len.min(4096)), tuple: true, variant: None })
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer, PickleError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer, PickleError> {
        Ok(SeqSer { items: Vec::with_capacity(len.min(4096)), tuple: true, variant: Some(variant) })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapSer, PickleError> {
        Ok(MapSer { dict: Dict::new(), key: None, variant: None })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapSer, PickleError> {
        Ok(MapSer { dict: Dict::new(), key: None, variant: None })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<MapSer, PickleError> {
        Ok(MapSer { dict: Dict::new(), key: None, variant: Some(variant) })
    }
}

impl SeqSer {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), PickleError> {
        self.items.push(to_value(v)?);
        Ok(())
    }

    fn done(self) -> Result<Value, PickleError> {
        let v = if self.tuple { Value::Tuple(List(self.items)) } else { Value::List(List(self.items)) };
        match self.variant {
            Some(name) => tagged(name, v),
            None => Ok(v),
        }
    }
}

forward_seq_traits!(SeqSer, Value);

impl MapSer {
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), PickleError> {
        self.dict.insert(Value::Str(key.into()), to_value(v)?)
    }

    fn done(self) -> Result<Value, PickleError> {
        match self.variant {
            Some(name) => tagged(name, Value::Dict(self.dict)),
            None => Ok(Value::Dict(self.dict)),
        }
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = PickleError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), PickleError> {
        self.key = Some(to_value(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), PickleError> {
        let k = self.key.take().ok_or_else(|| PickleError::Serde("a map value without a key".into()))?;
        self.dict.insert(k, to_value(v)?)
    }
    fn end(self) -> Result<Value, PickleError> {
        self.done()
    }
}

forward_struct_traits!(MapSer, Value);

/// A [`Value`] inside a typed value being sent: `conn.send(&("#RETURN", value))`. Plain data maps
/// to serde's data model (a set or frozenset as a sequence, bytearray as bytes, a big int as
/// i128/u128 when it fits); a class instance or global is an error (send the whole message with
/// `send_value` instead). Nesting beyond [`SERDE_DEPTH_LIMIT`](super::SERDE_DEPTH_LIMIT) is an
/// error rather than deep recursion.
impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Depth { v: self, depth: 0 }.serialize(s)
    }
}

struct Depth<'a> {
    v: &'a Value,
    depth: usize,
}

impl Serialize for Depth<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::{Error, SerializeMap, SerializeSeq, SerializeTuple};
        if self.depth > super::SERDE_DEPTH_LIMIT {
            return Err(S::Error::custom(PickleError::TooDeep { limit: super::SERDE_DEPTH_LIMIT }));
        }
        let child = |v| Depth { v, depth: self.depth + 1 };
        match self.v.resolved() {
            Value::None => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::BigInt(b) => {
                if let Ok(i) = i128::try_from(&**b) {
                    s.serialize_i128(i)
                } else if let Ok(u) = u128::try_from(&**b) {
                    s.serialize_u128(u)
                } else {
                    Err(S::Error::custom(format!("the int {b} does not fit 128 bits")))
                }
            }
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(x) | Value::Py2Str(x) => s.serialize_str(x),
            Value::Bytes(b) | Value::ByteArray(b) => s.serialize_bytes(b),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l.iter() {
                    seq.serialize_element(&child(v))?;
                }
                seq.end()
            }
            Value::Tuple(t) => {
                let mut tup = s.serialize_tuple(t.len())?;
                for v in t.iter() {
                    tup.serialize_element(&child(v))?;
                }
                tup.end()
            }
            Value::Set(x) | Value::FrozenSet(x) => {
                let mut seq = s.serialize_seq(Some(x.len()))?;
                for v in x.iter() {
                    seq.serialize_element(&child(v))?;
                }
                seq.end()
            }
            Value::Dict(d) => {
                let mut map = s.serialize_map(Some(d.len()))?;
                for (k, v) in d.iter() {
                    map.serialize_entry(&child(k), &child(v))?;
                }
                map.end()
            }
            Value::Global(g) => Err(S::Error::custom(format!(
                "{}.{} is a Python global: send the message with send_value",
                g.module, g.name
            ))),
            Value::Object(o) => Err(S::Error::custom(format!(
                "an instance of {}.{}: send the message with send_value",
                o.class.module, o.class.name
            ))),
            Value::Shared(_) => s.serialize_unit(),
        }
    }
}
