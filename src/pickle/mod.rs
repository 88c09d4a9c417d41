//! Python objects over a connection: `send` / `recv` through pickle, with a codec of our own.
//!
//! * [`loads_value`] runs a small VM over the opcode stream (as CPython's `_pickle.c` does) for
//!   every protocol, 0 to 5, from CPython 2.7 to 3.13, into a [`Value`]. It never runs or
//!   resolves code: a class or function is a [`Value::Global`], an instance a [`Value::Object`]
//!   holding its class, arguments and state ([`DecodeOptions`] can refuse them instead). It never
//!   recurses on the input's depth, shares what the pickle shares ([`Value::Shared`]) instead of
//!   copying it, and counts every byte it allocates against a budget proportional to the
//!   input ([`DecodeOptions::max_bytes`], [`EXPANSION`]), refusing before it allocates more.
//! * [`dumps_value`] writes protocols 2 to 5 as CPython does (same opcodes, batches and memo of
//!   strings), insertion order kept, sharing kept, readable by Python 2.7 at protocol 2.
//! * [`loads`] goes through [`Value`] for any `serde` type; [`dumps`] writes a `serde` value's
//!   opcodes directly, as [`dumps_value`] would write its [`to_value`].
//! * [`repr`] / [`repr_limited`] print a value as Python's `repr` does.
//!
//! The connection stays usable after any decode error: the whole message was already read.

#[macro_use]
mod serde_forward;
mod de;
mod decode;
mod dump;
mod encode;
mod key;
mod opcodes;
mod repr;
mod ser;
mod unprintable;
mod value;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use compact_str::CompactString;
pub use de::SERDE_NODE_FLOOR;
pub use decode::{
    DecodeOptions, EXPANSION, EXPANSION_FLOOR, MAX_INT_TEXT_DIGITS, ObjectPolicy, WORK_FLOOR, WORK_PER_BYTE, budget,
    work_budget,
};
pub use key::MAX_KEY_DEPTH;
pub use num_bigint::BigInt;
pub use repr::{is_printable, repr, repr_limited};
pub use value::{Dict, Global, List, Object, ObjectKind, Set, Value};

use crate::error::Result;

/// How deep the `serde` conversion from a [`Value`] into a typed value may go (as `serde_json`'s
/// 128).
pub const SERDE_DEPTH_LIMIT: usize = 128;

/// A pickle could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The pickle ends in the middle of an opcode's argument.
    #[error("truncated pickle: {opcode} at offset {offset} needs more bytes than the pickle has")]
    Truncated {
        /// The opcode's name.
        opcode: &'static str,
        /// Where the opcode starts.
        offset: usize,
    },
    /// A byte that is no pickle opcode.
    #[error("invalid pickle: unknown opcode 0x{byte:02x} at offset {offset}")]
    UnknownOpcode {
        /// The byte.
        byte: u8,
        /// Its offset.
        offset: usize,
    },
    /// An opcode that cannot apply where it is (empty stack, wrong type, bad argument).
    #[error("invalid pickle: {opcode} at offset {offset}: {reason}")]
    Invalid {
        /// The opcode's name.
        opcode: &'static str,
        /// Where the opcode starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The bytes end without the STOP opcode.
    #[error("invalid pickle: it ends at offset {offset} without STOP")]
    NoStop {
        /// The length of the input.
        offset: usize,
    },
    /// Decoding would take more memory than the budget allows (a "pickle bomb", or a pickle
    /// beyond [`DecodeOptions::max_bytes`]). Refused before the allocation.
    #[error("the pickle would take more than {limit} bytes decoded (at offset {offset}); refused")]
    TooLarge {
        /// The budget in bytes.
        limit: u64,
        /// Where decoding stopped.
        offset: usize,
    },
    /// The pickle builds a self-referencing structure (`a = []; a.append(a)`).
    #[error("the pickle holds an object that contains itself (at offset {offset}); Value cannot represent cycles")]
    Cycle {
        /// Where the object was modified after being embedded in itself.
        offset: usize,
    },
    /// Hashing and comparing the pickle's dict keys and set elements would take more steps than
    /// its length allows (deep keys referenced from many dicts: quadratic time). Refused.
    #[error("the pickle's dict keys and set elements are too costly to compare (deep keys used many times); refused")]
    TooComplex,
    /// A typed value would copy the shared sub-objects of the pickle beyond twice the value's
    /// own size (a typed Rust value cannot share; a [`Value`] can). Refused.
    #[error(
        "the value shares sub-objects too often to be copied into a typed value (more than {limit} nodes); receive it as a Value"
    )]
    SharedExpansion {
        /// The node budget that was exceeded.
        limit: u64,
    },
    /// A dict key or set element of a type Python cannot hash (as Python's `TypeError`).
    #[error("unhashable type: '{type_name}' (as a dict key or set element){}", at_offset(*.offset))]
    Unhashable {
        /// Python's name of the type.
        type_name: &'static str,
        /// Where in the pickle (for a decode).
        offset: Option<usize>,
    },
    /// A pickle feature this decoder refuses by design: out-of-band buffers (protocol 5),
    /// persistent ids, the extension registry.
    #[error("{opcode} at offset {offset} is not supported: {why}")]
    Unsupported {
        /// The opcode's name.
        opcode: &'static str,
        /// Where it is.
        offset: usize,
        /// Why.
        why: &'static str,
    },
    /// The pickle refers to a class or function, and [`ObjectPolicy::Refuse`] is in force.
    #[error("the pickle refers to the Python object {module}.{name}, which the decode options refuse")]
    ObjectRefused {
        /// The module.
        module: String,
        /// The name.
        name: String,
    },
    /// A string that is not valid UTF-8.
    #[error("invalid pickle: {opcode} at offset {offset} is not valid UTF-8")]
    Utf8 {
        /// The opcode's name.
        opcode: &'static str,
        /// Where the opcode starts.
        offset: usize,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A `str` holding a lone surrogate (Python allows it; a Rust `String` cannot hold one).
    #[error("{opcode} at offset {offset}: a str with a lone surrogate, which a Rust String cannot hold")]
    Surrogate {
        /// The opcode's name.
        opcode: &'static str,
        /// Where the opcode starts.
        offset: usize,
    },
    /// Writing supports protocols 2 to 5.
    #[error("pickle protocol {0} cannot be written (use 2 to 5)")]
    UnsupportedProtocol(u8),
    /// A typed value nested deeper than [`SERDE_DEPTH_LIMIT`].
    #[error("the value is nested deeper than {limit} levels; refused for a typed conversion")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A [`Value`] does not fit the requested Rust type, or a Rust value cannot be a [`Value`].
    #[error("{0}")]
    Serde(String),
}

