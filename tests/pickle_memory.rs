//! The decoder's memory budget bounds its real heap (issue 18, item 2): a counting allocator
//! (this test binary's `#[global_allocator]`) tracks the bytes allocated now and at the peak,
//! and the densest pickles of every form are decoded with a budget, small enough for most of
//! them to be refused part way and large enough for others to decode whole. Either way the
//! heap at its peak (the VM's stack, marks, memo and slots, every container, every temporary
//! and the value) must stay within the budget, plus `SLACK` for what the decoder does not
//! count (an error's message, a few fixed-size allocations).
//!
//! A `realloc` that moves its block counts both blocks at that instant (the copy needs both):
//! the strictest reading of "real".
//!
//! Before the fix, a 60 MB pickle of empty lists (inside the counted 2 GiB cap) took 3.81 GB of
//! RSS: the stack grew by doubling uncounted, and LIST / TUPLE / DICT / FROZENSET copied the
//! stack's top (`split_off`) while the stack kept its capacity. On b9032e3 (before the fix) this
//! test fails: at a 64 MiB cap, CPython's `[None]*N` and `[[]]*N` reached 187.5 MiB (2.93 x the
//! budget), `]*N a*N` 160 MiB (2.50 x), a dict by MARK 109.8 MiB (1.72 x).
//!
//! One `#[test]` only: the allocator counts every thread, so nothing else may run beside it.
//! `cargo test --release --test pickle_memory -- --nocapture` prints the table.
#![cfg(feature = "pickle")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mpconn::pickle::{DecodeOptions, PickleError, budget, loads_value_with};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note(now: usize) {
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let old = layout.size();
            if p != ptr {
                // Moved: both blocks existed while the bytes were copied.
                note(CURRENT.load(Ordering::Relaxed) + new_size);
            }
            if new_size >= old {
                note(CURRENT.fetch_add(new_size - old, Ordering::Relaxed) + new_size - old);
            } else {
                CURRENT.fetch_sub(old - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the decoder may allocate beyond its budget: an error's message and a few fixed-size
/// allocations (the memo's map, the id sets' headers). 64 KiB.
const SLACK: usize = 64 << 10;

fn le32(n: usize) -> [u8; 4] {
    (n as u32).to_le_bytes()
}

/// The densest pickle of each form, about `n` bytes long.
fn forms(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    let p4 = |body: Vec<u8>| [b"\x80\x04".to_vec(), body, b".".to_vec()].concat();
    let ints = |count: usize| -> Vec<u8> {
        (0..count).flat_map(|i| [&[b'J'][..], &(i as u32).to_le_bytes()].concat()).collect()
    };
    let batches = |unit: &[u8], count: usize| -> Vec<u8> {
        // CPython's way: `](` 1000 items `e`, again.
        let mut b = b"](".to_vec();
        for i in 0..count {
            if i > 0 && i % 1000 == 0 {
                b.extend_from_slice(b"e(");
            }
            b.extend_from_slice(unit);
        }
        b.push(b'e');
        b
    };
    vec![
        ("list by MARK: (N*n l", p4([b"(".to_vec(), b"N".repeat(n), b"l".to_vec()].concat())),
        ("list as CPython writes [None]*n: ](N*1000e...", p4(batches(b"N", n))),
        ("tuple by MARK: (N*n t", p4([b"(".to_vec(), b"N".repeat(n), b"t".to_vec()].concat())),
        ("empty lists in a list: (]*n l", p4([b"(".to_vec(), b"]".repeat(n), b"l".to_vec()].concat())),
        ("empty lists appended: ](]*1000e...", p4(batches(b"]", n))),
        ("empty tuples TUPLE1-nested: )\\x85*n", p4([b")".to_vec(), b"\x85".repeat(n)].concat())),
        ("nested lists: ]*n a*n", p4([b"]".repeat(n / 2), b"a".repeat(n / 2 - 1)].concat())),
        (
            "dict by MARK: (J k N)*n d",
            p4([b"(".to_vec(), ints(n / 6).chunks(5).flat_map(|c| [c, b"N"].concat()).collect(), b"d".to_vec()]
                .concat()),
        ),
        (
            "dict by SETITEMS: }( (J k N)*n u",
            p4([b"}(".to_vec(), ints(n / 6).chunks(5).flat_map(|c| [c, b"N"].concat()).collect(), b"u".to_vec()]
                .concat()),
        ),
        ("set by ADDITEMS: \\x8f( J k*n \\x90", p4([b"\x8f(".to_vec(), ints(n / 5), b"\x90".to_vec()].concat())),
        ("frozenset: ( J k*n \\x91", p4([b"(".to_vec(), ints(n / 5), b"\x91".to_vec()].concat())),
        (
            "set of one key added n times: \\x8f( (K0)*n \\x90",
            p4([b"\x8f(".to_vec(), b"K\x00".repeat(n / 2), b"\x90".to_vec()].concat()),
        ),
        (
            "memo fan-out: one list, BINGET*n in a list",
            p4([b"]\x94(".to_vec(), b"h\x00".repeat(n / 2), b"l".to_vec()].concat()),
        ),
        ("memo fan-out by DUP: (] 2*n l", p4([b"(]".to_vec(), b"2".repeat(n), b"l".to_vec()].concat())),
        (
            "NaN fan-out: one NaN, BINGET*n in a set",
            p4([b"G\x7f\xf8\0\0\0\0\0\0\x94\x8f(".to_vec(), b"h\x00".repeat(n / 2), b"\x90".to_vec()].concat()),
        ),
        ("memo PUT of every item: (N q0)*n l", p4([b"(".to_vec(), b"N\x94".repeat(n / 2), b"l".to_vec()].concat())),
        (
            "LONG_BINPUT of sparse ids fetched: (N r id j id)*n l",
            p4([
                b"(".to_vec(),
                (0..n / 11)
                    .flat_map(|i| {
                        let id = (1u32 << 31) + i as u32;
                        [&b"N"[..], b"r", &id.to_le_bytes(), b"0j", &id.to_le_bytes()].concat()
                    })
                    .collect(),
                b"l".to_vec(),
            ]
            .concat()),
        ),
        (
            "strings of 25 bytes: (X25*n l",
            p4([b"(".to_vec(), [&b"X"[..], &le32(25), &[b's'; 25]].concat().repeat(n / 30), b"l".to_vec()].concat()),
        ),
        (
            "a 64 KiB str fetched n times: X q0 (h0*n l",
            p4([
                b"X".to_vec(),
                le32(65536).to_vec(),
                vec![b'y'; 65536],
                b"\x94(".to_vec(),
                b"h\x00".repeat(n / 2),
                b"l".to_vec(),
            ]
            .concat()),
        ),
        (
            "bytes of 32 bytes: (C32*n l",
            p4([b"(".to_vec(), [&b"C\x20"[..], &[b'b'; 32]].concat().repeat(n / 34), b"l".to_vec()].concat()),
        ),
        (
            "big ints: (\\x8a 255 bytes)*n l",
            p4([b"(".to_vec(), [&b"\x8a\xff"[..], &[0x55; 255]].concat().repeat(n / 257), b"l".to_vec()].concat()),
        ),
        ("MARKs: (*n N", p4([b"(".repeat(n), b"N".to_vec()].concat())),
        ("globals: c m\\nC\\n * n l", p4([b"(".to_vec(), b"cm\nC\n".repeat(n / 5), b"l".to_vec()].concat())),
    ]
}

/// Decodes `p` under `cap`; returns (outcome, peak heap above what was allocated before).
fn measure(p: &[u8], cap: u64) -> (String, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = loads_value_with(p, &DecodeOptions::new().max_bytes(cap));
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let outcome = match &r {
        Ok(_) => "decoded".to_string(),
        Err(PickleError::TooLarge { .. }) => "refused: too large".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    drop(r);
    (outcome, peak)
}

#[test]
fn real_heap_stays_within_the_budget() {
    let mut failures = Vec::new();
    // (input length, cap): a 2 MB pickle under a 64 MiB cap (most forms refused part way), and
    // a 512 KB pickle under the default cap (its budget is 128 x 512 KB + 1 MiB: most decode).
    for (n, cap) in [(2usize << 20, 64u64 << 20), (512 << 10, 2 << 30)] {
        for (name, p) in forms(n) {
            let b = budget(p.len(), cap);
            let (outcome, peak) = measure(&p, cap);
            let ratio = peak as f64 / b as f64;
            eprintln!(
                "{name} ({} bytes, budget {:.1} MiB): {outcome}, real peak {:.1} MiB = {ratio:.2} x budget, {:.1} bytes per input byte",
                p.len(),
                b as f64 / (1 << 20) as f64,
                peak as f64 / (1 << 20) as f64,
                peak as f64 / p.len() as f64
            );
            if peak as u64 > b + SLACK as u64 {
                failures.push(format!("{name} ({} bytes): real peak {peak} > budget {b} + {SLACK}", p.len()));
            }
            if outcome.starts_with("refused") && !outcome.contains("too large") {
                failures.push(format!("{name}: {outcome}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
