//! Criterion: pickling typed Rust values (issue 20), mpconn against the `serde-pickle` crate, on
//! four payloads a Rust program would send (`#[derive(Serialize)]` structs, maps, tuples):
//!
//! * `records`: 100,000 `Record { id, name, email, score, active, tags }` (the same values as
//!   `benches/pickle_payloads.py`'s records);
//! * `dicts`: 100,000 `BTreeMap<String, i64>` of three entries;
//! * `orders`: 20,000 nested `Order`s (a customer with an address, three items, a unit enum, an
//!   `Option`);
//! * `tuples`: 100,000 `(i64, f64, bool)`.
//!
//! For each: `mpconn::pickle::dumps` at protocols 4 and 3, the old path (`to_value` then
//! `dumps_value`, protocol 4), and `serde_pickle::to_vec` (protocol 3, the highest it writes).
//! `benches/pickle_typed_cpython.py` builds the same values in Python and times CPython's C
//! `pickle.dumps`; `bash benches/pickle_typed_table.sh` runs both in one run and prints the table.
//!
//! `cargo bench --bench pickle_typed`; `ALTERNATE=60 cargo bench --bench pickle_typed` alternates
//! `dumps` and serde-pickle in one process instead (best of each, and the ratio). Also writes `target/pickle-typed/NAME.pN.pickle` (mpconn's
//! output at protocols 2 to 5, which the Python script loads and compares with its values) and
//! `target/pickle-typed/sizes.json` (the bytes each encoder writes).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use mpconn::pickle::{dumps, dumps_value, to_value};
use serde::Serialize;

#[derive(Serialize)]
struct Record {
    id: u64,
    name: String,
    email: String,
    score: f64,
    active: bool,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Address {
    street: String,
    city: String,
    zip: String,
}

#[derive(Serialize)]
struct Customer {
    name: String,
    address: Address,
}

#[derive(Serialize)]
struct Item {
    sku: String,
    qty: u32,
    price: f64,
}

#[derive(Serialize)]
enum Status {
    Pending,
    Shipped,
    Delivered,
}

#[derive(Serialize)]
struct Order {
    id: u32,
    customer: Customer,
    items: Vec<Item>,
    status: Status,
    note: Option<String>,
}

fn records() -> Vec<Record> {
    (0..100_000u64)
        .map(|i| Record {
            id: i,
            name: format!("user{i}"),
            email: format!("u{i}@mail.org"),
            score: i as f64 * 0.5,
            active: i % 2 == 0,
            tags: vec!["a".into(), "b".into()],
        })
        .collect()
}

fn dicts() -> Vec<BTreeMap<String, i64>> {
    (0..100_000i64).map(|i| [("a".into(), i), ("b".into(), i * 2), ("c".into(), -i)].into()).collect()
}

fn orders() -> Vec<Order> {
    const CITIES: [&str; 3] = ["Paris", "Berlin", "Tokyo"];
    (0..20_000u32)
        .map(|i| Order {
            id: i,
            customer: Customer {
                name: format!("customer {i}"),
                address: Address {
                    street: format!("{} Main Street", i % 1000),
                    city: CITIES[i as usize % 3].into(),
                    zip: format!("{:05}", i % 100_000),
                },
            },
            items: (0..3)
                .map(|k| Item { sku: format!("sku-{}", (i + k) % 50), qty: k + 1, price: f64::from(k) * 2.5 + 0.25 })
                .collect(),
            status: match i % 3 {
                0 => Status::Pending,
                1 => Status::Shipped,
                _ => Status::Delivered,
            },
            note: (i % 4 == 0).then(|| format!("note {i}")),
        })
        .collect()
}

fn tuples() -> Vec<(i64, f64, bool)> {
    (0..100_000i64).map(|i| (i * 7 - 50_000, i as f64 * 0.25, i % 3 == 0)).collect()
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pickle-typed")
}

fn one<T: Serialize>(c: &mut Criterion, name: &str, v: &T, sizes: &mut Vec<String>) {
    let dir = out_dir();
    for proto in 2..=5 {
        let p = dumps(v, proto).expect("dumps");
        std::fs::write(dir.join(format!("{name}.p{proto}.pickle")), &p).expect("write the pickle");
    }
    let size = |p: u8| dumps(v, p).expect("dumps").len();
    let sp = serde_pickle::to_vec(v, serde_pickle::SerOptions::new()).expect("serde-pickle").len();
    sizes.push(format!(r#""{name}": {{"mpconn_p4": {}, "mpconn_p3": {}, "serde_pickle_p3": {sp}}}"#, size(4), size(3)));

    let mut g = c.benchmark_group(format!("typed_encode_{name}"));
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("mpconn_p4", |b| b.iter(|| dumps(black_box(v), 4).expect("dumps")));
    g.bench_function("serde_pickle_p3", |b| {
        b.iter(|| serde_pickle::to_vec(black_box(v), serde_pickle::SerOptions::new()).expect("serde-pickle"))
    });
    g.bench_function("mpconn_p3", |b| b.iter(|| dumps(black_box(v), 3).expect("dumps")));
    g.bench_function("via_value_p4", |b| {
        b.iter(|| dumps_value(&to_value(black_box(v)).expect("to_value"), 4).expect("dumps_value"))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    std::fs::create_dir_all(out_dir()).expect("target/pickle-typed");
    let mut sizes = Vec::new();
    one(c, "records", &records(), &mut sizes);
    one(c, "dicts", &dicts(), &mut sizes);
    one(c, "orders", &orders(), &mut sizes);
    one(c, "tuples", &tuples(), &mut sizes);
    std::fs::write(out_dir().join("sizes.json"), format!("{{{}}}\n", sizes.join(", "))).expect("sizes.json");
}

/// `ALTERNATE=ROUNDS`: instead of Criterion, each payload's `dumps(&v, 3)` and
/// `serde_pickle::to_vec` alternated ROUNDS times in this one process, the best time of each and
/// their ratio printed: both encoders see the same machine state, which a noisy 2-core host
/// does not give two Criterion runs a few seconds apart.
fn alternate(rounds: usize) {
    fn pair<T: Serialize>(name: &str, v: &T, rounds: usize) {
        let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            black_box(dumps(black_box(v), 3).expect("dumps"));
            ours = ours.min(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            black_box(serde_pickle::to_vec(black_box(v), serde_pickle::SerOptions::new()).expect("serde-pickle"));
            theirs = theirs.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name}: mpconn p3 {:.3} ms, serde-pickle p3 {:.3} ms, ratio {:.3} (best of {rounds} alternated)",
            ours * 1e3,
            theirs * 1e3,
            ours / theirs
        );
    }
    pair("records", &records(), rounds);
    pair("dicts", &dicts(), rounds);
    // The input both encoders read for `dicts` (a BTreeMap node and three key strings on the
    // heap per dict): a plain walk touching every key's bytes and every value, the floor of
    // either encoder's time there.
    let d = dicts();
    let mut walk = f64::MAX;
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let mut acc = 0u64;
        for m in black_box(&d) {
            for (k, v) in m {
                acc = acc.wrapping_add(u64::from(k.as_bytes()[0]) ^ *v as u64);
            }
        }
        black_box(acc);
        walk = walk.min(t.elapsed().as_secs_f64());
    }
    println!("dicts: a plain walk over the input {:.3} ms (best of {rounds})", walk * 1e3);
    pair("orders", &orders(), rounds);
    pair("tuples", &tuples(), rounds);
}

criterion_group!(benches, bench);

fn main() {
    if let Some(rounds) = std::env::var("ALTERNATE").ok().and_then(|r| r.parse().ok()) {
        alternate(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
