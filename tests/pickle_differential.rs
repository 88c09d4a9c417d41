//! The pickle codec against real CPython (issue 10), both ways.
//!
//! `tests/python/pickle_gen.py` makes random plain-data values from a seed (nested containers,
//! shared sub-objects, every int size, awkward floats and unicode, bytes, sets, 500-900-level
//! chains) and pickles them: CPython 3.13 at protocols 2-5 (and 0-1 for every tenth), CPython 2.7
//! at protocol 2 (and 0-1 for every tenth). Then:
//!
//! * Rust decodes each pickle and its `repr` must be exactly Python's `repr` of the original
//!   (for Python 2's pickles: Python 3's repr of what it loads, sets in pickle order);
//! * Rust re-encodes at protocols 2-5 and CPython 3.13 loads its bytes: same types, same values,
//!   same sharing of mutable containers as the original;
//! * Rust's protocol-2 bytes load in CPython 2.7 the same as CPython's own protocol-2 bytes,
//!   `str` and `unicode` apart, dict keys and set members included (int and long are one type);
//! * the forms issue 10 lists (shared sub-objects, Python 3's protocol-2 bytes/bytearray/set,
//!   cycles, OrderedDict, namedtuple, class instances, UUID, datetime, Decimal, complex) and a
//!   few hand-written pickles (CPython's `pickle.loads` is the oracle).
//!
//! Values go through one Python process per interpreter and step (JSON lines of hex). The seed is
//! printed; `MPCONN_PICKLE_SEED=<n>` replays a run, `MPCONN_PICKLE_COUNT=<n>` changes its size,
//! `MPCONN_PICKLE_SHOW=<n>` shows n failures of each test (12 by default).
//! Needs pyenv with CPython 3.13.0 and 2.7.18 (as the interop tests and .ci/run do).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread;

use mpconn::pickle::{dumps_value, loads_value, repr};
use serde_json::json;

mod common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pickle_gen.py");
/// Stack for the threads that decode here: this suite tests agreement with CPython, not depth
/// (tests/pickle_hostile.rs does that on a 256 KiB stack), so a deep chain that today's decoder
/// recurses on is reported as a mismatch rather than ending the whole run.
const STACK: usize = 64 << 20;

fn python(version: &str) -> PathBuf {
    common::python::pyenv_python(version).unwrap_or_else(|| panic!("pyenv has no CPython {version} (required)"))
}

fn py313() -> PathBuf {
    python("3.13.0")
}

fn py27() -> PathBuf {
    python("2.7.18")
}

/// Runs the suite's script with `args`, `input` on stdin; returns its stdout as JSON lines.
fn run_py(py: &std::path::Path, args: &[&str], input: String) -> Vec<serde_json::Value> {
    common::scripts::run_json_lines(py, SCRIPT, args, input)
}

fn short(s: &str) -> String {
    if s.chars().count() > 300 {
        format!("{}… ({} chars)", s.chars().take(300).collect::<String>(), s.len())
    } else {
        s.into()
    }
}

/// One value from Python: its pickles by protocol, and what its repr must be.
#[derive(Clone, Debug)]
struct Case {
    id: String,
    pickles: BTreeMap<u8, Vec<u8>>,
    repr: Option<String>,
    /// Python 3.13's protocol-2 pickle of the value (the reference for Python 2.7).
    p2: Option<Vec<u8>>,
    expect: String,
    names: Vec<String>,
    /// A hand-written pickle (the fixed set).
    raw: Option<Vec<u8>>,
}

fn case(j: &serde_json::Value) -> Case {
    let pickles = j["p"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.parse().unwrap(), common::scripts::unhex(v.as_str().unwrap()))).collect())
        .unwrap_or_default();
    Case {
        id: j["id"].as_str().unwrap().to_string(),
        pickles,
        repr: j["repr"].as_str().map(String::from),
        p2: j["p2_for_py27"].as_str().map(common::scripts::unhex),
        expect: j["expect"].as_str().unwrap_or("value").to_string(),
        names: j["names"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        raw: j["raw"].as_str().map(common::scripts::unhex),
    }
}

struct Data {
    seed: u64,
    py3: Vec<Case>,
    py2: Vec<Case>,
    fixed: Vec<Case>,
}

