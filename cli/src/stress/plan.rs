//! What `stress` sends and how it judges a reply: the command-line options turned into a
//! [`Plan`] once, before any connection, so a typo in a request is a usage error and not a run
//! full of failures.
//!
//! `{seq}` (the request's number on its client, from 0) and `{client}` (the client's number)
//! are substituted in the literal *text* before it is parsed, so they can stand for an int
//! (`'n': {seq}`) or sit inside a string (`'key-{seq}'`). A request without a placeholder is
//! parsed once.

use std::path::PathBuf;
use std::time::Duration;

use mpconn::pickle::Value;
use mpconn::{Error, Result};

use crate::keys::KeyArgs;

/// Everything `mpconn stress` was asked to do.
pub struct StressArgs {
    pub address: Option<String>,
    pub clients: usize,
    pub messages: Option<u64>,
    pub size: usize,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub churn: f64,
    pub keys: KeyArgs,
    pub requests: Vec<String>,
    pub request_bytes: Option<String>,
    pub expect: Option<String>,
    pub ramp: Option<Duration>,
    pub json: bool,
    pub hdr_out: Option<PathBuf>,
    pub threads: usize,
    pub seed: Option<u64>,
    pub timeout: Duration,
}

/// A Python value to send or expect, maybe with placeholders.
#[derive(Clone)]
pub enum Template {
    /// No placeholder: parsed once.
    Fixed(Value),
    /// Literal text holding `{seq}` or `{client}`, parsed per request.
    Text(String),
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Template> {
        if text.contains("{seq}") || text.contains("{client}") {
            // Parse once with sample numbers now, so a malformed template fails before the run.
            crate::send::parse_value(&substitute(text, 0, 0), false)?;
            Ok(Template::Text(text.to_string()))
        } else {
            Ok(Template::Fixed(crate::send::parse_value(text, false)?))
        }
    }

    /// The value for request `seq` of client `client`.
    pub fn value(&self, seq: u64, client: u64) -> Result<Value> {
        match self {
            Template::Fixed(v) => Ok(v.clone()),
            Template::Text(t) => crate::send::parse_value(&substitute(t, seq, client), false),
        }
    }
}

fn substitute(text: &str, seq: u64, client: u64) -> String {
    text.replace("{seq}", &seq.to_string()).replace("{client}", &client.to_string())
}

/// What each request is.
pub enum Payload {
    /// Today's echo test: sequence, time, client, filler, checksum (`--size` bytes).
    Filler,
    /// The same bytes every time (`--request-bytes`).
    Bytes(Vec<u8>),
    /// Pickled Python values, round robin (`--request`).
    Values(Vec<Template>),
}

/// How a reply is judged.
pub enum Expect {
    /// Any reply passes.
    Any,
    /// The reply equals the request (for values: Python `==` after unpickling; for filler: the
    /// checksum, sequence and client verified).
    Echo,
    /// The reply unpickles to this value (Python `==`); the text is the kind's name.
    Value(Template, String),
}

/// The parsed `--request*` and `--expect` options.
pub struct Plan {
    pub payload: Payload,
    pub expect: Expect,
}

impl Plan {
    pub fn new(args: &StressArgs) -> Result<Plan> {
        let payload = match (&args.request_bytes, args.requests.is_empty()) {
            (Some(_), false) => return Err(Error::Config("give --request or --request-bytes, not both".into())),
            (Some(b), true) => Payload::Bytes(parse_bytes(b)?),
            (None, false) => Payload::Values(args.requests.iter().map(|r| Template::parse(r)).collect::<Result<_>>()?),
            (None, true) => Payload::Filler,
        };
        let expect = match args.expect.as_deref() {
            // A real service is not an echo server: with requests, any reply passes unless asked.
            None if !matches!(payload, Payload::Filler) => Expect::Any,
            None | Some("echo") => Expect::Echo,
            Some("any") => Expect::Any,
            Some(text) => Expect::Value(Template::parse(text)?, text.to_string()),
        };
        Ok(Plan { payload, expect })
    }

    /// The request to send as request `seq` of client `client`: the value (kept for `--expect
    /// echo`) and its pickle; `None` for filler.
    pub fn request(&self, seq: u64, client: u64, protocol: u8) -> Result<Option<(Option<Value>, Vec<u8>)>> {
        match &self.payload {
            Payload::Filler => Ok(None),
            Payload::Bytes(b) => Ok(Some((None, b.clone()))),
            Payload::Values(ts) => {
                let t = &ts[(seq % ts.len() as u64) as usize];
                let v = t.value(seq, client)?;
                let bytes = mpconn::pickle::dumps_value(&v, protocol).map_err(|e| Error::Config(e.to_string()))?;
                Ok(Some((Some(v), bytes)))
            }
        }
    }
}

/// `--request-bytes`: hex digits, or `@FILE`.
pub(super) fn parse_bytes(text: &str) -> Result<Vec<u8>> {
    if let Some(path) = text.strip_prefix('@') {
        return std::fs::read(path).map_err(|e| Error::Config(format!("--request-bytes {text}: {e}")));
    }
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(Error::Config(format!("--request-bytes {text:?}: an odd number of hex digits")));
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| Error::Config(format!("--request-bytes {text:?}: not hex digits (or @FILE)")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_in_the_text_before_parsing() {
        let t = Template::parse("{'op': 'get', 'n': {seq}, 'k': 'c{client}'}").unwrap();
        let v = t.value(7, 3).unwrap();
        assert_eq!(mpconn::pickle::repr(&v), "{'op': 'get', 'n': 7, 'k': 'c3'}");
        assert!(Template::parse("{'n': {seq}").is_err());
    }

    #[test]
    fn request_bytes_take_hex_or_a_file() {
        assert_eq!(parse_bytes("00ff 10").unwrap(), vec![0, 255, 16]);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("zz").is_err());
        assert!(parse_bytes("@/nonexistent/file").is_err());
    }
}
