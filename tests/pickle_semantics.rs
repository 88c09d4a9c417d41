//! Python's semantics in the pickle codec where they are easy to get wrong, and the costs that
//! must stay linear: class instances as dict keys and set members (equal only to themselves, as
//! Python's default identity hash), deep frozensets (deduplicated, equal to their clones),
//! protocol-0 integers (CPython's base-0 reading, a million digits decoded quickly), `repr` of a
//! huge int, of a bytearray holding a quote and of unassigned code points (as CPython prints
//! them), and serde over a small pickle that shares a list many levels deep (bounded, not 2^n).
//! The one time bound left is a hang guard, not a speed target.

use std::time::{Duration, Instant};

use mpconn::pickle::{self, Value};

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap()
}

fn binint(i: i32) -> Vec<u8> {
    let mut v = vec![b'J'];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

/// `{C(): 1, C(): 2}` (two distinct instances, equal content) keeps two keys, as in CPython,
/// where instances hash by identity; merging them would lose an entry silently.
#[test]
fn distinct_instances_as_dict_keys_are_not_merged() {
    let p = b"\x80\x02}(cm\nC\nq\x00)\x81K\x01h\x00)\x81K\x02u.";
    let v = pickle::loads_value(p).unwrap();
    assert_eq!(v.as_dict().unwrap().len(), 2, "got {}", pickle::repr(&v));
}

/// The same in a set: `{C(), C()}` has two elements, as in CPython.
#[test]
fn distinct_instances_in_a_set_are_not_merged() {
    let p = b"\x80\x04\x8f(cm\nC\nq\x00)\x81h\x00)\x81\x90.";
    let v = pickle::loads_value(p).unwrap();
    assert_eq!(v.as_set().unwrap().len(), 2, "got {}", pickle::repr(&v));
}

/// frozenset nested `depth` levels around None.
fn nested_frozenset(depth: usize) -> Vec<u8> {
    let mut b = vec![b'('; depth];
    b.push(b'N');
    b.extend(std::iter::repeat_n(0x91u8, depth));
    b
}

/// A set holding two equal frozensets nested 70 deep has one element, as in CPython: past
/// `MAX_KEY_DEPTH` (64) equality falls back to the keyed hashes instead of answering "unequal".
#[test]
fn equal_deep_frozensets_in_a_set_are_deduplicated() {
    let mut p = b"\x80\x04\x8f(".to_vec();
    p.extend(nested_frozenset(70));
    p.extend(nested_frozenset(70));
    p.extend_from_slice(b"\x90.");
    let v = pickle::loads_value(&p).unwrap();
    assert_eq!(v.as_set().unwrap().len(), 1);
}

/// `==` is reflexive for a deep frozenset (no NaN anywhere): it equals its own clone.
#[test]
fn deep_frozenset_equals_its_clone() {
    let mut p = b"\x80\x04".to_vec();
    p.extend(nested_frozenset(70));
    p.push(b'.');
    let v = pickle::loads_value(&p).unwrap();
    assert!(v.clone() == v);
}

/// A dict with 10,000 instance keys of one class (100 kB; a dict keyed by frozen dataclasses)
/// decodes at once, as in CPython: instances hash by identity, so inserts do not compare every
/// key with every earlier one (hashing by class only took 2.5 s and was then refused).
#[test]
fn many_instance_keys_of_one_class_decode_quickly() {
    let mut p = b"\x80\x02cm\nC\nq\x000}(".to_vec();
    for i in 0..10_000 {
        p.extend_from_slice(b"h\x00");
        p.extend(binint(i));
        p.extend_from_slice(b"\x85\x81N");
    }
    p.extend_from_slice(b"u.");
    let t = Instant::now();
    let r = on_small_stack(move || pickle::loads_value(&p).map(|v| v.as_dict().map(|d| d.len())));
    let took = t.elapsed();
    // A hang guard, not a speed target: instances hash by identity now, so this is linear.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(r.unwrap(), Some(10_000));
}

/// Protocol 0 `L` with 1,000,000 digits (a 1 MB pickle) is answered quickly (refused past 4,300
/// digits, as CPython's limit): decimal parsing is quadratic, and a 10 MB message would take
/// minutes of CPU on the reactor thread.
#[test]
fn long_text_of_a_million_digits_decodes_quickly() {
    let mut p = b"L".to_vec();
    p.extend(std::iter::repeat_n(b'9', 1_000_000));
    p.extend_from_slice(b"L\n.");
    // Refused by length (CPython's 4300-digit limit), before the quadratic conversion.
    let r = on_small_stack(move || pickle::loads_value(&p));
    assert!(r.as_ref().is_err_and(|e| e.to_string().contains("4300")), "{r:?}");
}

/// The same with `I`.
#[test]
fn int_text_of_a_million_digits_decodes_quickly() {
    let mut p = b"I".to_vec();
    p.extend(std::iter::repeat_n(b'9', 1_000_000));
    p.extend_from_slice(b"\n.");
    let r = on_small_stack(move || pickle::loads_value(&p));
    assert!(r.as_ref().is_err_and(|e| e.to_string().contains("4300")), "{r:?}");
}

/// LONG4 of 1 MB decodes in milliseconds, and `repr_limited(v, 1 MiB)` (what `mpconn listen`
/// prints) is quick too: a huge int is not formatted in decimal in full first (quadratic).
#[test]
fn repr_limited_of_a_huge_int_is_quick() {
    let mut p = b"\x80\x04\x8b".to_vec();
    p.extend_from_slice(&1_000_000u32.to_le_bytes());
    p.extend(std::iter::repeat_n(0x7fu8, 1_000_000));
    p.push(b'.');
    let v: Value = pickle::loads_value(&p).unwrap();
    // Printed in hex (linear) beyond CPython's 4300-digit repr limit.
    let s = on_small_stack(move || pickle::repr_limited(&v, 1 << 20));
    assert!(s.starts_with("0x7f7f7f"), "{:.40}", s);
    // Its 2,000,002 characters are cut at the limit like any other repr (before, a lone value
    // printed whole).
    assert!(s.len() == (1 << 20) + 3 && s.ends_with("..."), "{}", s.len());
}

/// `repr(bytearray(b"'"))` is `bytearray(b"\'")`, as in CPython 3.11 and 3.13 (bytearray's repr
/// escapes a single quote even inside double quotes).
#[test]
fn bytearray_with_a_single_quote_reprs_as_python() {
    let p = b"\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x96\x01\x00\x00\x00\x00\x00\x00\x00'\x94.";
    let v = pickle::loads_value(p).unwrap();
    assert_eq!(pickle::repr(&v), r#"bytearray(b"\'")"#);
}

/// Unassigned code points (category Cn, 829,823 of them) are not printable to Python, which
/// escapes them: `repr('\u0378')` is `'\\u0378'`, here too.
#[test]
fn unassigned_code_points_are_escaped_in_repr() {
    let p = b"\x80\x04\x8c\x02\xcd\xb8.";
    let v = pickle::loads_value(p).unwrap();
    assert_eq!(pickle::repr(&v), r"'\u0378'");
}

/// Protocol 0 `I010\n` is 8: CPython reads it with `int(s, 0)` semantics (strtol base 0); 10
/// would be a silently different number. (`I0x10` is 16 in CPython, refused here.)
#[test]
fn protocol0_int_with_leading_zero_is_octal_as_cpython() {
    let v = pickle::loads_value(b"I010\n.").unwrap();
    assert_eq!(v.as_i64(), Some(8));
}

/// A DAG through the memo: x0 = [], x(i+1) = [x(i), x(i)], `depth` levels (a 300-byte pickle at
/// depth 40). Decode, clone, eq, encode are instant (sharing kept), but serde conversion
/// (`loads::<T>`, `from_value`, typed `recv`) expands the sharing: 2^depth work and memory.
/// The serde walk's node budget refuses it (`SharedExpansion`); the 128-level depth limit alone
/// does not bound it.
fn dag(depth: u32) -> Vec<u8> {
    let mut out = b"\x80\x04]\x94".to_vec();
    for i in 0..depth {
        out.extend_from_slice(b"](j");
        out.extend_from_slice(&i.to_le_bytes());
        out.push(b'j');
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(b"e\x94");
    }
    out.push(b'.');
    out
}

#[test]
fn serde_of_a_small_memo_dag_is_bounded() {
    // Refused once the copies pass twice the value's own size, long before 2^40 nodes.
    for depth in [22, 40] {
        let p = dag(depth);
        let r = on_small_stack(move || pickle::loads::<Value>(&p));
        assert!(matches!(r, Err(pickle::PickleError::SharedExpansion { .. })), "depth {depth}: {r:?}");
    }
    // A typed value that shares a little still decodes: [a, a] with a = [1, 2].
    let small = b"\x80\x04]\x94(]\x94(K\x01K\x02eh\x01e.";
    assert_eq!(pickle::loads::<Vec<Vec<i64>>>(small).unwrap(), vec![vec![1, 2], vec![1, 2]]);
}
