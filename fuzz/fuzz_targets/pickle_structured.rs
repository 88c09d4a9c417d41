//! Structure-aware pickle fuzzing (issue 10): the input is a sequence of grammar-level operations
//! (push a scalar, MARK, build a list/tuple/dict/set, APPENDS/SETITEMS/ADDITEMS, PUT/GET/DUP/
//! MEMOIZE on a few memo ids, globals and REDUCE/NEWOBJ/BUILD, POP/POP_MARK, FRAME) with repeat
//! blocks, serialized to a valid-looking pickle of protocol 2-5. The pickle is decoded on a thread
//! with a 256 KiB stack; what decodes is shown (`repr_limited`), dropped, re-encoded at protocols
//! 2-5, decoded again and re-encoded again (the two encodings must be equal), and the heap the
//! decoder used at its peak (a counting allocator) must stay within the budget.
//!
//! Why this finds what the byte-level `pickle` target never did in millions of executions:
//! * depth: a stack overflow needs thousands of nested opcodes in the right order (`]`*N then
//!   `a`*(N-1)); random byte mutation of inputs under libFuzzer's default 4 KB `-max_len` cannot
//!   build them, and even 4 KB of nesting fits the 8 MiB main-thread stack the old target used.
//!   Here a repeat block of two operations expands to up to 1,048,576 levels from a few input
//!   bytes, and the 256 KiB stack makes recursion fail ~30 times sooner;
//! * memo bombs: memoise-then-fill needs a PUT of an empty container, fills after it, then many
//!   GETs of the same id. Byte mutation rarely keeps a memo id consistent across thousands of
//!   opcodes; here memo ids come from a small range (8) and GET/DUP sit in repeat blocks, so
//!   fan-out of the same object is the common case, and the counting allocator flags any decode
//!   whose memory grows faster than the budget even before the RSS limit does;
//! * shape: every operation is a real opcode with well-formed arguments, so the decoder's deep
//!   paths (REDUCE on the known globals, sets, BUILD, frames) run instead of a parse error on the
//!   first bytes;
//! * costly keys (issue 18): NaN (one memoised NaN fetched into a set or dict many times was
//!   quadratic), keys fetched many times into one set or dict (`FanOutSet`, `FanOutDict`), big
//!   strs and ints to put in tuple keys, and ints that collide in CPython's hash (-1, -2). A
//!   decode that takes super-linear time shows as a libFuzzer timeout (`-timeout=10`).
//!
//! The heap the decoder uses at its peak (counted by this target's allocator; a `realloc` that
//! moves counts both blocks) must stay within the decode budget plus 1 MiB: the budget bounds
//! the real heap, not a count of nodes.
//!
//! Run: `cargo +nightly fuzz run pickle_structured -- -max_len=1048576 -rss_limit_mb=1024 -timeout=10`
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mpconn::pickle::{Value, dumps_value, loads_value};

// ---------------------------------------------------------------------------------------------
// Heap accounting: the decoded-memory proxy.

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
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
            if p != ptr {
                // Moved: both blocks existed while the bytes were copied.
                PEAK.fetch_max(CURRENT.load(Ordering::Relaxed) + new_size, Ordering::Relaxed);
            }
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most heap a decode may use at its peak for an input of `len` bytes: the codec's budget
/// (`EXPANSION` bytes per input byte plus `EXPANSION_FLOOR`) bounds the real heap of the decode
/// (stack, marks, memo, containers, temporaries: issue 18), plus 1 MiB for what it does not
/// count (an error's message, the showing and re-encoding are outside the measured span).
fn heap_budget(len: usize) -> usize {
    let b = mpconn::pickle::budget(len, u64::MAX);
    usize::try_from(b).unwrap_or(usize::MAX).saturating_add(1 << 20)
}

// ---------------------------------------------------------------------------------------------
// The grammar.

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Global {
    Set,
    FrozenSet,
    ByteArray,
    Bytes,
    CodecsEncode,
    OrderedDict,
    Reconstructor,
    Object,
    Complex,
    DateTime,
    Uuid,
    OsSystem,
    Py2Set,
}