/// Generated once per test binary, shared by the tests below.
fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let seed = match std::env::var("MPCONN_PICKLE_SEED") {
            Ok(s) => s.parse().expect("MPCONN_PICKLE_SEED is a number"),
            Err(_) => {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
                    % 1_000_000_007
            }
        };
        let count: usize = std::env::var("MPCONN_PICKLE_COUNT").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
        eprintln!("pickle differential: seed {seed} (replay with MPCONN_PICKLE_SEED={seed}), {count} values");
        let (s, n, n2) = (seed.to_string(), count.to_string(), (count / 2).to_string());
        let py3 = run_py(&py313(), &["gen", &s, &n], String::new()).iter().map(case).collect::<Vec<_>>();
        let mut py2 = run_py(&py27(), &["gen", &s, &n2], String::new()).iter().map(case).collect::<Vec<_>>();
        // What Python 3 makes of Python 2's pickles is their reference repr.
        let input: String = py2
            .iter()
            .map(|c| json!({"id": c.id, "p": common::scripts::hex(&c.pickles[&2])}).to_string() + "\n")
            .collect();
        let reprs = run_py(&py313(), &["refrepr"], input);
        for (c, r) in py2.iter_mut().zip(&reprs) {
            assert_eq!(r["id"].as_str(), Some(c.id.as_str()));
            c.repr = r["repr"].as_str().map(String::from);
        }
        let fixed = run_py(&py313(), &["fixed"], String::new()).iter().map(case).collect();
        Data { seed, py3, py2, fixed }
    })
}

/// Decodes, then reprs (and drops) on the same big stack.
fn decode_repr(p: &[u8]) -> Result<String, String> {
    let p = p.to_vec();
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let v = match catch_unwind(AssertUnwindSafe(|| loads_value(&p))) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(format!("error: {e}")),
                Err(_) => return Err("PANIC in loads_value".into()),
            };
            catch_unwind(AssertUnwindSafe(|| repr(&v))).map_err(|_| "PANIC in repr".to_string())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Decodes `p` and re-encodes at protocols 2-5: hex by protocol, and what failed.
fn reencode(p: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<String>) {
    let p = p.to_vec();
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let mut out = serde_json::Map::new();
            let mut errors = Vec::new();
            let v = match catch_unwind(AssertUnwindSafe(|| loads_value(&p))) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return (out, vec![format!("Rust cannot decode CPython's pickle: {e}")]),
                Err(_) => return (out, vec!["PANIC in loads_value".into()]),
            };
            for proto in 2..=5u8 {
                match catch_unwind(AssertUnwindSafe(|| dumps_value(&v, proto))) {
                    Ok(Ok(b)) => {
                        out.insert(proto.to_string(), common::scripts::hex(&b).into());
                    }
                    Ok(Err(e)) => errors.push(format!("protocol {proto}: Rust cannot encode: {e}")),
                    Err(_) => errors.push(format!("protocol {proto}: PANIC in dumps_value")),
                }
            }
            (out, errors)
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Fails with the first failures listed, the seed, and how many there were.
fn verdict(what: &str, checked: usize, failures: &[String]) {
    let seed = data().seed;
    eprintln!("{what}: {checked} checked, {} failed (seed {seed})", failures.len());
    if !failures.is_empty() {
        let show = std::env::var("MPCONN_PICKLE_SHOW").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
        let shown: Vec<&str> = failures.iter().take(show).map(String::as_str).collect();
        panic!(
            "{what}: {} of {checked} failed (replay with MPCONN_PICKLE_SEED={seed}); the first:\n\n{}",
            failures.len(),
            shown.join("\n\n")
        );
    }
}