fn at_offset(offset: Option<usize>) -> String {
    offset.map(|o| format!(" at offset {o}")).unwrap_or_default()
}

impl serde::ser::Error for PickleError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        PickleError::Serde(msg.to_string())
    }
}

impl serde::de::Error for PickleError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        PickleError::Serde(msg.to_string())
    }
}

/// Unpickles `bytes` into a dynamic [`Value`], with the default [`DecodeOptions`].
pub fn loads_value(bytes: &[u8]) -> Result<Value, PickleError> {
    decode::decode(bytes, &DecodeOptions::default())
}

/// Unpickles `bytes` into a dynamic [`Value`] with `options`.
pub fn loads_value_with(bytes: &[u8], options: &DecodeOptions) -> Result<Value, PickleError> {
    decode::decode(bytes, options)
}

/// Pickles a [`Value`] with `protocol` (2 to 5).
pub fn dumps_value(value: &Value, protocol: u8) -> Result<Vec<u8>, PickleError> {
    encode::encode(value, protocol)
}

/// Unpickles `bytes` into `T`, through a [`Value`] (depth limited to [`SERDE_DEPTH_LIMIT`]).
pub fn loads<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PickleError> {
    let v = loads_value(bytes)?;
    de::from_value(&v)
}

/// Pickles `value` with `protocol` (2 to 5), writing the opcodes as `serde` walks it (no
/// [`Value`] in between). Python loads the value `dumps_value(&to_value(value)?, protocol)`
/// would give it, and a map key Python could not hash (a list or dict) is refused the same way.
/// The bytes are the same too for a value of up to 4,096 distinct strs; beyond, or in a struct
/// field whose strs do not repeat, strs are memoised more cheaply than exactly (see
/// ARCHITECTURE.md, the pickle codec).
pub fn dumps<T: Serialize + ?Sized>(value: &T, protocol: u8) -> Result<Vec<u8>, PickleError> {
    dump::dumps(value, protocol)
}

/// A `serde` value as a [`Value`]: structs and maps become dicts (insertion order kept), sequences
/// lists, tuples tuples, `None` / `()` `None`, bytes (`serde_bytes`) `bytes`; a unit enum variant
/// its name, other variants `{name: payload}`.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, PickleError> {
    ser::to_value(value)
}

/// A [`Value`] as a `serde` type (the reverse of [`to_value`]; depth limited to
/// [`SERDE_DEPTH_LIMIT`]). Takes the value itself or a reference to it (`from_value(v)` and
/// `from_value(&v)` both work; `T` can still be named: `from_value::<T>(v)`).
///
/// ```
/// use mpconn::pickle::{Value, from_value, loads_value};
/// // The tuple (1, 2) as protocol 2 writes it: BININT1 1, BININT1 2, TUPLE2, STOP.
/// let value: Value = loads_value(b"K\x01K\x02\x86.")?;
/// let pair: (i64, i64) = from_value(&value)?; // borrowed: the value stays usable
/// assert_eq!(pair, (1, 2));
/// let pair: (u8, u8) = from_value(value)?; // or given away
/// assert_eq!(pair, (1, 2));
/// # Ok::<(), mpconn::pickle::PickleError>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: impl std::borrow::Borrow<Value>) -> Result<T, PickleError> {
    de::from_value(value.borrow())
}
