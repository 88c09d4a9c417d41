//! Unit tests of the codec (no sockets): CPython's own pickles of every form (from
//! `testdata/cpython.tsv`, written by `testdata/gen_cpython.py` with CPython 3.13 and 2.7), every
//! opcode, round trips at protocols 2-5 (read back by CPython when it is installed), depth bombs
//! on a small stack, memo bombs within the budget, cycles refused.

use std::sync::Arc;

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (label, expression, pickle, expected repr) for every line of the CPython table.
fn cpython_cases() -> Vec<(String, String, Vec<u8>, String)> {
    include_str!("testdata/cpython.tsv")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l}");
            (f[0].to_owned(), f[1].to_owned(), unhex(f[2]), f[3].to_owned())
        })
        .collect()
}

/// Runs `f` on a thread with a 256 KiB stack, so recursion on depth shows at once.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap()
}

#[test]
fn cpython_pickles_of_every_form_decode_to_python_s_repr() {
    let cases = cpython_cases();
    assert!(cases.len() > 400);
    let mut failures = Vec::new();
    for (label, expr, bytes, want) in &cases {
        match loads_value(bytes) {
            Ok(v) => {
                let got = repr(&v);
                if &got != want {
                    failures.push(format!("{label} {expr}: got {got:.200}, want {want:.200}"));
                }
            }
            Err(e) => failures.push(format!("{label} {expr}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_cpython_value_round_trips_at_protocols_2_to_5() {
    for (label, expr, bytes, want) in cpython_cases() {
        let v = loads_value(&bytes).unwrap();
        for proto in 2..=5 {
            let out = dumps_value(&v, proto).unwrap_or_else(|e| panic!("{label} {expr} p{proto}: {e}"));
            let back = loads_value(&out).unwrap_or_else(|e| panic!("{label} {expr} p{proto}: {e} in {}", hex(&out)));
            assert_eq!(repr(&back), want, "{label} {expr} p{proto}");
            // Never larger than what CPython wrote at the same protocol.
            if label.starts_with("py3.13 p") && label.ends_with(&proto.to_string()) {
                assert!(out.len() <= bytes.len(), "{label} {expr}: {} > {}", out.len(), bytes.len());
            }
        }
    }
}

#[test]
fn value_is_small() {
    eprintln!("size_of::<Value>() = {}", std::mem::size_of::<Value>());
    assert!(std::mem::size_of::<Value>() <= 32);
}

/// Release-mode timing of the three ~5 MB payloads against CPython's numbers measured beside it:
/// `cargo test --release --lib pickle::tests::timing -- --ignored --nocapture`, with the files
/// written by CPython 3.13 into `$PICKLE_TIMING_DIR` (default `/tmp/pk`): `records.pkl`,
/// `ints.pkl`, `strings.pkl` (protocol 4).
#[test]
#[ignore]
fn timing() {
    // The machine is shared: the best of 11 runs, as CPython's side (cpython_times.py) does.
    let now = std::time::Instant::now;
    let dir = std::env::var("PICKLE_TIMING_DIR").unwrap_or_else(|_| "/tmp/pk".into());
    for name in ["records", "ints", "strings"] {
        let Ok(b) = std::fs::read(format!("{dir}/{name}.pkl")) else { continue };
        let mut best_load = f64::MAX;
        for _ in 0..11 {
            let t = now();
            let v = loads_value(&b).unwrap();
            drop(v);
            best_load = best_load.min(t.elapsed().as_secs_f64());
        }
        let v = loads_value(&b).unwrap();
        let mut best_dump = f64::MAX;
        let mut out_len = 0;
        for _ in 0..11 {
            let t = now();
            let out = dumps_value(&v, 4).unwrap();
            best_dump = best_dump.min(t.elapsed().as_secs_f64());
            out_len = out.len();
        }
        eprintln!(
            "{name}: {} bytes in; loads_value {:.1} ms; dumps_value {:.1} ms, {} bytes out",
            b.len(),
            best_load * 1e3,
            best_dump * 1e3,
            out_len
        );
    }
}
