//! Python 2 values relayed through [`Value`]: decoded with `loads_value`, re-encoded with
//! `dumps_value` for the same peer, they must reach a Python 2 peer as it sent them, `str` and
//! `unicode` apart (issue 18, item 9), and a Python 3 peer as CPython 3 reads the original.
//!
//! `tests/python/py2_relay.py` makes random values on CPython 2.7 from a seed (str ASCII and
//! not, unicode, ints and longs, floats, nested lists, tuples, dicts with str/unicode/int/tuple
//! keys, sets, frozensets, OrderedDicts, `datetime.date`/`time`/`datetime`/`timedelta`,
//! `Decimal`, and every tenth value the issue's own: `time(1, 2, 3)`, `date(2050, 1, 1)`,
//! `datetime(2100, 1, 1)`, `'abc'` beside `u'abc'`, a shared str) and pickles each at protocols
//! 0, 1 and 2. Then:
//!
//! * Rust decodes each pickle and re-encodes it at protocol 2 (what a Python 2 peer reads);
//!   CPython 2.7 loads it and compares it with what it loads from its own pickle:
//!   `type(x) is type(y) and x == y`, recursively, dict keys and set members included. The one
//!   allowance is int and long, which Python 2 programs treat as one type: Rust has one int, so
//!   a small `long` comes back an `int` (and an `int` beyond 32 bits a `long`). Not this item.
//! * Rust re-encodes the protocol-2 pickle at protocols 2-5; CPython 3.11 and 3.13 load each
//!   with `pickle.loads` (as multiprocessing's `Connection.recv`) and compare, types included,
//!   with CPython 3's own reading of Python 2's pickle: `pickle.loads` (encoding 'ASCII', the
//!   default) where it works; where a Python 2 str holds a byte beyond ASCII, CPython 3 refuses
//!   (UnicodeDecodeError), and the reference reads such a str as `bytes`, which is what Rust
//!   makes of it (as `encoding='bytes'` would).
//! * A CPython 2.7 `multiprocessing.connection.Client` sends random values to a Rust listener
//!   that relays each back (`recv_value` then `send_value`), and checks each reply as above.
//!
//! The seed is printed; `MPCONN_PY2_SEED=<n>` replays a run, `MPCONN_PY2_COUNT=<n>` changes its
//! size (300 values by default, so 900 pickles), `MPCONN_PICKLE_SHOW=<n>` shows n failures.
//! Needs pyenv with CPython 2.7.18 (and 3.13.0; 3.11 is `python3`).
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mpconn::pickle::{Value, dumps_value, loads, loads_value, repr};
use mpconn::{Dialect, Listener};
use serde_json::json;

mod common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/py2_relay.py");

fn pyenv(version: &str) -> PathBuf {
    common::python::pyenv_python(version).unwrap_or_else(|| panic!("pyenv has no CPython {version} (required)"))
}

fn py27() -> PathBuf {
    pyenv("2.7.18")
}

/// Runs the suite's script with `args`, `input` on stdin; returns its stdout as JSON lines.
fn run_py(py: &std::path::Path, args: &[&str], input: String) -> Vec<serde_json::Value> {
    common::scripts::run_json_lines(py, SCRIPT, args, input)
}

/// One value from Python 2: its pickles at protocols 0, 1, 2, and its repr (cut).
struct Case {
    id: String,
    pickles: Vec<(u8, Vec<u8>)>,
    repr: String,
}

struct Data {
    seed: u64,
    cases: Vec<Case>,
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("MPCONN_PY2_SEED") {
        Ok(s) => s.parse().expect("MPCONN_PY2_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
                % 1_000_000_007
        }
    })
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let seed = seed();
        let count: usize = std::env::var("MPCONN_PY2_COUNT").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
        eprintln!("python 2 relay: seed {seed} (replay with MPCONN_PY2_SEED={seed}), {count} values");
        let cases = run_py(&py27(), &["gen", &seed.to_string(), &count.to_string()], String::new())
            .iter()
            .map(|j| Case {
                id: j["id"].as_str().unwrap().to_string(),
                pickles: j["p"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap(), common::scripts::unhex(v.as_str().unwrap())))
                    .collect(),
                repr: j["repr"].as_str().unwrap_or("?").to_string(),
            })
            .collect();
        Data { seed, cases }
    })
}

