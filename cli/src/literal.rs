//! Python literals for `mpconn send --pickle`, parsed without evaluating anything: None, True,
//! False, ints of any size (also `2**100`, `-2**100`), floats, str and bytes literals with
//! escapes, lists, tuples, dicts, sets, and the calls `set(...)`, `frozenset(...)`,
//! `bytearray(...)` on a literal.
//!
//! Evaluation is bounded: nesting (brackets, unary signs and `**` chains alike) stops at
//! [`MAX_DEPTH`], no int may exceed [`MAX_INT_BITS`] (checked *before* `**` computes, from the
//! operands' sizes), and every value made counts against [`MAX_LITERAL_BYTES`] (32 bytes a node
//! plus its heap bytes, as the pickle decoder counts). There is no other way to grow a value: the
//! operators `*`, `<<`, `+` between values and names other than the few calls above are refused
//! as not literals, so `'a'*10**9` or `[0]*10**9` is a usage error, not an allocation. A refused
//! literal says which limit it met ([`LiteralError::TooLarge`]).

use mpconn::pickle::{Dict, Set, Value};
use mpconn::{Error, Result};
use num_bigint::BigInt;

/// Nesting depth of the literal parser: brackets, calls, unary `-`/`+` and `**` operands each
/// count one level (each level is a few stack frames: the parser recurses).
pub const MAX_DEPTH: usize = 200;

/// The largest int a literal may make or compute (1,048,576 bits, about 315,000 decimal
/// digits; a pickle of it is 128 KiB).
pub const MAX_INT_BITS: u64 = 1 << 20;

/// What all the values of one literal may take together, counted as the decoder counts (32
/// bytes a node plus the heap bytes of strings, bytes and big ints). A literal from a command
/// line (at most 128 KiB on Linux) stays far below it.
pub const MAX_LITERAL_BYTES: usize = 64 << 20;

/// Why a literal was refused.
#[derive(Debug)]
pub enum LiteralError {
    /// It is not a literal this parser reads.
    Syntax(Error),
    /// It is one, but it would be too large to build (a limit above).
    TooLarge(Error),
}

impl From<LiteralError> for Error {
    fn from(e: LiteralError) -> Error {
        match e {
            LiteralError::Syntax(e) | LiteralError::TooLarge(e) => e,
        }
    }
}

/// Parses one Python literal.
#[cfg(test)]
pub fn parse(text: &str) -> Result<Value> {
    parse_bounded(text).map_err(Error::from)
}