/// `s` with Python's `\\xNN`, `\\uNNNN` and `\\UNNNNNNNN` escapes of non-ASCII characters
/// replaced by the characters: to tell a failure of escaping apart from a wrong value.
fn unescape_non_ascii(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '\\' {
            let rest = &s[i + 1..];
            let digits = match rest.chars().next() {
                Some('x') => 2,
                Some('u') => 4,
                Some('U') => 8,
                Some('\\') => {
                    out.push_str("\\\\");
                    it.next();
                    continue;
                }
                _ => 0,
            };
            if digits > 0 {
                let code = rest.get(1..1 + digits).and_then(|h| u32::from_str_radix(h, 16).ok());
                if let Some(ch) = code.filter(|&n| n >= 0x80).and_then(char::from_u32) {
                    out.push(ch);
                    for _ in 0..=digits {
                        it.next();
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Where two reprs first differ, with 40 characters of context from each.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let i = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let ctx = |v: &[char]| v[i.saturating_sub(20)..(i + 20).min(v.len())].iter().collect::<String>();
    format!("char {i}: python …{}… rust …{}…", ctx(&a), ctx(&b))
}

fn repr_failures(cases: &[Case]) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for c in cases {
        let want = c.repr.as_deref().expect("a reference repr");
        for (proto, p) in &c.pickles {
            checked += 1;
            match decode_repr(p) {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!(
                    "{} protocol {proto}: repr differs{}\n  first difference: {}\n  python: {}\n  rust:   {}\n  pickle: {}",
                    c.id,
                    if unescape_non_ascii(want) == unescape_non_ascii(&got) {
                        " (only in which non-ASCII characters are escaped: Python escapes those str.isprintable() rejects)"
                    } else {
                        ""
                    },
                    first_difference(want, &got),
                    short(want),
                    short(&got),
                    short(&common::scripts::hex(p))
                )),
                Err(e) => failures.push(format!(
                    "{} protocol {proto}: {e}\n  python: {}\n  pickle: {}",
                    c.id,
                    short(want),
                    short(&common::scripts::hex(p))
                )),
            }
        }
    }
    (checked, failures)
}

#[test]
fn cpython_313_pickles_decode_to_pythons_repr() {
    let (checked, failures) = repr_failures(&data().py3);
    verdict("CPython 3.13 pickles, protocols 0-5: Rust repr == Python repr", checked, &failures);
}

#[test]
fn cpython_27_pickles_decode_to_pythons_repr() {
    let (checked, failures) = repr_failures(&data().py2);
    verdict("CPython 2.7 pickles, protocols 0-2: Rust repr == Python 3's repr", checked, &failures);
}

/// Rust re-encodes each case; `py` loads the candidates and compares them with the reference.
fn roundtrip_failures(py: &std::path::Path, cases: &[(&Case, Vec<u8>)], protocols: &[u8]) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut input = String::new();
    let mut checked = 0;
    for (c, reference) in cases {
        let src = c.pickles.get(&4).or_else(|| c.pickles.get(&2)).or(c.raw.as_ref()).unwrap();
        let (mut cand, errors) = reencode(src);
        cand.retain(|k, _| protocols.contains(&k.parse().unwrap()));
        checked += protocols.len();
        for e in errors
            .into_iter()
            .filter(|e| protocols.iter().any(|p| e.contains(&format!("protocol {p}"))) || !e.starts_with("protocol"))
        {
            failures.push(format!("{}: {e}\n  pickle: {}", c.id, short(&common::scripts::hex(src))));
        }
        if !cand.is_empty() {
            input += &(json!({"id": c.id, "ref": common::scripts::hex(reference), "cand": cand}).to_string() + "\n");
        }
    }
    for r in run_py(py, &["check"], input) {
        for e in r["errors"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let c = cases.iter().find(|(c, _)| c.id == id).unwrap();
            failures.push(format!(
                "{id}: {}\n  python: {}",
                e.as_str().unwrap(),
                short(c.0.repr.as_deref().unwrap_or("?"))
            ));
        }
    }
    (checked, failures)
}

#[test]
fn rust_pickles_at_protocols_2_to_5_load_back_equal_in_cpython_313() {
    let d = data();
    let cases: Vec<(&Case, Vec<u8>)> = d
        .py3
        .iter()
        .map(|c| (c, c.pickles[&4].clone()))
        .chain(d.py2.iter().map(|c| (c, c.pickles[&2].clone())))
        .collect();
    let (checked, failures) = roundtrip_failures(&py313(), &cases, &[2, 3, 4, 5]);
    verdict("Rust pickles at protocols 2-5 loaded by CPython 3.13 == the original", checked, &failures);
}

#[test]
fn rust_protocol_2_pickles_load_in_cpython_27_as_cpythons_own_do() {
    let d = data();
    let cases: Vec<(&Case, Vec<u8>)> = d
        .py3
        .iter()
        .map(|c| (c, c.p2.clone().unwrap()))
        .chain(d.py2.iter().map(|c| (c, c.pickles[&2].clone())))
        .collect();
    let (checked, failures) = roundtrip_failures(&py27(), &cases, &[2]);
    verdict("Rust protocol-2 pickles loaded by CPython 2.7 == CPython's own protocol-2 pickle", checked, &failures);
}

#[test]
fn the_forms_issue_10_lists_decode_as_python_has_them() {
    let d = data();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut roundtrip: Vec<(&Case, Vec<u8>)> = Vec::new();
    for c in &d.fixed {
        let pickles: Vec<(String, &Vec<u8>)> = match &c.raw {
            Some(raw) => vec![("hand-written".into(), raw)],
            None => c.pickles.iter().map(|(p, b)| (format!("protocol {p}"), b)).collect(),
        };
        for (label, p) in pickles {
            checked += 1;
            let got = decode_repr(p);
            let py = c.repr.as_deref().unwrap_or("(no repr)");
            let problem = match (c.expect.as_str(), &got) {
                ("error", Ok(r)) => Some(format!("decoded as {} where CPython refuses or it is a cycle", short(r))),
                ("error", Err(e)) if e.contains("PANIC") => Some(e.clone()),
                ("error", Err(_)) => None,
                ("value", Ok(r)) if c.repr.as_deref().is_none_or(|want| want == r) => None,
                ("value", Ok(r)) => Some(format!("repr differs\n  python: {}\n  rust:   {}", short(py), short(r))),
                ("value", Err(e)) => Some(format!("{e}\n  python: {}", short(py))),
                ("object", Ok(r)) => {
                    let named = c.names.iter().any(|n| r.contains(n.as_str()));
                    if r == py || (named && !r.starts_with('{') && !r.starts_with('[')) {
                        None
                    } else {
                        Some(format!(
                            "mangled: the repr must be Python's or name the class {:?}\n  python: {}\n  rust:   {}",
                            c.names,
                            short(py),
                            short(r)
                        ))
                    }
                }
                ("object", Err(e)) => {
                    Some(format!("{e} (must be an explicit object or typed value)\n  python: {}", short(py)))
                }
                (other, _) => panic!("unknown expectation {other}"),
            };
            if let Some(problem) = problem {
                failures.push(format!("{} ({label}): {problem}\n  pickle: {}", c.id, short(&common::scripts::hex(p))));
            }
        }
        if c.expect != "error" {
            let reference = c.raw.clone().unwrap_or_else(|| c.pickles.values().last().unwrap().clone());
            roundtrip.push((c, reference));
        }
    }
    let (n, mut more) = roundtrip_failures(&py313(), &roundtrip, &[2, 3, 4, 5]);
    failures.append(&mut more);
    verdict("issue 10's forms: decoded as CPython has them, written back equal", checked + n, &failures);
}

// ---------------------------------------------------------------------------------------------
// Typed values (issue 20): `dumps` writes opcodes as serde walks the value. What CPython loads
// from it must be what the value means: what it loads from `dumps_value(&to_value(v))`, the
// encoder the tests above hold to CPython's own pickles.

mod typed {
    use std::collections::BTreeMap;

    use serde::Serialize;

    #[derive(Serialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Key {
        Unit,
        Other,
    }

    #[derive(Serialize)]
    pub enum Kind {
        Unit,
        New(i64),
        Tup(u8, String),
        Named { x: f32, s: String },
        Bytes(Bytes),
    }

    pub struct Bytes(pub Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    #[derive(Serialize)]
    pub struct Rec {
        pub id: u64,
        pub name: String,
        pub city: String,
        pub score: f64,
        pub flag: bool,
        pub tags: Vec<String>,
        pub opt: Option<i32>,
        pub kind: Kind,
        pub pair: (i16, String, Option<()>),
        pub map: BTreeMap<String, i64>,
        pub keyed: BTreeMap<(Key, i8), Vec<u16>>,
        pub big: i128,
        pub ubig: u128,
        pub ch: char,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub skipped: Option<u8>,
    }

    /// xorshift64*: the values from the run's seed.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        pub fn text(&mut self) -> String {
            const POOL: [&str; 8] = ["", "a", "b", "tag", "é", "日本語", "x y z", "a much longer str that repeats"];
            match self.below(4) {
                0 => POOL[self.below(8) as usize].into(),
                1 => format!("s{}", self.below(50)),
                _ => (0..self.below(12))
                    .map(|_| match self.below(5) {
                        0 => char::from_u32(0x80 + self.below(0x700) as u32).unwrap_or('?'),
                        1 => char::from_u32(0x1_0000 + self.below(0x1000) as u32).unwrap_or('?'),
                        _ => char::from(b' ' + self.below(95) as u8),
                    })
                    .collect(),
            }
        }
        pub fn float(&mut self) -> f64 {
            match self.below(8) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -0.0,
                3 => f64::from_bits(self.next()),
                _ => self.below(1_000_000) as f64 / 7.0 - 5000.0,
            }
        }
        pub fn int(&mut self) -> i64 {
            match self.below(5) {
                0 => self.below(256) as i64,
                1 => self.below(65536) as i64,
                2 => self.next() as i32 as i64,
                _ => self.next() as i64,
            }
        }
        pub fn rec(&mut self, i: u64) -> Rec {
            let kind = match self.below(5) {
                0 => Kind::Unit,
                1 => Kind::New(self.int()),
                2 => Kind::Tup(self.below(256) as u8, self.text()),
                3 => Kind::Named { x: self.float() as f32, s: self.text() },
                _ => Kind::Bytes(Bytes((0..self.below(300)).map(|_| self.next() as u8).collect())),
            };
            Rec {
                id: if self.below(4) == 0 { u64::MAX - self.below(1000) } else { i },
                name: format!("user {i} {}", self.text()),
                city: ["Paris", "Berlin", "Tokyo"][self.below(3) as usize].into(),
                score: self.float(),
                flag: self.below(2) == 0,
                tags: (0..self.below(4)).map(|_| self.text()).collect(),
                opt: (self.below(2) == 0).then(|| self.int() as i32),
                kind,
                pair: (self.int() as i16, self.text(), (self.below(2) == 0).then_some(())),
                map: (0..self.below(5)).map(|_| (self.text(), self.int())).collect(),
                keyed: (0..self.below(3))
                    .map(|_| {
                        let k = if self.below(2) == 0 { Key::Unit } else { Key::Other };
                        ((k, self.int() as i8), (0..self.below(4)).map(|_| self.below(70_000) as u16).collect())
                    })
                    .collect(),
                big: (self.int() as i128) << self.below(64),
                ubig: u128::from(self.next()) << self.below(65),
                ch: self.text().chars().next().unwrap_or('é'),
                skipped: (self.below(2) == 0).then_some(7),
            }
        }
    }
}

