//! Criterion: decoding and encoding three realistic pickles made by CPython 3.13 at protocol 4
//! (issue 10): 100,000 record dicts, 1,000,000 ints of mixed sizes, 300,000 short strings.
//! The payloads are written by `benches/pickle_payloads.py` into `target/pickle-payloads/` (made
//! here if missing, with pyenv's CPython 3.13.0 or `python3`); `bash benches/pickle_table.sh` runs
//! this beside CPython's own `pickle.loads`/`dumps` on the same files and prints the table.
//!
//! `cargo bench --bench pickle`. Also writes `target/pickle-payloads/mpconn-sizes.json`: the
//! bytes mpconn writes for each payload and the protocol it wrote (4, or 3 where 4 is refused).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpconn::pickle::{dumps_value, loads_value};

#[path = "../tests/common/python.rs"]
mod python;

const NAMES: [&str; 3] = ["records", "ints", "strings"];

fn payload_dir() -> PathBuf {
    match std::env::var_os("MPCONN_PICKLE_PAYLOADS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pickle-payloads"),
    }
}

fn python() -> PathBuf {
    python::pyenv_python("3.13.0").unwrap_or_else(|| PathBuf::from("python3"))
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let dir = payload_dir();
    if NAMES.iter().any(|n| !dir.join(format!("{n}.pickle")).exists()) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pickle_payloads.py");
        let ok = Command::new(python()).arg(script).arg(&dir).status().is_ok_and(|s| s.success());
        assert!(ok, "benches/pickle_payloads.py failed: the payloads are made by CPython");
    }
    NAMES.iter().map(|&n| (n, std::fs::read(dir.join(format!("{n}.pickle"))).unwrap())).collect()
}

fn bench(c: &mut Criterion) {
    let mut sizes = Vec::new();
    for (name, bytes) in payloads() {
        let value =
            loads_value(&bytes).unwrap_or_else(|e| panic!("{name}: mpconn cannot decode CPython's pickle: {e}"));
        let (protocol, written) = match dumps_value(&value, 4) {
            Ok(w) => (4, w),
            Err(_) => (3, dumps_value(&value, 3).unwrap()),
        };
        sizes.push(format!(
            r#""{name}": {{"protocol": {protocol}, "bytes": {}, "input_bytes": {}}}"#,
            written.len(),
            bytes.len()
        ));

        let mut g = c.benchmark_group("pickle_decode");
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| b.iter(|| loads_value(black_box(&bytes)).unwrap()));
        g.finish();

        let mut g = c.benchmark_group("pickle_encode");
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| b.iter(|| dumps_value(black_box(&value), protocol).unwrap()));
        g.finish();
    }
    let json = format!("{{{}}}\n", sizes.join(", "));
    std::fs::write(payload_dir().join("mpconn-sizes.json"), json).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