/// Parses one Python literal, saying whether a refusal is a syntax error or a limit.
pub fn parse_bounded(text: &str) -> std::result::Result<Value, LiteralError> {
    let mut p = Parser { s: text.as_bytes(), i: 0, depth: 0, spent: 0, too_large: None };
    let v = p.expr();
    if let Some(m) = p.too_large.take() {
        return Err(LiteralError::TooLarge(Error::Config(m)));
    }
    let v = v.map_err(LiteralError::Syntax)?;
    p.ws();
    if p.i != p.s.len() {
        let after = p.s[p.i..].iter().find(|c| !c.is_ascii_whitespace()).copied().unwrap_or(b' ');
        let what = if b"*<>@/%&|^+-".contains(&after) {
            "unexpected text after the value (the only operator is `**` between numbers, and a leading `-` or `+`)"
        } else {
            "unexpected text after the value"
        };
        return Err(LiteralError::Syntax(p.err(what)));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// Bytes counted against [`MAX_LITERAL_BYTES`].
    spent: usize,
    /// Set when a limit refused the literal (the error travels up as a plain `Err` too).
    too_large: Option<String>,
}

/// What one value costs beyond the nodes counted for its items: its node and its own heap bytes.
fn own_cost(v: &Value) -> usize {
    let heap = match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) | Value::ByteArray(b) => b.len(),
        Value::BigInt(b) => (b.bits() / 8) as usize + 8,
        _ => 0,
    };
    std::mem::size_of::<Value>() + heap
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::Config(format!("not a Python literal: {what} at offset {}", self.i))
    }

    /// A limit refused the literal: remembered (so `parse_bounded` reports it as such) and
    /// returned as the error that ends parsing.
    fn too_large(&mut self, what: String) -> Error {
        let m = format!("literal too large: {what} (at offset {})", self.i);
        self.too_large = Some(m.clone());
        Error::Config(m)
    }

    /// Counts `bytes` against [`MAX_LITERAL_BYTES`].
    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > MAX_LITERAL_BYTES {
            return Err(self.too_large(format!("its values would take more than {MAX_LITERAL_BYTES} bytes")));
        }
        Ok(())
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) { Ok(()) } else { Err(self.err(&format!("expected {:?}", c as char))) }
    }

    /// A signed atom, with `**` (right-associative, binding tighter than a leading minus).
    fn expr(&mut self) -> Result<Value> {
        let v = self.signed()?;
        self.charge(own_cost(&v))?;
        Ok(v)
    }

    /// One level of nesting: a unary sign, a `**` operand, a bracket's item (through `expr`).
    fn signed(&mut self) -> Result<Value> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_large(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let v = self.signed_inner();
        self.depth -= 1;
        v
    }

    fn signed_inner(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                negate(self.signed()?).ok_or_else(|| self.err("'-' applies to numbers only"))
            }
            Some(b'+') => {
                self.i += 1;
                let v = self.signed()?;
                if matches!(v, Value::Int(_) | Value::BigInt(_) | Value::Float(_)) {
                    Ok(v)
                } else {
                    Err(self.err("'+' applies to numbers only"))
                }
            }
            _ => {
                let base = self.atom()?;
                if self.s[self.i..].starts_with(b"**") || {
                    self.ws();
                    self.s[self.i..].starts_with(b"**")
                } {
                    self.i += 2;
                    let exp = self.signed()?;
                    match power(&base, &exp) {
                        Power::Value(v) => Ok(v),
                        Power::Invalid => Err(self.err("'**' takes an int and a small non-negative int")),
                        Power::TooLarge(bits) => Err(self
                            .too_large(format!("the power would have up to {bits} bits, the limit is {MAX_INT_BITS}"))),
                    }
                } else {
                    Ok(base)
                }
            }
        }
    }

    fn word(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }

    fn atom(&mut self) -> Result<Value> {
        let Some(c) = self.peek() else { return Err(self.err("expected a value")) };
        match c {
            b'[' => {
                self.i += 1;
                Ok(Value::List(self.items(b']')?.0.into()))
            }
            b'(' => {
                self.i += 1;
                let (items, trailing_comma) = self.items(b')')?;
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().unwrap())
                } else {
                    Ok(Value::Tuple(items.into()))
                }
            }
            b'{' => {
                self.i += 1;
                self.dict_or_set()
            }
            b'0'..=b'9' | b'.' => self.number(),
            b'"' | b'\'' => self.string(false, false),
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                let w = self.word().to_ascii_lowercase();
                if matches!(self.s.get(self.i), Some(b'"' | b'\''))
                    && w.len() <= 2
                    && w.chars().all(|c| "bru".contains(c))
                {
                    return self.string(w.contains('b'), w.contains('r'));
                }
                let w = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default().to_string();
                match w.as_str() {
                    "None" => Ok(Value::None),
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "set" | "frozenset" | "bytearray" | "tuple" | "list" => self.call(&w),
                    _ => Err(self.err(&format!("unknown name {w:?}"))),
                }
            }
            _ => Err(self.err(&format!("unexpected {:?}", c as char))),
        }
    }

    /// `set()`, `frozenset([1, 2])`, `bytearray(b'..')`, `tuple([..])`, `list((..))`.
    fn call(&mut self, name: &str) -> Result<Value> {
        self.expect(b'(')?;
        let arg = if self.eat(b')') {
            None
        } else {
            let v = self.expr()?;
            self.eat(b',');
            self.expect(b')')?;
            Some(v)
        };
        // The argument is moved, not copied: a call costs no more than its argument.
        let items: Vec<Value> = match arg {
            None => Vec::new(),
            Some(Value::List(l) | Value::Tuple(l)) => l.into_vec(),
            Some(Value::Set(s) | Value::FrozenSet(s)) => s.into_vec(),
            Some(Value::Bytes(b)) if name == "bytearray" => return Ok(Value::ByteArray(b)),
            Some(Value::Int(n)) if name == "bytearray" && (0..=1 << 20).contains(&n) => {
                self.charge(n as usize)?;
                return Ok(Value::ByteArray(vec![0; n as usize]));
            }
            Some(_) => return Err(self.err(&format!("{name}() takes a list, tuple or set literal here"))),
        };
        Ok(match name {
            "set" => Value::Set(self.set_of(items)?),
            "frozenset" => Value::FrozenSet(self.set_of(items)?),
            "tuple" => Value::Tuple(items.into()),
            "list" => Value::List(items.into()),
            _ => {
                let bytes = items
                    .iter()
                    .map(|v| match v {
                        Value::Int(n) if (0..=255).contains(n) => Ok(*n as u8),
                        _ => Err(self.err("bytearray() takes ints in 0..256")),
                    })
                    .collect::<Result<Vec<u8>>>()?;
                Value::ByteArray(bytes)
            }
        })
    }

    fn set_of(&self, items: Vec<Value>) -> Result<Set> {
        let mut set = Set::new();
        for v in items {
            set.insert(v).map_err(|e| Error::Config(format!("not a Python literal: {e}")))?;
        }
        Ok(set)
    }

    /// Comma-separated values up to `close`; says whether a trailing comma was there.
    fn items(&mut self, close: u8) -> Result<(Vec<Value>, bool)> {
        let mut items = Vec::new();
        let mut trailing = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing));
            }
            items.push(self.expr()?);
            trailing = self.eat(b',');
            if !trailing {
                self.expect(close)?;
                return Ok((items, false));
            }
        }
    }

    fn dict_or_set(&mut self) -> Result<Value> {
        if self.eat(b'}') {
            return Ok(Value::Dict(Dict::new()));
        }
        let first = self.expr()?;
        if self.eat(b':') {
            let mut dict = Dict::new();
            let mut key = first;
            loop {
                let value = self.expr()?;
                dict.insert(key, value).map_err(|e| Error::Config(format!("not a Python literal: {e}")))?;
                if !self.eat(b',') || self.peek() == Some(b'}') {
                    self.expect(b'}')?;
                    return Ok(Value::Dict(dict));
                }
                key = self.expr()?;
                self.expect(b':')?;
            }
        }
        let mut items = vec![first];
        if self.eat(b',') {
            items.extend(self.items(b'}')?.0);
        } else {
            self.expect(b'}')?;
        }
        Ok(Value::Set(self.set_of(items)?))
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_' || self.s[self.i] == b'.')
        {
            // An exponent's sign: 1e-5.
            self.i += 1;
            if matches!(self.s[self.i - 1], b'e' | b'E')
                && !self.s[start..].starts_with(b"0x")
                && matches!(self.s.get(self.i), Some(b'+' | b'-'))
            {
                self.i += 1;
            }
        }
        let raw = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        // Python allows one underscore between digits (1_000, 0x_ff), nowhere else.
        let bad_underscore = raw.ends_with('_')
            || raw.contains("__")
            || raw.contains("_.")
            || raw.contains("._")
            || raw.to_ascii_lowercase().contains("_e")
            || raw.to_ascii_lowercase().contains("e_");
        if bad_underscore {
            return Err(self.err(&format!("invalid decimal literal {raw:?}")));
        }
        let text: String = raw.replace('_', "");
        let lower = text.to_ascii_lowercase();
        let radix = match lower.get(..2) {
            Some("0x") => Some(16),
            Some("0o") => Some(8),
            Some("0b") => Some(2),
            _ => None,
        };
        // Digits times bits per digit bounds the int before it is converted (decimal conversion
        // is quadratic). A decimal digit is log2(10) < 3.33 bits.
        let is_float = radix.is_none() && lower.contains(['.', 'e']);
        let most = match radix {
            Some(r) => (lower.len() as u64).saturating_mul(u32::trailing_zeros(r) as u64),
            None => (lower.len() as u64).saturating_mul(333) / 100,
        };
        if !is_float && most > MAX_INT_BITS + 64 {
            return Err(
                self.too_large(format!("an int literal of {} digits; the limit is {MAX_INT_BITS} bits", lower.len()))
            );
        }
        if let Some(radix) = radix {
            return BigInt::parse_bytes(&lower.as_bytes()[2..], radix)
                .map(Value::from)
                .ok_or_else(|| self.err(&format!("bad number {text:?}")));
        }
        if lower.contains(['.', 'e']) {
            return lower.parse::<f64>().map(Value::Float).map_err(|_| self.err(&format!("bad number {text:?}")));
        }
        if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|b| b != b'0') {
            return Err(self.err("leading zeros in a decimal int are not Python"));
        }
        BigInt::parse_bytes(lower.as_bytes(), 10)
            .map(Value::from)
            .ok_or_else(|| self.err(&format!("bad number {text:?}")))
    }

    /// A quoted literal (the prefix already read); `self.i` is at the quote.
    fn string(&mut self, bytes: bool, raw: bool) -> Result<Value> {
        let q = self.s[self.i];
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else { return Err(self.err("unterminated string")) };
            if c == q && (!triple || self.s[self.i..].starts_with(&[q, q, q])) {
                self.i += if triple { 3 } else { 1 };
                break;
            }
            if c == b'\n' && !triple {
                return Err(self.err("unterminated string"));
            }
            if c != b'\\' || raw {
                if raw && c == b'\\' && self.s.get(self.i + 1).is_some() {
                    out.extend_from_slice(&self.s[self.i..self.i + 2]);
                    self.i += 2;
                    continue;
                }
                if bytes && c >= 0x80 {
                    return Err(self.err("bytes literals take ASCII characters only"));
                }
                out.push(c);
                self.i += 1;
                continue;
            }
            self.i += 1;
            let Some(&e) = self.s.get(self.i) else { return Err(self.err("unterminated string")) };
            self.i += 1;
            let simple = match e {
                b'\n' => Some(None),
                b'\\' | b'\'' | b'"' => Some(Some(e)),
                b'a' => Some(Some(7)),
                b'b' => Some(Some(8)),
                b'f' => Some(Some(12)),
                b'n' => Some(Some(b'\n')),
                b'r' => Some(Some(b'\r')),
                b't' => Some(Some(b'\t')),
                b'v' => Some(Some(11)),
                _ => None,
            };
            if let Some(byte) = simple {
                out.extend(byte);
                continue;
            }
            let code = match e {
                b'0'..=b'7' => {
                    let start = self.i - 1;
                    while self.i < self.s.len() && self.i - start < 3 && (b'0'..=b'7').contains(&self.s[self.i]) {
                        self.i += 1;
                    }
                    u32::from_str_radix(std::str::from_utf8(&self.s[start..self.i]).unwrap(), 8).unwrap()
                }
                b'x' => self.hex(2)?,
                b'u' if !bytes => self.hex(4)?,
                b'U' if !bytes => self.hex(8)?,
                b'N' if !bytes => {
                    // Naming a character needs the Unicode name table, which is not here.
                    return Err(self.err("\\N{...} escapes are not supported: write the character or \\u/\\U"));
                }
                _ => {
                    // Python keeps an unknown escape as it is.
                    out.extend_from_slice(&[b'\\', e]);
                    continue;
                }
            };
            if bytes {
                out.push(u8::try_from(code).map_err(|_| self.err("escape beyond a byte"))?);
            } else {
                let ch = char::from_u32(code).ok_or_else(|| self.err("escape is not a code point"))?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        if bytes {
            Ok(Value::Bytes(out))
        } else {
            String::from_utf8(out).map(Value::from).map_err(|_| self.err("a string escape made invalid UTF-8"))
        }
    }

    fn hex(&mut self, n: usize) -> Result<u32> {
        let digits = self.s.get(self.i..self.i + n).ok_or_else(|| self.err("truncated escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad escape"))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| self.err("bad escape"))?;
        self.i += n;
        Ok(v)
    }
}