impl Global {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Global::Set => ("builtins", "set"),
            Global::FrozenSet => ("builtins", "frozenset"),
            Global::ByteArray => ("builtins", "bytearray"),
            Global::Bytes => ("__builtin__", "bytes"),
            Global::CodecsEncode => ("_codecs", "encode"),
            Global::OrderedDict => ("collections", "OrderedDict"),
            Global::Reconstructor => ("copyreg", "_reconstructor"),
            Global::Object => ("builtins", "object"),
            Global::Complex => ("builtins", "complex"),
            Global::DateTime => ("datetime", "datetime"),
            Global::Uuid => ("uuid", "UUID"),
            Global::OsSystem => ("os", "system"),
            Global::Py2Set => ("__builtin__", "set"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    None,
    True,
    False,
    Int(i32),
    IntText(i64),
    Long(Vec<u8>),
    Float(f64),
    Str(String),
    /// A str of `n * 64` 'x's: big leaves for fan-out.
    BigStr(u16),
    Bytes(Vec<u8>),
    ByteArray8(Vec<u8>),
    Mark,
    EmptyList,
    EmptyTuple,
    EmptyDict,
    EmptySet,
    List,
    Tuple,
    Tuple1,
    Tuple2,
    Tuple3,
    Dict,
    FrozenSet,
    Append,
    Appends,
    SetItem,
    SetItems,
    AddItems,
    Put(u8),
    Get(u8),
    LongPut(u8),
    LongGet(u8),
    Memoize,
    Dup,
    Global(Global),
    StackGlobal(Global),
    Reduce,
    NewObj,
    Build,
    Pop,
    PopMark,
    /// A FRAME announcing this many bytes (right or wrong).
    Frame(u16),
    /// A NaN (quiet, or with the payload given): every NaN is a distinct object, equal to nothing.
    Nan(u8),
    /// A set of `n` fetches of memo id `id`: `EMPTY_SET MARK (BINGET id)*n ADDITEMS`.
    FanOutSet(u8, u16),
    /// A dict of `n` fetches of memo id `id` as keys: `EMPTY_DICT MARK (BINGET id NONE)*n SETITEMS`.
    FanOutDict(u8, u16),
    /// Ints that collide in CPython's hash or equal each other: -1, -2, 1, True, 1.0 (and `k` off).
    HashNeighbours(i8),
    /// Repeats the operations up to the matching `End` (or the end of the input):
    /// `n < 128` times n, else 2^((n - 128) % 21) times (up to 1,048,576).
    Repeat(u8),
    End,
}

#[derive(Arbitrary, Debug)]
struct Input {
    protocol: u8,
    ops: Vec<Op>,
}

/// The most a pickle may grow to when the repeats are expanded: 2 MiB holds a 1,048,576-level
/// TUPLE1 chain or a 1M-level `]`/`a` list, and keeps the heap bound (twice the budget of 2 MiB,
/// about 260 MiB) well under the 1 GiB RSS limit, so that an RSS crash is a real bomb.
const MAX_PICKLE: usize = 2 << 20;
const MEMO_IDS: u8 = 8;

struct Writer {
    out: Vec<u8>,
    memo_next: u32,
}

impl Writer {
    fn op(&mut self, op: &Op) {
        let o = &mut self.out;
        match op {
            Op::None => o.push(b'N'),
            Op::True => o.push(0x88),
            Op::False => o.push(0x89),
            Op::Int(n) => match *n {
                0..=0xff => o.extend_from_slice(&[b'K', *n as u8]),
                0..=0xffff => {
                    o.push(b'M');
                    o.extend_from_slice(&(*n as u16).to_le_bytes());
                }
                _ => {
                    o.push(b'J');
                    o.extend_from_slice(&n.to_le_bytes());
                }
            },
            Op::IntText(n) => o.extend_from_slice(format!("I{n}\n").as_bytes()),
            Op::Long(b) => {
                let b = &b[..b.len().min(255)];
                o.extend_from_slice(&[0x8a, b.len() as u8]);
                o.extend_from_slice(b);
            }
            Op::Float(f) => {
                o.push(b'G');
                o.extend_from_slice(&f.to_be_bytes());
            }
            Op::Str(s) => {
                o.push(b'X');
                o.extend_from_slice(&(s.len() as u32).to_le_bytes());
                o.extend_from_slice(s.as_bytes());
            }
            Op::BigStr(n) => {
                let len = *n as usize * 64;
                o.push(b'X');
                o.extend_from_slice(&(len as u32).to_le_bytes());
                o.resize(o.len() + len, b'x');
            }
            Op::Bytes(b) => {
                o.push(b'B');
                o.extend_from_slice(&(b.len() as u32).to_le_bytes());
                o.extend_from_slice(b);
            }
            Op::ByteArray8(b) => {
                o.push(0x96);
                o.extend_from_slice(&(b.len() as u64).to_le_bytes());
                o.extend_from_slice(b);
            }
            Op::Mark => o.push(b'('),
            Op::EmptyList => o.push(b']'),
            Op::EmptyTuple => o.push(b')'),
            Op::EmptyDict => o.push(b'}'),
            Op::EmptySet => o.push(0x8f),
            Op::List => o.push(b'l'),
            Op::Tuple => o.push(b't'),
            Op::Tuple1 => o.push(0x85),
            Op::Tuple2 => o.push(0x86),
            Op::Tuple3 => o.push(0x87),
            Op::Dict => o.push(b'd'),
            Op::FrozenSet => o.push(0x91),
            Op::Append => o.push(b'a'),
            Op::Appends => o.push(b'e'),
            Op::SetItem => o.push(b's'),
            Op::SetItems => o.push(b'u'),
            Op::AddItems => o.push(0x90),
            Op::Put(i) => o.extend_from_slice(&[b'q', i % MEMO_IDS]),
            Op::Get(i) => o.extend_from_slice(&[b'h', i % MEMO_IDS]),
            Op::LongPut(i) => {
                o.push(b'r');
                o.extend_from_slice(&u32::from(i % MEMO_IDS).to_le_bytes());
            }
            Op::LongGet(i) => {
                o.push(b'j');
                o.extend_from_slice(&u32::from(i % MEMO_IDS).to_le_bytes());
            }
            Op::Memoize => {
                // Memo ids go up with each MEMOIZE: keep GETs meaningful by cycling the small range.
                if self.memo_next < u32::from(MEMO_IDS) {
                    o.push(0x94);
                    self.memo_next += 1;
                } else {
                    o.extend_from_slice(&[b'q', (self.memo_next % u32::from(MEMO_IDS)) as u8]);
                    self.memo_next += 1;
                }
            }
            Op::Dup => o.push(b'2'),
            Op::Global(g) => {
                let (m, n) = g.names();
                o.extend_from_slice(format!("c{m}\n{n}\n").as_bytes());
            }
            Op::StackGlobal(g) => {
                let (m, n) = g.names();
                for s in [m, n] {
                    o.extend_from_slice(&[0x8c, s.len() as u8]);
                    o.extend_from_slice(s.as_bytes());
                }
                o.push(0x93);
            }
            Op::Reduce => o.push(b'R'),
            Op::NewObj => o.push(0x81),
            Op::Build => o.push(b'b'),
            Op::Pop => o.push(b'0'),
            Op::PopMark => o.push(b'1'),
            Op::Frame(n) => {
                o.push(0x95);
                o.extend_from_slice(&u64::from(*n).to_le_bytes());
            }
            Op::Nan(payload) => {
                o.push(b'G');
                o.extend_from_slice(&[0x7f, 0xf8, 0, 0, 0, 0, 0, *payload]);
            }
            Op::FanOutSet(id, n) => {
                o.extend_from_slice(&[0x8f, b'(']);
                for _ in 0..*n {
                    o.extend_from_slice(&[b'h', id % MEMO_IDS]);
                }
                o.push(0x90);
            }
            Op::FanOutDict(id, n) => {
                o.extend_from_slice(&[b'}', b'(']);
                for _ in 0..*n {
                    o.extend_from_slice(&[b'h', id % MEMO_IDS, b'N']);
                }
                o.push(b'u');
            }
            Op::HashNeighbours(k) => {
                for v in [-1i32, -2, 1] {
                    o.push(b'J');
                    o.extend_from_slice(&(v - i32::from(*k)).to_le_bytes());
                }
                o.push(0x88);
                o.push(b'G');
                o.extend_from_slice(&1.0f64.to_be_bytes());
            }
            Op::Repeat(_) | Op::End => {}
        }
    }

