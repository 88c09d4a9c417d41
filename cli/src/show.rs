//! How the command shows messages: a pickle as Python would print it, other bytes as a Python
//! bytes literal; and JSON given on the command line as Python values.

use mpconn::pickle::{Value, loads_value, repr_limited};
use mpconn::{Error, Result};

/// The most of one message's repr that is printed (a small pickle can share one big list many
/// times; Python would print it in full at every reference).
pub const MAX_SHOWN: usize = 1 << 20;

/// A pickle (protocol 2+) as its Python repr, anything else as a bytes literal; cut with `...`
/// after [`MAX_SHOWN`] bytes.
pub fn show(message: &[u8]) -> String {
    if message.first() == Some(&0x80)
        && let Ok(v) = loads_value(message)
    {
        return repr_limited(&v, MAX_SHOWN);
    }
    repr_limited(&Value::Bytes(shown_prefix(message)), MAX_SHOWN)
}

/// The part of a non-pickle message that its cut repr shows: every byte prints as at least one
/// character, so `MAX_SHOWN + 1` bytes are enough (not a copy of a 128 MiB message). Python
/// picks the quote from the whole message (`"` when it holds `'` and no `"`), so a quote that
/// only occurs past the cut is kept by one byte after it, where the repr is cut anyway.
fn shown_prefix(message: &[u8]) -> Vec<u8> {
    if message.len() <= MAX_SHOWN + 1 {
        return message.to_vec();
    }
    let mut prefix = message[..=MAX_SHOWN].to_vec();
    for quote in [b'\'', b'"'] {
        if !prefix.contains(&quote) && message[MAX_SHOWN + 1..].contains(&quote) {
            prefix.push(quote);
        }
    }
    prefix
}

/// A JSON value as a Python value. Bytes are written `{"$bytes": "<hex>"}`, tuples
/// `{"$tuple": [...]}`; object keys are strings.
pub fn json_to_value(j: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    Ok(match j {
        J::Null => Value::None,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(f)) if n.is_f64() => Value::Float(f),
            _ => match n.as_u64() {
                Some(u) => Value::from(u),
                None => return Err(Error::Config(format!("the number {n} does not fit a 64-bit integer"))),
            },
        },
        J::String(s) => Value::Str(s.as_str().into()),
        J::Array(items) => Value::List(items.iter().map(json_to_value).collect::<Result<_>>()?),
        J::Object(map) => {
            if map.len() == 1 {
                if let Some(J::String(hex)) = map.get("$bytes") {
                    return Ok(Value::Bytes(
                        mpconn::AuthKey::from_hex(hex)
                            .map_err(|_| Error::Config(format!("$bytes takes hex digits, got {hex:?}")))?
                            .as_bytes()
                            .to_vec(),
                    ));
                }
                if let Some(J::Array(items)) = map.get("$tuple") {
                    return Ok(Value::Tuple(items.iter().map(json_to_value).collect::<Result<_>>()?));
                }
            }
            let mut dict = mpconn::pickle::Dict::new();
            for (k, v) in map {
                dict.insert(Value::Str(k.as_str().into()), json_to_value(v)?)?;
            }
            Value::Dict(dict)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpconn::pickle::repr;

    #[test]
    fn json_becomes_python_values() {
        let j: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, 2.5, null, true, "x", {"$bytes": "6869"}, {"$tuple": [1]}]}"#).unwrap();
        assert_eq!(repr(&json_to_value(&j).unwrap()), "{'a': [1, 2.5, None, True, 'x', b'hi', (1,)]}");
        let bad: serde_json::Value = serde_json::from_str(r#"{"$bytes": "zz"}"#).unwrap();
        assert!(json_to_value(&bad).is_err());
    }

    #[test]
    fn a_small_pickle_that_shares_a_list_a_million_times_prints_cut() {
        // t = ('a', 'a'); t = (t, t) forty times: 90 bytes, 2^40 leaves if printed in full.
        let mut p = b"\x80\x02X\x01\x00\x00\x00a".to_vec();
        for _ in 0..40 {
            p.extend_from_slice(b"2\x86");
        }
        p.push(b'.');
        let shown = show(&p);
        assert!(shown.len() <= MAX_SHOWN + 3 && shown.ends_with("..."), "{}", shown.len());
    }

    #[test]
    fn one_huge_bytes_or_str_value_prints_cut_and_quoted_as_python_quotes_the_whole() {
        // One value alone used to print whole, four bytes of repr per NUL byte: 16 MiB lines
        // for 4 MiB messages (an outside tester).
        let zeros = vec![0u8; 4 << 20];
        let raw = show(&zeros);
        assert!(raw.len() <= MAX_SHOWN + 3 && raw.starts_with("b'\\x00") && raw.ends_with("..."), "{}", raw.len());
        let pickled = show(&mpconn::pickle::dumps_value(&Value::Bytes(zeros.clone()), 3).unwrap());
        assert!(pickled.len() <= MAX_SHOWN + 3 && pickled.ends_with("..."), "{}", pickled.len());
        let text = show(&mpconn::pickle::dumps(&"\u{1}".repeat(4 << 20), 3).unwrap());
        assert!(text.len() <= MAX_SHOWN + 3 && text.starts_with("'\\x01") && text.ends_with("..."), "{}", text.len());
        // A single quote far past the cut still makes Python choose double quotes.
        let mut late_quote = vec![b'a'; 3 << 20];
        late_quote.push(b'\'');
        assert!(show(&late_quote).starts_with("b\"aaa"));
    }

    #[test]
    fn pickles_show_as_repr_and_other_bytes_as_literals() {
        let p = mpconn::pickle::dumps(&vec![1, 2], 3).unwrap();
        assert_eq!(show(&p), "[1, 2]");
        assert_eq!(show(b"hello\n"), "b'hello\\n'");
    }
}