fn negate(v: Value) -> Option<Value> {
    Some(match v {
        Value::Int(i) => i.checked_neg().map(Value::Int).unwrap_or_else(|| Value::from(-BigInt::from(i))),
        Value::BigInt(b) => Value::from(-*b),
        Value::Float(f) => Value::Float(-f),
        _ => return None,
    })
}

enum Power {
    Value(Value),
    /// Not an int or float to a small non-negative int power.
    Invalid,
    /// The result would have up to this many bits.
    TooLarge(u64),
}

/// `base ** exp`, refused before computing when the result could exceed [`MAX_INT_BITS`].
fn power(base: &Value, exp: &Value) -> Power {
    let e = match exp {
        Value::Int(e) if (0..=100_000).contains(e) => *e as u32,
        _ => return Power::Invalid,
    };
    if let Value::Float(f) = base {
        return Power::Value(Value::Float(f.powi(e as i32)));
    }
    let Some(b) = base.as_bigint() else { return Power::Invalid };
    // |b| < 2^bits, so |b^e| < 2^(bits * e): an upper bound on the result's size. 0, 1 and -1
    // stay that small whatever the exponent.
    let bits = b.bits();
    if bits > 1 {
        let most = bits.saturating_mul(e as u64);
        if most > MAX_INT_BITS {
            return Power::TooLarge(most);
        }
    }
    Power::Value(Value::from(num_traits::Pow::pow(b, e)))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use mpconn::pickle::repr;

    fn show(text: &str) -> String {
        repr(&parse(text).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    #[test]
    fn python_literals() {
        assert_eq!(
            show("{'a': {1, 2}, 'b': b'x', 3: (1, -2**100)}"),
            "{'a': {1, 2}, 'b': b'x', 3: (1, -1267650600228229401496703205376)}"
        );
        assert_eq!(show("2**100"), "1267650600228229401496703205376");
        assert_eq!(show("1267650600228229401496703205376"), "1267650600228229401496703205376");
        assert_eq!(show("-1"), "-1");
        assert_eq!(
            show("[None, True, False, 1.5, -0.0, 1e300, 0x10, 1_000]"),
            "[None, True, False, 1.5, -0.0, 1e+300, 16, 1000]"
        );
        assert_eq!(show(r#"('\xe9\u20ac\n', b'\x00\xff', r'\d', "q'")"#), r#"('é€\n', b'\x00\xff', '\\d', "q'")"#);
        assert_eq!(show("(1,)"), "(1,)");
        assert_eq!(show("(1)"), "1");
        assert_eq!(show("()"), "()");
        assert_eq!(show("{}"), "{}");
        assert_eq!(show("set()"), "set()");
        assert_eq!(show("frozenset({1})"), "frozenset({1})");
        assert_eq!(show("bytearray(b'ab')"), "bytearray(b'ab')");
        assert_eq!(show("[[1, [2]], {'k': [3,]},]"), "[[1, [2]], {'k': [3]}]");
        for bad in ["{not json", "__import__('os')", "[1,", "'x", "{[1]: 2}", "2**-1", "01"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod limits {
    use super::{LiteralError, MAX_DEPTH, parse_bounded};

    fn too_large(text: &str) -> String {
        match parse_bounded(text) {
            Err(LiteralError::TooLarge(e)) => e.to_string(),
            Err(LiteralError::Syntax(e)) => panic!("{:.60}: a syntax error, not a limit: {e}", text),
            Ok(_) => panic!("{:.60}: accepted", text),
        }
    }

    #[test]
    fn powers_are_refused_before_they_are_computed() {
        let t = std::time::Instant::now();
        for text in [
            "((2**100000)**100000)**100000",
            "(2**100000)**100000",
            "12345**100000",
            "-(3**60000)**12",
            "[1, (2**1000)**1049]",
        ] {
            assert!(too_large(text).contains("bits"), "{text}");
        }
        // Refused from the operands' sizes, so at once (generous: a loaded machine).
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
        // Within the limit, and the trivial bases, still work.
        assert!(parse_bounded("2**100000").is_ok());
        assert!(parse_bounded("(2**1000)**1047").is_ok());
        assert!(parse_bounded("1**100000").is_ok() && parse_bounded("(-1)**99999").is_ok());
        assert!(parse_bounded("0**100000").is_ok() && parse_bounded("1.5**100000").is_ok());
    }

    #[test]
    fn nesting_of_every_kind_stops_at_the_depth_limit() {
        let n = MAX_DEPTH * 50;
        for text in [
            format!("{}1", "-".repeat(n)),
            format!("{}1", "+".repeat(n)),
            format!("{}1", "2**".repeat(n)),
            format!("{}{}", "[".repeat(n), "]".repeat(n)),
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}{}", "frozenset([".repeat(n), "])".repeat(n)),
        ] {
            assert!(too_large(&text).contains("nested"), "{}", &text[..20]);
        }
        assert!(parse_bounded(&format!("{}1", "-".repeat(MAX_DEPTH - 1))).is_ok());
    }

    #[test]
    fn the_total_size_of_the_values_is_bounded() {
        // 65 arrays of 1 MiB pass 64 MiB (each within bytearray()'s own 1 MiB).
        let arrays = format!("[{}]", vec!["bytearray(1048576)"; 65].join(","));
        assert!(too_large(&arrays).contains("bytes"));
    }

    #[test]
    fn int_literals_beyond_the_limit_are_refused_before_conversion() {
        assert!(too_large(&"9".repeat(400_000)).contains("digits"));
        assert!(too_large(&format!("0x{}", "f".repeat(300_000))).contains("digits"));
        assert!(parse_bounded(&"9".repeat(50_000)).is_ok());
    }

    #[test]
    fn repetition_and_other_operators_are_not_literals() {
        for text in ["'a'*10**9", "[0]*10**9", "b'x'*(2**62)", "1<<10**9", "2*3", "(1,)*9", "1+2"] {
            match parse_bounded(text) {
                Err(LiteralError::Syntax(e)) => assert!(e.to_string().contains("operator"), "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