/// Fails with the first failures listed, the seed, and how many there were.
fn verdict(what: &str, checked: usize, failures: &[String]) {
    let seed = data().seed;
    eprintln!("{what}: {checked} checked, {} failed (seed {seed})", failures.len());
    if !failures.is_empty() {
        let show = std::env::var("MPCONN_PICKLE_SHOW").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
        let shown: Vec<&str> = failures.iter().take(show).map(String::as_str).collect();
        panic!(
            "{what}: {} of {checked} failed (replay with MPCONN_PY2_SEED={seed}); the first:\n\n{}",
            failures.len(),
            shown.join("\n\n")
        );
    }
}

/// Rust's relay of one pickle: decoded, then encoded at each of `protocols`.
fn relay(p: &[u8], protocols: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let v = loads_value(p).map_err(|e| format!("Rust cannot decode Python 2's pickle: {e}"))?;
    protocols
        .iter()
        .map(|&proto| {
            dumps_value(&v, proto).map(|b| (proto, b)).map_err(|e| format!("protocol {proto}: Rust cannot encode: {e}"))
        })
        .collect()
}

#[test]
fn python2_values_relayed_at_protocol_2_load_in_python2_as_sent_str_and_unicode_apart() {
    let d = data();
    let mut failures = Vec::new();
    let mut input = String::new();
    let mut checked = 0;
    for c in &d.cases {
        for (proto, p) in &c.pickles {
            checked += 1;
            let id = format!("{} protocol {proto}", c.id);
            match relay(p, &[2]) {
                Ok(out) => {
                    input +=
                        &(json!({"id": id, "ref": common::scripts::hex(p), "cand": common::scripts::hex(&out[0].1)})
                            .to_string()
                            + "\n");
                }
                Err(e) => failures.push(format!("{id}: {e}\n  python: {}", c.repr)),
            }
        }
    }
    for r in run_py(&py27(), &["check2"], input) {
        for e in r["errors"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let c = d.cases.iter().find(|c| id.starts_with(&format!("{} ", c.id))).unwrap();
            failures.push(format!("{id}: {}\n  python: {}", e.as_str().unwrap(), c.repr));
        }
    }
    verdict(
        "Python 2 pickles (protocols 0-2) relayed at protocol 2, loaded by CPython 2.7 == the original",
        checked,
        &failures,
    );
}

