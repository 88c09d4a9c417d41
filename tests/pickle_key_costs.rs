//! The CPU cost of dict keys and set elements, as an outside attacker measures it (issue 18,
//! item 1): the nastiest small pickles for hashing and comparing keys, each decoded under a hang
//! guard, with its decode time per input KB printed.
//!
//! Before the fix, the NaN fan-out (one memoised NaN fetched N times into a set, 2 bytes each)
//! was quadratic: every NaN hashed alike and none compared equal, and neither the probes nor the
//! float comparisons were charged to the work budget (80 KB stalled `mpconn listen` for 6.9 s,
//! 128 KB for 28 s in a release build). Now NaN hashes by identity as in CPython 3.10+ (the same
//! memoised NaN object is one element; distinct NaNs are distinct elements), and every hash,
//! probe and comparison is charged to one work budget proportional to the input's length, so a
//! pickle either decodes in time linear in its length or is refused as
//! [`PickleError::TooComplex`].
//!
//! The hang guard (`GUARD`) is generous for a loaded 2-core machine in a debug build; the old
//! code needs far longer for these sizes (quadratic: 512 KB of NaN fan-out is 16 times the
//! 28 s measured for 128 KB, in release). On b9032e3 (before the fix) this file fails: the NaN
//! fan-out set has N elements instead of 1, and its 512 KB form was still decoding after 60 s.
//! Run with `--nocapture` to see the figures (release, after: at most 0.44 ms per input KB).
#![cfg(feature = "pickle")]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mpconn::pickle::{self, PickleError, Value};

/// The longest one pickle may take to decode (debug build, loaded machine): a hang guard.
const GUARD: Duration = Duration::from_secs(60);

const NAN: [u8; 8] = [0x7f, 0xf8, 0, 0, 0, 0, 0, 0];

fn binfloat(bits: [u8; 8]) -> Vec<u8> {
    [&[b'G'][..], &bits].concat()
}

fn long4(bytes: &[u8]) -> Vec<u8> {
    [&[0x8b][..], &(bytes.len() as u32).to_le_bytes(), bytes].concat()
}

fn binunicode(s: &[u8]) -> Vec<u8> {
    [&[b'X'][..], &(s.len() as u32).to_le_bytes(), s].concat()
}

/// What one attack pickle must decode to: a check on the value, or refused as too complex.
enum Expect {
    /// Decodes; the check returns what is wrong, if anything.
    Decodes(fn(&Value) -> Option<String>),
    /// Decodes, or is refused as `TooComplex` (not `TooLarge`, not anything else).
    DecodesOrTooComplex,
}