/// Random typed values (lists of 0 to 2,999 records, so struct fields whose strs do not repeat
/// leave the memo, and some pass 4,096 distinct strs): `py` loads `dumps` at `protocols` and
/// compares with `dumps_value(to_value(v))` loaded by itself.
fn typed_failures(py: &std::path::Path, protocols: &[u8]) -> (usize, Vec<String>) {
    use mpconn::pickle::{dumps, to_value};
    let count: usize = std::env::var("MPCONN_PICKLE_COUNT").ok().and_then(|s| s.parse().ok()).unwrap_or(400) / 10;
    let mut rng = typed::Rng(data().seed | 1);
    let mut input = String::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in 0..count.max(8) {
        let n = match case % 4 {
            0 => rng.below(3),
            1 => rng.below(100),
            2 => 100 + rng.below(900),
            _ => 1000 + rng.below(2000),
        };
        let value: Vec<typed::Rec> = (0..n).map(|i| rng.rec(i)).collect();
        let reference = match to_value(&value).and_then(|v| dumps_value(&v, 2)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("typed {case}: the reference cannot be written: {e}"));
                continue;
            }
        };
        let mut cand = serde_json::Map::new();
        for &p in protocols {
            match dumps(&value, p) {
                Ok(b) => {
                    cand.insert(p.to_string(), common::scripts::hex(&b).into());
                }
                Err(e) => failures.push(format!("typed {case}: protocol {p}: dumps failed: {e}")),
            }
            checked += 1;
        }
        input += &(json!({"id": format!("typed {case} ({n} records)"), "ref": common::scripts::hex(&reference), "cand": cand})
            .to_string()
            + "\n");
    }
    for r in run_py(py, &["check"], input) {
        for e in r["errors"].as_array().unwrap() {
            failures.push(format!("{}: {}", r["id"].as_str().unwrap(), e.as_str().unwrap()));
        }
    }
    (checked, failures)
}

#[test]
fn typed_values_written_directly_load_in_cpython_313_and_311_as_what_they_mean() {
    let (checked, failures) = typed_failures(&py313(), &[2, 3, 4, 5]);
    verdict("typed values by dumps, protocols 2-5, loaded by CPython 3.13", checked, &failures);
    let (checked, failures) = typed_failures(&PathBuf::from("python3"), &[2, 3, 4, 5]);
    verdict("typed values by dumps, protocols 2-5, loaded by python3 (3.11)", checked, &failures);
}

#[test]
fn typed_values_written_directly_at_protocol_2_load_in_cpython_27_as_what_they_mean() {
    let (checked, failures) = typed_failures(&py27(), &[2]);
    verdict("typed values by dumps, protocol 2, loaded by CPython 2.7", checked, &failures);
}