fn python3_reads_the_relay_as_it_reads_the_original(py: PathBuf, label: &str) {
    let d = data();
    let mut failures = Vec::new();
    let mut input = String::new();
    let mut checked = 0;
    for c in &d.cases {
        let Some((_, p)) = c.pickles.iter().find(|(proto, _)| *proto == 2) else { continue };
        checked += 4;
        match relay(p, &[2, 3, 4, 5]) {
            Ok(out) => {
                let cand: serde_json::Map<String, serde_json::Value> =
                    out.iter().map(|(proto, b)| (proto.to_string(), common::scripts::hex(b).into())).collect();
                input += &(json!({"id": c.id, "ref": common::scripts::hex(p), "cand": cand}).to_string() + "\n");
            }
            Err(e) => failures.push(format!("{}: {e}\n  python: {}", c.id, c.repr)),
        }
    }
    let mut kinds = std::collections::BTreeMap::new();
    for r in run_py(&py, &["check3"], input) {
        *kinds.entry(r["ref_kind"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        for e in r["errors"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let c = d.cases.iter().find(|c| c.id == id).unwrap();
            failures.push(format!("{id}: {}\n  python 2: {}", e.as_str().unwrap(), c.repr));
        }
    }
    eprintln!("{label}: the references by how CPython 3 read Python 2's pickle: {kinds:?}");
    verdict(
        &format!("Python 2 pickles relayed at protocols 2-5, loaded by {label} == {label}'s reading of the original"),
        checked,
        &failures,
    );
}

#[test]
fn python3_11_reads_the_relay_of_python2_values_as_it_reads_the_originals() {
    python3_reads_the_relay_as_it_reads_the_original(PathBuf::from("python3"), "CPython 3.11");
}

#[test]
fn python3_13_reads_the_relay_of_python2_values_as_it_reads_the_originals() {
    python3_reads_the_relay_as_it_reads_the_original(pyenv("3.13.0"), "CPython 3.13");
}

/// A CPython 2.7 client sends values over a real connection to a Rust listener that relays each
/// back with `recv_value` and `send_value` (the protocol the handshake chose: 2).
#[test]
fn a_rust_relay_gives_a_python2_client_back_what_it_sent() {
    const KEY: &str = "relay key";
    const COUNT: usize = 200;
    let mut listener =
        Listener::builder().address("127.0.0.1:0").authkey(KEY).dialect(Dialect::CpythonLegacy).bind().unwrap();
    let address = listener.address().to_string();
    let child = Command::new(py27())
        .args([SCRIPT, "relay", &address, KEY, &seed().to_string(), &COUNT.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = listener.accept_within(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(conn.pickle_protocol(), 2, "a legacy-dialect peer may be Python 2");
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut relayed = 0;
    for _ in 0..=COUNT {
        let v = conn.recv_value().unwrap();
        if v.as_str() == Some("quit") {
            break;
        }
        conn.send_value(&v).unwrap();
        relayed += 1;
    }
    let out = common::scripts::finish(child, "the Python 2 relay client");
    assert!(out.status.success(), "the Python 2 client failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> =
        report["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    eprintln!(
        "relay over a connection: {relayed} values relayed, {} came back different (seed {})",
        errors.len(),
        seed()
    );
    assert_eq!(relayed, COUNT);
    assert!(
        errors.is_empty(),
        "{} of {COUNT} values came back different (MPCONN_PY2_SEED={}); the first:\n{}",
        errors.len(),
        seed(),
        errors.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
    );
}

// Without Python: what the variant promises.

/// `'abc'` pickled by Python 2.7 at protocol 2.
const PY2_ABC: &[u8] = b"\x80\x02U\x03abcq\x00.";

#[test]
fn value_stays_32_bytes() {
    eprintln!("size_of::<Value>() = {}", std::mem::size_of::<Value>());
    assert_eq!(std::mem::size_of::<Value>(), 32);
}

#[test]
fn an_ascii_python2_str_is_a_str_to_everything_but_the_encoder() {
    let v = loads_value(PY2_ABC).unwrap();
    assert!(v.is_py2_str());
    assert!(matches!(v, Value::Py2Str(_)));
    assert_eq!(v, Value::from("abc"));
    assert_eq!(Value::from("abc"), v);
    assert_ne!(v, Value::Bytes(b"abc".to_vec()), "'abc' != b'abc', as Python 3 has it");
    assert_eq!(v.as_str(), Some("abc"));
    assert_eq!(v.type_name(), "str");
    assert_eq!(repr(&v), "'abc'");
    assert_eq!(loads::<String>(PY2_ABC).unwrap(), "abc");
    // One key with the str of the same text, found by either.
    let d = Value::dict([(v.clone(), Value::Int(1)), (Value::from("abc"), Value::Int(2))]).unwrap();
    assert_eq!(d.as_dict().unwrap().len(), 1);
    assert_eq!(d.get("abc"), Some(&Value::Int(2)));
    assert_eq!(d.as_dict().unwrap().get(&v), Some(&Value::Int(2)));
    let big = Value::dict((0..100).map(|i| (Value::py2_str(format!("k{i}").as_bytes()), Value::Int(i)))).unwrap();
    assert_eq!(big.get("k77"), Some(&Value::Int(77)), "through the hash index of a big dict");
    let s = Value::set([Value::from("abc"), v.clone()]).unwrap();
    assert_eq!(s.as_set().unwrap().len(), 1);
    assert!(s.as_set().unwrap().contains(&v));
    // Tuples holding one hash and compare alike.
    let t = Value::set([Value::tuple(vec![v.clone(), Value::Int(1)])]).unwrap();
    assert!(t.as_set().unwrap().contains(&Value::tuple(vec![Value::from("abc"), Value::Int(1)])));
}

#[test]
fn protocol_2_writes_a_python2_str_back_as_a_byte_string_and_3_to_5_as_a_str() {
    let v = loads_value(PY2_ABC).unwrap();
    assert_eq!(dumps_value(&v, 2).unwrap(), PY2_ABC, "Python 2.7's own bytes");
    assert_eq!(dumps_value(&v, 3).unwrap(), b"\x80\x03X\x03\x00\x00\x00abcq\x00.");
    assert_eq!(dumps_value(&v, 4).unwrap(), b"\x80\x04\x8c\x03abc\x94.");
    assert_eq!(dumps_value(&v, 5).unwrap(), b"\x80\x05\x8c\x03abc\x94.");
    // 256 bytes and more: BINSTRING, as Python 2.
    let long = "x".repeat(300);
    let p = dumps_value(&Value::py2_str(long.as_bytes()), 2).unwrap();
    assert_eq!(&p[..7], b"\x80\x02T\x2c\x01\x00\x00");
    assert!(loads_value(&p).unwrap().is_py2_str());
    // A hand-built Py2Str beyond ASCII cannot be a byte string Python 3 reads: a str.
    let p = dumps_value(&Value::Py2Str("é".into()), 2).unwrap();
    assert_eq!(p, b"\x80\x02X\x02\x00\x00\x00\xc3\xa9q\x00.");
}

#[test]
fn a_python2_str_beyond_ascii_goes_back_through_codecs_encode() {
    // 'caf\xe9' from Python 2: Bytes, written at protocol 2 as Python 3 writes bytes, which
    // Python 2 reads as a str.
    let v = loads_value(b"\x80\x02U\x04caf\xe9q\x00.").unwrap();
    assert_eq!(v, Value::Bytes(b"caf\xe9".to_vec()));
    assert_eq!(Value::py2_str(b"caf\xe9"), v);
    let p = dumps_value(&v, 2).unwrap();
    assert!(p.starts_with(b"\x80\x02c_codecs\nencode\n"), "{p:?}");
}

#[test]
fn a_str_and_a_python2_str_of_one_text_are_memoised_apart() {
    let v = Value::from(vec![Value::from("abc"), Value::py2_str(b"abc"), Value::from("abc"), Value::py2_str(b"abc")]);
    let p = dumps_value(&v, 2).unwrap();
    let back = loads_value(&p).unwrap();
    let kinds: Vec<bool> = back.as_list().unwrap().iter().map(Value::is_py2_str).collect();
    assert_eq!(kinds, [false, true, false, true], "{p:?}");
    // Each text written once, then fetched from the memo.
    assert_eq!(p.windows(3).filter(|w| w == b"abc").count(), 2, "{p:?}");
}

#[test]
fn python2_date_time_and_datetime_state_goes_back_as_python2_wrote_it() {
    // datetime.date(2050, 1, 1), datetime.time(1, 2, 3) and datetime.datetime(2100, 1, 1) as
    // CPython 2.7 pickles them at protocol 2: their state is an ASCII str.
    let cases: [&[u8]; 3] = [
        b"\x80\x02cdatetime\ndate\nq\x00U\x04\x08\x02\x01\x01q\x01\x85q\x02Rq\x03.",
        b"\x80\x02cdatetime\ntime\nq\x00U\x06\x01\x02\x03\x00\x00\x00q\x01\x85q\x02Rq\x03.",
        b"\x80\x02cdatetime\ndatetime\nq\x00U\n\x084\x01\x01\x00\x00\x00\x00\x00\x00q\x01\x85q\x02Rq\x03.",
    ];
    for p in cases {
        let v = loads_value(p).unwrap();
        let state = &v.as_object().unwrap().args()[0];
        assert!(state.is_py2_str(), "{v:?}");
        let out = dumps_value(&v, 2).unwrap();
        // The state is the same SHORT_BINSTRING, byte for byte.
        let at = p.iter().position(|&b| b == b'U').unwrap();
        let len = p[at + 1] as usize;
        let want = &p[at..at + 2 + len];
        assert!(out.windows(want.len()).any(|w| w == want), "{out:?} lacks {want:?}");
    }
}

#[test]
fn serde_reads_a_python2_str_as_a_str() {
    // ('a', 'b') from Python 2.7 at protocol 2, into typed values, and a Value inside one.
    let p = b"\x80\x02U\x01aq\x00U\x01bq\x01\x86q\x02.";
    assert_eq!(loads::<(String, String)>(p).unwrap(), ("a".to_string(), "b".to_string()));
    let (a, b) = loads::<(String, Value)>(p).unwrap();
    assert_eq!(a, "a");
    // Through serde a Value is rebuilt from what serde carries (a str): equal, but no longer
    // marked as Python 2's; relay with loads_value / dumps_value to keep the mark.
    assert_eq!(b, Value::from("b"));
    assert_eq!(b.as_str(), Some("b"));
}

/// Whether each string of `v`, in order (list and tuple items, dict keys and values, set
/// members), is a Python 2 `str`: `Some(true)`, a `str`: `Some(false)`.
fn string_kinds(v: &Value, out: &mut Vec<bool>) {
    match v.resolved() {
        Value::Str(_) => out.push(false),
        Value::Py2Str(_) => out.push(true),
        Value::List(l) | Value::Tuple(l) => l.iter().for_each(|x| string_kinds(x, out)),
        Value::Dict(d) => d.iter().for_each(|(k, x)| {
            string_kinds(k, out);
            string_kinds(x, out);
        }),
        Value::Set(s) | Value::FrozenSet(s) => s.iter().for_each(|x| string_kinds(x, out)),
        _ => {}
    }
}

/// A seeded xorshift: random values whose strings come from a few texts in both kinds, so the
/// encoder's str memo meets `'t'` and `u't'` over and over.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn text(&mut self) -> Value {
        const TEXTS: [&str; 5] = ["", "a", "key", "shared text", "x"];
        let t = TEXTS[self.below(TEXTS.len() as u64) as usize];
        if self.below(2) == 0 { Value::py2_str(t.as_bytes()) } else { Value::from(t) }
    }

    fn value(&mut self, depth: u32) -> Value {
        if depth > 3 || self.below(3) == 0 {
            return match self.below(4) {
                0 => Value::Int(self.below(1000) as i64),
                _ => self.text(),
            };
        }
        let n = self.below(6);
        match self.below(4) {
            0 => Value::from((0..n).map(|_| self.value(depth + 1)).collect::<Vec<_>>()),
            1 => Value::tuple((0..n).map(|_| self.value(depth + 1)).collect()),
            2 => Value::dict((0..n).map(|_| (self.text(), self.value(depth + 1)))).unwrap(),
            _ => Value::set((0..n).map(|_| self.text())).unwrap(),
        }
    }
}

#[test]
fn random_mixes_of_str_and_python2_str_keep_their_kinds_at_protocol_2_only() {
    let seed = seed() | 1;
    let mut rng = Rng(seed);
    let (mut values, mut strings) = (0, 0);
    for i in 0..2000 {
        let v = rng.value(0);
        let mut want = Vec::new();
        string_kinds(&v, &mut want);
        for proto in 2..=5u8 {
            let p = dumps_value(&v, proto).unwrap();
            let back = loads_value(&p).unwrap();
            assert_eq!(back, v, "value {i} (seed {seed}) protocol {proto}");
            let mut got = Vec::new();
            string_kinds(&back, &mut got);
            let expect: Vec<bool> = if proto == 2 { want.clone() } else { vec![false; want.len()] };
            assert_eq!(got, expect, "value {i} (seed {seed}) protocol {proto}: {v:?}\n{p:?}");
        }
        values += 1;
        strings += want.len();
    }
    eprintln!("{values} random values, {strings} strings, kinds kept at protocol 2 (seed {seed})");
}

/// A Python 2.7 `date`/`datetime`/`time` whose state bytes happen to be ASCII (1900-01-01) is
/// received as a Value whose argument is a Python 2 `str` (`Value::Py2Str`) and re-sent with
/// `send_value` (protocol 2, the one chosen for a Python 2 peer) as a `str` again: before, it
/// became `unicode` and Python 2 raised `TypeError: an integer is required`.
#[test]
fn python27_date_relayed_through_rust_values_comes_back() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(false).bind().unwrap();
    let addr = listener.address().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "import datetime\nfrom multiprocessing.connection import Client\n\
         for v in [datetime.date(1900, 1, 1), datetime.datetime(1900, 1, 1, 1, 1, 1), datetime.time(1, 2, 3)]:\n\
         \x20   c = Client(('{host}', {port}))\n\
         \x20   c.send(v)\n\
         \x20   try:\n\
         \x20       print(repr(c.recv()))\n\
         \x20   except Exception as e:\n\
         \x20       print('EXC %r' % e)\n"
    );
    let child = Command::new(py27()).args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    for _ in 0..3 {
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.pickle_protocol(), 2);
        let v = conn.recv_value().unwrap();
        conn.send_value(&v).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["datetime.date(1900, 1, 1)", "datetime.datetime(1900, 1, 1, 1, 1, 1)", "datetime.time(1, 2, 3)"],
        "Python 2.7 got back:\n{out}"
    );
}