struct Attack {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn set_len(v: &Value) -> Option<usize> {
    v.as_set().map(|s| s.len())
}

/// The attacks, each about `kb` KB long.
fn attacks(kb: usize) -> Vec<Attack> {
    let n = kb * 1024;
    let mut v = Vec::new();
    // One NaN, memoised, fetched n/2 times into a set: {x, x, ...} is {x} in CPython 3.10+.
    v.push(Attack {
        name: "NaN fan-out set: one memoised NaN, BINGET x N into a set",
        bytes: [
            b"\x80\x04".to_vec(),
            binfloat(NAN),
            b"\x94\x30\x8f(".to_vec(),
            b"h\x00".repeat(n / 2),
            b"\x90.".to_vec(),
        ]
        .concat(),
        expect: Expect::Decodes(|v| {
            (set_len(v) != Some(1)).then(|| format!("{} elements, not 1", set_len(v).unwrap_or(0)))
        }),
    });
    // The same NaN as the key of a dict, N times: {x: None}.
    v.push(Attack {
        name: "NaN fan-out dict: one memoised NaN as key x N",
        bytes: [b"\x80\x04".to_vec(), binfloat(NAN), b"\x94\x30}(".to_vec(), b"h\x00N".repeat(n / 3), b"u.".to_vec()]
            .concat(),
        expect: Expect::Decodes(|v| {
            (v.as_dict().map(|d| d.len()) != Some(1))
                .then(|| format!("{} entries, not 1", v.as_dict().map_or(0, |d| d.len())))
        }),
    });
    // Distinct NaN objects (9 bytes each, same bits): as many elements as NaNs, as CPython.
    let distinct = n / 9;
    v.push(Attack {
        name: "distinct NaNs: BINFLOAT NaN x N into a set",
        bytes: [b"\x80\x04\x8f(".to_vec(), binfloat(NAN).repeat(distinct), b"\x90.".to_vec()].concat(),
        expect: Expect::Decodes(|v| {
            let l = set_len(v).unwrap_or(0);
            (l < 1000).then(|| format!("{l} elements: distinct NaNs were merged"))
        }),
    });
    // Distinct NaN bit patterns (payloads) too: hashing by bits would not help.
    v.push(Attack {
        name: "distinct NaNs as dict keys: BINFLOAT NaN N x N",
        bytes: [b"\x80\x04}(".to_vec(), [binfloat(NAN), b"N".to_vec()].concat().repeat(n / 10), b"u.".to_vec()]
            .concat(),
        expect: Expect::Decodes(|v| {
            let l = v.as_dict().map_or(0, |d| d.len());
            (l < 1000).then(|| format!("{l} entries: distinct NaNs were merged"))
        }),
    });
    // Tuples holding the one memoised NaN: (x,) == (x,) in CPython (identity inside the tuple).
    v.push(Attack {
        name: "NaN in tuples: (x,) x N into a set, x one memoised NaN",
        bytes: [
            b"\x80\x04".to_vec(),
            binfloat(NAN),
            b"\x94\x30\x8f(".to_vec(),
            b"h\x00\x85".repeat(n / 3),
            b"\x90.".to_vec(),
        ]
        .concat(),
        expect: Expect::Decodes(|v| {
            (set_len(v) != Some(1)).then(|| format!("{} elements, not 1", set_len(v).unwrap_or(0)))
        }),
    });
    // Frozensets holding the one NaN: frozenset({x}) x N.
    v.push(Attack {
        name: "NaN in frozensets: frozenset({x}) x N into a set",
        bytes: [
            b"\x80\x04".to_vec(),
            binfloat(NAN),
            b"\x94\x30\x8f(".to_vec(),
            b"(h\x00\x91".repeat(n / 4),
            b"\x90.".to_vec(),
        ]
        .concat(),
        expect: Expect::Decodes(|v| {
            (set_len(v) != Some(1)).then(|| format!("{} elements, not 1", set_len(v).unwrap_or(0)))
        }),
    });
    // A tuple holding a 64 KiB str, memoised, as the key of N dicts: each hash reads 64 KiB.
    v.push(Attack {
        name: "big key hashed N times: ('x'*65536,) memoised, {t: None} x N",
        bytes: [
            b"\x80\x04".to_vec(),
            binunicode(&[b'x'; 65536]),
            b"\x85\x94(".to_vec(),
            b"}h\x00Ns".repeat(n / 5),
            b"l.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // The same tuple added to one set N times: one element, but every insert hashes it.
    v.push(Attack {
        name: "big key hashed N times: ('x'*65536,) memoised, added to a set x N",
        bytes: [
            b"\x80\x04".to_vec(),
            binunicode(&[b'x'; 65536]),
            b"\x85\x94\x8f(".to_vec(),
            b"h\x00".repeat(n / 2),
            b"\x90.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // The same with a 32 KiB int: hashing a big int reads (and used to copy) all its bytes.
    v.push(Attack {
        name: "big int key hashed N times: (2**262144,) memoised, {t: None} x N",
        bytes: [
            b"\x80\x04".to_vec(),
            long4(&[[0x55u8; 32767].as_slice(), &[0x15]].concat()),
            b"\x85\x94(".to_vec(),
            b"}h\x00Ns".repeat(n / 5),
            b"l.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // Two equal but distinct frozensets of 2,000 ints, each memoised; {a: 0, b: 0} x N: every
    // dict compares them element by element (equal hashes, not the same object).
    let members: Vec<u8> = (0..2000u16).flat_map(|i| [&[b'M'][..], &i.to_le_bytes()].concat()).collect();
    v.push(Attack {
        name: "equal frozensets compared N times: {a: 0, b: 0} x N, a == b, a is not b",
        bytes: [
            b"\x80\x04(".to_vec(),
            members.clone(),
            b"\x91\x94((".to_vec(),
            members,
            b"\x91\x94(".to_vec(),
            b"}(h\x00Nh\x01Nu".repeat(n / 12),
            b"l.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // Two equal but distinct deep tuples (1,000 levels), memoised, compared in N dicts.
    v.push(Attack {
        name: "equal deep tuples compared N times: {a: 0, b: 0} x N, 1000 levels",
        bytes: [
            b"\x80\x04N".to_vec(),
            b"\x85".repeat(1000),
            b"\x94N".to_vec(),
            b"\x85".repeat(1000),
            b"\x94(".to_vec(),
            b"}(h\x00Nh\x01Nu".repeat(n / 12),
            b"l.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // One deep tuple key shared by the memo, hashed (and checked for hashability) in N dicts.
    v.push(Attack {
        name: "deep shared tuple key: t 10,000 deep memoised, {t: None} x N",
        bytes: [
            b"\x80\x04N".to_vec(),
            b"\x85".repeat(10_000),
            b"\x94(".to_vec(),
            b"}h\x00Ns".repeat(n / 5),
            b"l.".to_vec(),
        ]
        .concat(),
        expect: Expect::DecodesOrTooComplex,
    });
    // Python's own hash collisions (hash(-1) == hash(-2)) and 1 == 1.0 == True: many keys of
    // each, all in one dict.
    let mut keys = Vec::new();
    for i in 0..(n / 22) as i32 {
        for k in [-1i32, -2, 1] {
            keys.extend_from_slice(&[&[b'J'][..], &(k - 2 * i).to_le_bytes(), b"N"].concat());
        }
        keys.extend_from_slice(&[b'G', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, b'N', 0x88, b'N']);
    }
    v.push(Attack {
        name: "int hash neighbours: -1, -2, 1, 1.0, True ... as dict keys",
        bytes: [b"\x80\x04}(".to_vec(), keys, b"u.".to_vec()].concat(),
        expect: Expect::Decodes(|v| v.as_dict().is_none().then(|| "not a dict".to_string())),
    });
    v
}

/// Decodes on a thread with a hang guard: the outcome and how long it took, or `None` past
/// `GUARD` (the thread is left running; the test fails).
fn decode_guarded(bytes: Vec<u8>) -> Option<(Result<Value, PickleError>, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let t = Instant::now();
            let r = pickle::loads_value(&bytes);
            let took = t.elapsed();
            // A value too big to send back whole is checked here: send it anyway (moved).
            let _ = tx.send((r, took));
        })
        .expect("a thread");
    rx.recv_timeout(GUARD).ok()
}

/// `PICKLE_KEY_ATTACK=text` runs only the attacks whose name contains it.
fn chosen(a: &Attack) -> bool {
    std::env::var("PICKLE_KEY_ATTACK").map_or(true, |f| a.name.contains(&f))
}

#[test]
fn key_attacks_decode_in_linear_time_or_are_refused() {
    let mut failures = Vec::new();
    for kb in [64usize, 512] {
        for a in attacks(kb).into_iter().filter(chosen) {
            let len = a.bytes.len();
            let Some((r, took)) = decode_guarded(a.bytes) else {
                failures.push(format!("{} ({len} bytes): still decoding after {GUARD:?}", a.name));
                eprintln!("{} ({len} bytes): HUNG past {GUARD:?}", a.name);
                continue;
            };
            let per_kb = took.as_secs_f64() * 1e3 / (len as f64 / 1024.0);
            let outcome = match (&r, &a.expect) {
                (Ok(v), Expect::Decodes(check)) => match check(v) {
                    None => "decoded".to_string(),
                    Some(wrong) => {
                        failures.push(format!("{}: {wrong}", a.name));
                        format!("WRONG: {wrong}")
                    }
                },
                (Ok(_), Expect::DecodesOrTooComplex) => "decoded".to_string(),
                (Err(PickleError::TooComplex), Expect::DecodesOrTooComplex) => "refused: too complex".to_string(),
                (Err(e), _) => {
                    failures.push(format!("{}: {e}", a.name));
                    format!("WRONG: {e}")
                }
            };
            eprintln!("{} ({len} bytes): {outcome} in {took:.2?}, {per_kb:.3} ms per input KB", a.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The identity rule of CPython 3.10+ for NaN keys, small and exact: one NaN object fetched
/// twice is one element, two NaN objects are two, and tuples and frozensets holding the same
/// NaN object are equal.
#[test]
fn nan_keys_follow_python_identity() {
    let g = binfloat(NAN);
    let one = |body: &[u8]| -> Value {
        let p = [b"\x80\x04".to_vec(), body.to_vec(), b".".to_vec()].concat();
        pickle::loads_value(&p).unwrap_or_else(|e| panic!("{e}"))
    };
    // {x, x}
    let v = one(&[g.clone(), b"\x94\x30\x8f(h\x00h\x00\x90".to_vec()].concat());
    assert_eq!(set_len(&v), Some(1), "{}", pickle::repr_limited(&v, 200));
    // {x, y}, two NaN objects
    let v = one(&[b"\x8f(".to_vec(), g.clone(), g.clone(), b"\x90".to_vec()].concat());
    assert_eq!(set_len(&v), Some(2), "{v}");
    // {x, x} through DUP
    let v = one(&[b"\x8f(".to_vec(), g.clone(), b"2\x90".to_vec()].concat());
    assert_eq!(set_len(&v), Some(1), "{v}");
    // {(x,), (x,)} and {(y,), (z,)}
    let v = one(&[g.clone(), b"\x94\x30\x8f(h\x00\x85h\x00\x85\x90".to_vec()].concat());
    assert_eq!(set_len(&v), Some(1), "{v}");
    let v = one(&[b"\x8f(".to_vec(), g.clone(), b"\x85".to_vec(), g.clone(), b"\x85\x90".to_vec()].concat());
    assert_eq!(set_len(&v), Some(2), "{v}");
    // {x: 1, x: 2} keeps one key and the last value.
    let v = one(&[g.clone(), b"\x94\x30}(h\x00K\x01h\x00K\x02u".to_vec()].concat());
    assert_eq!(pickle::repr(&v), "{nan: 2}");
    // The shared NaN round-trips: [x, x] written and read back still holds one object twice.
    let v = one(&[g.clone(), b"\x94\x30](h\x00h\x00e".to_vec()].concat());
    let back = pickle::loads_value(&pickle::dumps_value(&v, 4).unwrap()).unwrap();
    let mut s = pickle::Set::new();
    for item in back.as_list().unwrap().iter() {
        s.insert(item.clone()).unwrap();
    }
    assert_eq!(s.len(), 1, "the round trip lost the NaN's identity");
    assert_eq!(pickle::repr(&back), "[nan, nan]");
}