    /// Writes `ops`, expanding repeat blocks; returns the index after the block.
    fn block(&mut self, ops: &[Op], mut i: usize, depth: usize) -> usize {
        while i < ops.len() {
            if self.out.len() > MAX_PICKLE {
                return ops.len();
            }
            match &ops[i] {
                Op::End if depth > 0 => return i + 1,
                Op::Repeat(n) if depth < 4 => {
                    let times = if *n < 128 { usize::from(*n) } else { 1usize << ((n - 128) % 21) };
                    let mut end = i + 1;
                    for _ in 0..times.max(1) {
                        let before = self.out.len();
                        end = self.block(ops, i + 1, depth + 1);
                        if self.out.len() > MAX_PICKLE || self.out.len() == before {
                            break;
                        }
                    }
                    i = end;
                }
                op => {
                    self.op(op);
                    i += 1;
                }
            }
        }
        i
    }
}

fn pickle_of(input: &Input) -> Vec<u8> {
    let protocol = 2 + input.protocol % 4;
    let mut w = Writer { out: vec![0x80, protocol], memo_next: 0 };
    w.block(&input.ops, 0, 0);
    w.out.push(b'.');
    w.out
}

// ---------------------------------------------------------------------------------------------

/// The value shown as the server shows it: bounded whatever the value.
fn shown(v: &Value) -> String {
    mpconn::pickle::repr_limited(v, 200)
}

fn check(p: Vec<u8>) {
    let len = p.len();
    let peak = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let start = CURRENT.load(Ordering::Relaxed);
            PEAK.store(start, Ordering::Relaxed);
            let decoded = loads_value(&p);
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
            if let Ok(v) = decoded {
                let _ = shown(&v);
                for proto in 2..=5u8 {
                    if let Ok(b1) = dumps_value(&v, proto) {
                        let v2 = loads_value(&b1)
                            .unwrap_or_else(|e| panic!("Rust cannot read its own protocol-{proto} pickle: {e}"));
                        let b2 = dumps_value(&v2, proto).expect("what was written once is written again");
                        assert!(b1 == b2, "protocol {proto}: decode(encode(v)) encodes differently");
                    }
                }
                drop(v);
            }
            peak
        })
        .expect("a thread")
        .join()
        .expect("the decoding thread panicked (see above)");
    assert!(
        peak <= heap_budget(len),
        "decoding {len} bytes took {peak} bytes of heap at its peak, over the budget {}",
        heap_budget(len)
    );
}

fuzz_target!(|input: Input| {
    check(pickle_of(&input));
});
