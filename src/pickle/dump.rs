//! The direct pickler of `serde` values: [`dumps`](super::dumps) writes opcodes straight into
//! the output as `serde` walks the Rust value, with no [`Value`](super::Value) tree in between.
//!
//! Why it exists: building a `Value` for every field (a `CompactString` per str, a `Dict` per
//! struct with its hashed key index) and walking it again cost 5 to 15 times what writing the
//! opcodes costs. Python loads from it what [`to_value`](super::to_value) followed by
//! [`dumps_value`](super::dumps_value) would have given it, written the same way (byte for
//! byte while the memo below is exact, for a `Serialize` that reports its lengths truthfully:
//! all derived ones and the standard collections):
//!
//! * the same shapes: structs and maps are dicts (field / iteration order), sequences lists,
//!   tuples tuples, `None` / `()` `None`, a unit variant its name, any other variant
//!   `{name: payload}`; a map key that Python cannot hash (a list or dict) is refused as
//!   [`PickleError::Unhashable`], as `to_value` refuses it;
//! * the same opcodes and batches of 1000 as CPython's `_pickle.c`, and the same memo of
//!   strs: memoised the first time, fetched (`BINGET`) afterwards, keyed by content.
//!
//! The memo is built for speed, and is exact (as `dumps_value`'s, which is never larger than
//! CPython's) for a value of up to [`EXACT`] distinct strs whose fields' strs repeat:
//!
//! * a field or variant name (`&'static str`) is found by its address in a small table;
//! * a str of up to 7 bytes is found first in a direct-mapped front cache, by its bytes packed
//!   in one word;
//! * the first [`EXACT`] distinct strs go to an exact open-addressing table; the strs after
//!   them to a bounded two-way cache that keeps the strs found again and lets the others churn
//!   (a table of every str of a 100,000-record message cost more than all the rest);
//! * the strs of a struct field that do not repeat (after each [`SITE_SAMPLE`], fewer than one
//!   in [`RARE`] found again: ids, names, e-mail addresses) are written from then on without
//!   the memo, sparing both the lookup and the MEMOIZE that CPython writes for each; those of
//!   a field that has shown by [`SETTLE`] strs that they repeat are no longer counted;
//! * a struct, map or list announced with 2 to [`BATCH`] items is written as its one batch (MARK
//!   when it opens, SETITEMS / APPENDS when it ends), with nothing counted per item.
//!
//! So beyond [`EXACT`] distinct strs, or in a field whose strs mostly do not repeat, a str that
//! does repeat may be written again where CPython (had its objects been one) would fetch it;
//! every container written without MEMOIZE (CPython memoises each) pays for some of that.
//! BENCHMARKS.md (issue 20, `benches/pickle_typed.rs`) compares the sizes with CPython's.
//! None of the tables holds a copy of a str: an entry is where its bytes already are in the
//! output, its length, its memo id and 32 bits of its hash.
//!
//! Where lengths matter and a `Serialize` may lie (a sequence or map of unknown length, a
//! tuple whose count differs from the one it announced), the output stays correct: a
//! sequence of unknown length is always written with `MARK` ... `APPENDS`, and a tuple that
//! turns out longer than three gets its `MARK` inserted where it began.
//!
//! It recurses on the Rust value's own nesting, which the program controls (as `to_value`).

use std::hash::BuildHasher;

use serde::ser::{self, Serialize};

use super::PickleError;
use super::encode::{py2_name, write_bytes3, write_get, write_int, write_put, write_str_header};
use super::key::FastState;
use super::opcodes as op;

type R<T> = Result<T, PickleError>;

/// CPython's batch size for APPENDS / SETITEMS.
const BATCH: usize = 1000;

/// Slots of the table of `&'static str` names by address (a power of two); it takes names
/// until three quarters full.
const NAME_SLOTS: usize = 128;

/// Slots of the front cache of short strs (a power of two).
const TINY_SLOTS: usize = 64;

/// Distinct strs the exact memo table holds; the strs after them go to the bounded cache.
const EXACT: usize = 4096;

/// Sets (of two ways) of the bounded str cache (a power of two): 16 KiB, which stay in the
/// CPU's first-level cache.
const SETS: usize = 512;

/// Pickles `v` with `proto` (2 to 5), writing as `serde` walks it.
pub(crate) fn dumps<T: Serialize + ?Sized>(v: &T, proto: u8) -> R<Vec<u8>> {
    if !(2..=5).contains(&proto) {
        return Err(PickleError::UnsupportedProtocol(proto));
    }
    let mut w = Writer::new(proto);
    w.out.extend_from_slice(&[op::PROTO, proto]);
    v.serialize(Ser { w: &mut w, key: false })?;
    w.out.push(op::STOP);
    Ok(w.out)
}

/// A str in the cache: where its bytes are in the output, its length, its memo id, 32 bits of
/// its hash (16 bytes: a str at an offset of 4 GiB or more, or as long, is not cached).
#[derive(Clone, Copy)]
struct Slot {
    offset: u32,
    len: u32,
    id: u32,
    h32: u32,
}

/// An empty slot (no cached str is that long).
const EMPTY: Slot = Slot { offset: 0, len: u32::MAX, id: 0, h32: 0 };

/// Whether `slot` holds `b` (hash bits and length first; the bytes compared inline when short).
#[inline]
fn holds(out: &[u8], slot: &Slot, h32: u32, b: &[u8]) -> bool {
    if slot.h32 != h32 || slot.len as usize != b.len() {
        return false;
    }
    let n = b.len();
    let Some(a) = out.get(slot.offset as usize..slot.offset as usize + n) else {
        return false;
    };
    if (8..=16).contains(&n) {
        read8(a, 0) == read8(b, 0) && read8(a, n - 8) == read8(b, n - 8)
    } else if (4..8).contains(&n) {
        read4(a, 0) == read4(b, 0) && read4(a, n - 4) == read4(b, n - 4)
    } else if n < 4 {
        // Positions 0, n/2 and n-1 cover every byte of a str this short.
        n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1])
    } else {
        a == b
    }
}

/// How the strs under one struct field fared in the memo.
#[derive(Clone, Copy)]
struct Site {
    seen: u32,
    found: u32,
    mode: SiteMode,
}

/// What a field's strs get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SiteMode {
    /// The memo, and their finds counted.
    Sampling,
    /// The memo, uncounted: after [`SETTLE`] strs, at least one in [`RARE`] was found.
    Memoised,
    /// No memo from now on: at a multiple of [`SITE_SAMPLE`], fewer than one in [`RARE`] was
    /// found.
    Unmemoised,
}

/// No field: strs are always memoised.
const NO_SITE: usize = usize::MAX;

/// A field's strs leave the memo when, after a multiple of this many, fewer than one in
/// [`RARE`] was found there.
const SITE_SAMPLE: u32 = 64;
const RARE: u32 = 16;

/// A field's strs stop being counted once this many showed that they repeat.
const SETTLE: u32 = 4 * SITE_SAMPLE;

struct Writer {
    out: Vec<u8>,
    proto: u8,
    /// Memo entries written.
    memo_len: u32,
    /// Strs of up to 7 bytes by content packed in a word (bit 63 set, the length in bits
    /// 56-58), direct-mapped: a front cache of the tables below, which a short str that repeats
    /// (a tag, a dict key) finds in one load.
    tiny: [(u64, u32); TINY_SLOTS],
    /// The first [`EXACT`] distinct strs: every one is found again. Open addressing, linear
    /// probing, at most half full; a slot's place comes from its `h32`.
    exact: Vec<Slot>,
    exact_len: usize,
    /// The strs after them (empty until the exact table is full), two ways a set: way 0 holds a
    /// str found again at least once, way 1 the newest. A str seen for the first time goes to
    /// way 1; found there, it moves to way 0 (and way 0's to way 1). So a stream of distinct
    /// strs churns way 1 and leaves the strs that repeat in way 0.
    sets: Vec<[Slot; 2]>,
    seed: u64,
    /// (address, length, memo id) of `&'static str` names, open addressing; address 0 is an
    /// empty slot.
    names: [(usize, u32, u32); NAME_SLOTS],
    names_len: usize,
    /// Per name: the strs written under it as a field's value, and those found in the memo.
    sites: [Site; NAME_SLOTS],
    /// The name of the field being written ([`NO_SITE`] outside a struct field, or for a
    /// name the table has no room for).
    site: usize,
    /// Memo ids of the globals protocol 2 writes bytes with.
    codecs_encode: Option<u32>,
    builtins_bytes: Option<u32>,
}

/// A str of at most 7 bytes as one word: its bytes, its length in bits 56-58, bit 63 set (so
/// no packed str is 0, the empty slot).
#[inline(always)]
fn pack_short(b: &[u8]) -> Option<u64> {
    let n = b.len();
    let bytes = if (4..=7).contains(&n) {
        read4(b, 0) | (read4(b, n - 4) << ((n - 4) * 8))
    } else if (1..4).contains(&n) {
        // Bytes 0, n/2 and n-1 (every byte of so short a str) at fixed places: with the
        // length beside them, no two strs pack alike.
        u64::from(b[0]) | (u64::from(b[n / 2]) << 8) | (u64::from(b[n - 1]) << 16)
    } else if n == 0 {
        0
    } else {
        return None;
    };
    Some(bytes | ((n as u64) << 56) | (1 << 63))
}

#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline]
fn read8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline]
fn read4(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// A seeded hash of a str's bytes, wyhash's shape: short strs are read with two overlapping
/// loads (no copy into a buffer, no loop), longer ones 16 bytes a step. Equal strs hash equal;
/// the table compares contents, so collisions only cost time.
#[inline]
fn str_hash(seed: u64, b: &[u8]) -> u64 {
    const K0: u64 = 0xa076_1d64_78bd_642f;
    const K1: u64 = 0xe703_7ed1_a0b4_28db;
    let n = b.len();
    let mut h = seed ^ (n as u64).wrapping_mul(K0);
    let (a, c) = if n <= 16 {
        if n >= 8 {
            (read8(b, 0), read8(b, n - 8))
        } else if n >= 4 {
            (read4(b, 0), read4(b, n - 4))
        } else if n > 0 {
            ((u64::from(b[0]) << 16) | (u64::from(b[n / 2]) << 8) | u64::from(b[n - 1]), 0)
        } else {
            (0, 0)
        }
    } else {
        let mut i = 0;
        while n - i > 16 {
            h = mum(read8(b, i) ^ K1, read8(b, i + 8) ^ h);
            i += 16;
        }
        (read8(b, n - 16), read8(b, n - 8))
    };
    mum(K1 ^ (n as u64), mum(a ^ K1, c ^ h))
}

impl Writer {
    fn new(proto: u8) -> Writer {
        Writer {
            out: Vec::with_capacity(256),
            proto,
            memo_len: 0,
            tiny: [(0, 0); TINY_SLOTS],
            exact: vec![EMPTY; 64],
            exact_len: 0,
            sets: Vec::new(),
            seed: FastState::new().hash_one(0x20_u8),
            names: [(0, 0, 0); NAME_SLOTS],
            names_len: 0,
            sites: [Site { seen: 0, found: 0, mode: SiteMode::Sampling }; NAME_SLOTS],
            site: NO_SITE,
            codecs_encode: None,
            builtins_bytes: None,
        }
    }

    /// Memoises what was just written.
    #[inline]
    fn put(&mut self) -> R<u32> {
        let id = self.memo_len;
        self.memo_len = id.checked_add(1).ok_or_else(|| PickleError::Serde("more than 2^32 memo entries".into()))?;
        write_put(&mut self.out, self.proto, id);
        Ok(id)
    }

    /// A str, memoised by content: written the first time, fetched from the memo while the
    /// cache holds it.
    #[inline]
    fn str(&mut self, s: &str) -> R<()> {
        self.str_id(s).map(drop)
    }

    /// [`Writer::str`], returning the str's memo id. (Inlined: a short str found in the front
    /// cache costs a few instructions, a call as many again.)
    #[inline(always)]
    fn str_id(&mut self, s: &str) -> R<u32> {
        let b = s.as_bytes();
        let tiny = pack_short(b);
        let tiny_slot = tiny.map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % TINY_SLOTS);
        if let (Some(k), Some(t)) = (tiny, tiny_slot)
            && self.tiny[t].0 == k
        {
            let id = self.tiny[t].1;
            write_get(&mut self.out, id);
            return Ok(id);
        }
        self.str_id_miss(b, tiny, tiny_slot)
    }

    /// [`Writer::str_id`] for a str the front cache does not hold: found or written, and kept
    /// in the front cache when short.
    #[inline(never)]
    fn str_id_miss(&mut self, b: &[u8], tiny: Option<u64>, tiny_slot: Option<usize>) -> R<u32> {
        let id = self.str_id_slow(b)?;
        if let (Some(k), Some(t)) = (tiny, tiny_slot) {
            self.tiny[t] = (k, id);
        }
        Ok(id)
    }

    /// [`Writer::str_id`] past the front cache.
    #[inline]
    fn str_id_slow(&mut self, b: &[u8]) -> R<u32> {
        let h = str_hash(self.seed, b);
        let h32 = (h >> 32) as u32;
        let out = &self.out;
        let is = |slot: &Slot| holds(out, slot, h32, b);
        let mask = self.exact.len() - 1;
        let mut i = h32 as usize & mask;
        loop {
            let slot = &self.exact[i];
            if is(slot) {
                let id = slot.id;
                write_get(&mut self.out, id);
                return Ok(id);
            }
            if slot.len == u32::MAX {
                break;
            }
            i = (i + 1) & mask;
        }
        let set = (h as usize) & (SETS - 1);
        if let Some(ways) = self.sets.get_mut(set) {
            for way in 0..2 {
                if is(&ways[way]) {
                    ways.swap(0, way);
                    let id = ways[0].id;
                    write_get(&mut self.out, id);
                    return Ok(id);
                }
            }
        }
        write_str_header(&mut self.out, self.proto, b.len())?;
        let offset = self.out.len();
        self.out.extend_from_slice(b);
        let id = self.put()?;
        let (Ok(offset), Ok(len)) = (u32::try_from(offset), u32::try_from(b.len())) else {
            return Ok(id);
        };
        if len == u32::MAX {
            return Ok(id);
        }
        let slot = Slot { offset, len, id, h32 };
        if self.exact_len < EXACT {
            // `i` is the empty slot the probe ended on.
            self.exact[i] = slot;
            self.exact_len += 1;
            if self.exact_len * 2 > self.exact.len() {
                self.grow_exact();
            }
        } else {
            if self.sets.is_empty() {
                self.sets = vec![[EMPTY; 2]; SETS];
            }
            self.sets[set][1] = slot;
        }
        Ok(id)
    }

    /// Twice the exact table's slots, the strs moved over.
    #[cold]
    fn grow_exact(&mut self) {
        let mut table = vec![EMPTY; self.exact.len() * 2];
        let mask = table.len() - 1;
        for slot in self.exact.iter().filter(|s| s.len != u32::MAX) {
            let mut i = slot.h32 as usize & mask;
            while table[i].len != u32::MAX {
                i = (i + 1) & mask;
            }
            table[i] = *slot;
        }
        self.exact = table;
    }

    /// A field or variant name: its memo id found by address when it was written before.
    /// Returns the name's slot in the table ([`NO_SITE`] when it has no room).
    #[inline(always)]
    fn static_str(&mut self, s: &'static str) -> R<usize> {
        let addr = s.as_ptr() as usize;
        let len = s.len() as u32;
        let mut i = addr.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> (usize::BITS - 7);
        loop {
            let (a, n, id) = self.names[i];
            if a == addr && n == len {
                write_get(&mut self.out, id);
                return Ok(i);
            }
            if a == 0 {
                break;
            }
            i = (i + 1) % NAME_SLOTS;
        }
        self.new_name(s, i)
    }

    /// A name not in the table by address: by content, then kept at `slot` (an empty one).
    #[inline(never)]
    fn new_name(&mut self, s: &'static str, slot: usize) -> R<usize> {
        let id = self.str_id(s)?;
        if let Ok(len) = u32::try_from(s.len())
            && self.names_len < NAME_SLOTS * 3 / 4
        {
            self.names[slot] = (s.as_ptr() as usize, len, id);
            self.names_len += 1;
            return Ok(slot);
        }
        Ok(NO_SITE)
    }

    /// A str that is a value (not a key or name): memoised, unless the field it is written
    /// under has shown that its strs do not repeat.
    #[inline(always)]
    fn value_str(&mut self, s: &str) -> R<()> {
        let mode = self.sites.get(self.site).map_or(SiteMode::Memoised, |site| site.mode);
        match mode {
            SiteMode::Memoised => return self.str(s),
            SiteMode::Unmemoised => {
                write_str_header(&mut self.out, self.proto, s.len())?;
                self.out.extend_from_slice(s.as_bytes());
                return Ok(());
            }
            SiteMode::Sampling => {}
        }
        let before = self.memo_len;
        self.str(s)?;
        let found = self.memo_len == before;
        let site = &mut self.sites[self.site];
        site.seen += 1;
        site.found += u32::from(found);
        if site.seen.is_multiple_of(SITE_SAMPLE) {
            if site.found.saturating_mul(RARE) < site.seen {
                site.mode = SiteMode::Unmemoised;
            } else if site.seen >= SETTLE {
                site.mode = SiteMode::Memoised;
            }
        }
        Ok(())
    }

    /// `_codecs.encode` or `builtins.bytes` at protocol 2, memoised (GLOBAL, as Python 3 writes
    /// it with the module names Python 2 has).
    #[inline]
    fn global2(&mut self, codecs: bool) -> R<()> {
        let memo = if codecs { self.codecs_encode } else { self.builtins_bytes };
        if let Some(id) = memo {
            write_get(&mut self.out, id);
            return Ok(());
        }
        let (module, name) = if codecs { ("_codecs", "encode") } else { ("builtins", "bytes") };
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(py2_name(module, name).as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let id = self.put()?;
        if codecs {
            self.codecs_encode = Some(id);
        } else {
            self.builtins_bytes = Some(id);
        }
        Ok(())
    }

    #[inline]
    fn bytes(&mut self, b: &[u8]) -> R<()> {
        if self.proto >= 3 {
            return write_bytes3(&mut self.out, self.proto, b);
        }
        if b.is_empty() {
            self.global2(false)?;
            self.out.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
        } else {
            // Python 3 at protocol 2: _codecs.encode(the bytes as latin-1 text, 'latin1').
            self.global2(true)?;
            let text: String = b.iter().map(|&c| c as char).collect();
            write_str_header(&mut self.out, self.proto, text.len())?;
            self.out.extend_from_slice(text.as_bytes());
            self.str("latin1")?;
            self.out.extend_from_slice(&[op::TUPLE2, op::REDUCE]);
        }
        Ok(())
    }

    /// An int beyond 64 bits: LONG1 of its minimal two's-complement bytes (`le` holds the sign
    /// in its last byte).
    #[inline]
    fn long1(&mut self, le: &[u8]) {
        let len = super::encode::minimal_len(le);
        self.out.extend_from_slice(&[op::LONG1, len as u8]);
        self.out.extend_from_slice(&le[..len]);
    }

    #[inline]
    fn i128(&mut self, v: i128) {
        match i64::try_from(v) {
            Ok(i) => write_int(&mut self.out, i),
            Err(_) => self.long1(&v.to_le_bytes()),
        }
    }

    #[inline]
    fn u128(&mut self, v: u128) {
        match i64::try_from(v) {
            Ok(i) => write_int(&mut self.out, i),
            Err(_) => {
                let mut le = [0u8; 17];
                le[..16].copy_from_slice(&v.to_le_bytes());
                self.long1(&le);
            }
        }
    }
}

/// The serializer: writes into the writer; `key` when the value is a dict key (a list or dict
/// there is refused, as Python refuses an unhashable key).
struct Ser<'a> {
    w: &'a mut Writer,
    key: bool,
}

fn unhashable(type_name: &'static str) -> PickleError {
    PickleError::Unhashable { type_name, offset: None }
}

/// APPENDS / SETITEMS batching of a list or dict, as CPython's `batch_list` / `batch_dict`: a
/// batch of one item has no MARK and ends with APPEND / SETITEM.
struct Batch {
    /// The announced number of items (`usize::MAX` when unknown).
    declared: usize,
    /// Items written.
    total: usize,
    /// Items in the open batch.
    in_batch: usize,
    /// A MARK is open.
    marked: bool,
}

impl Batch {
    fn new(declared: Option<usize>) -> Batch {
        Batch { declared: declared.unwrap_or(usize::MAX), total: 0, in_batch: 0, marked: false }
    }

    /// Before an item.
    #[inline(always)]
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.marked && self.declared.saturating_sub(self.total) > 1 {
            out.push(op::MARK);
            self.marked = true;
        }
    }

    /// After an item: `one` closes a batch of one (APPEND / SETITEM), `many` a marked batch.
    #[inline(always)]
    fn end_item(&mut self, out: &mut Vec<u8>, one: u8, many: u8) {
        self.total += 1;
        if self.marked {
            self.in_batch += 1;
            if self.in_batch == BATCH {
                out.push(many);
                self.marked = false;
                self.in_batch = 0;
            }
        } else {
            out.push(one);
        }
    }

    #[inline(always)]
    fn finish(&self, out: &mut Vec<u8>, many: u8) {
        if self.marked {
            out.push(many);
        }
    }
}

/// A list, tuple or tuple variant being written.
pub(crate) struct SeqSer<'a> {
    w: &'a mut Writer,
    key: bool,
    kind: SeqKind,
    /// Inside a `{variant: payload}` dict: close it with SETITEM.
    variant: bool,
}

enum SeqKind {
    /// A list announced with 2 to [`BATCH`] items: its MARK is written, APPENDS closes it (a
    /// `Serialize` that writes more items than it announced gets one longer APPENDS, which
    /// loads the same).
    OneBatch,
    List(Batch),
    /// A tuple: its announced length, items written, where it began, whether a MARK opened it.
    Tuple {
        count: usize,
        start: usize,
        marked: bool,
    },
}

/// A dict (map, struct, struct variant) being written.
pub(crate) struct MapSer<'a> {
    w: &'a mut Writer,
    batch: Batch,
    /// A dict announced with 2 to [`BATCH`] entries: one MARK written when it opened, one
    /// SETITEMS when it ends, and no batch to count per entry (what [`Batch`] writes for that
    /// many; a `Serialize` that writes more entries than it announced gets one longer SETITEMS,
    /// which loads the same).
    one_batch: bool,
    /// A key was written and waits for its value.
    pending_key: bool,
    variant: bool,
}

impl<'a> Ser<'a> {
    /// Opens `{variant: ...}`: the dict and the name; the payload follows, then SETITEM.
    #[inline]
    fn open_variant(&mut self, variant: &'static str) -> R<()> {
        if self.key {
            return Err(unhashable("dict"));
        }
        self.w.out.push(op::EMPTY_DICT);
        self.w.static_str(variant).map(drop)
    }

    #[inline]
    fn tuple(self, len: usize, variant: bool) -> SeqSer<'a> {
        let start = self.w.out.len();
        let marked = !(1..=3).contains(&len) && len != 0;
        if marked {
            self.w.out.push(op::MARK);
        }
        SeqSer { w: self.w, key: self.key, kind: SeqKind::Tuple { count: 0, start, marked }, variant }
    }

    /// A dict: a map, or a struct's fields (announced with 2 to [`BATCH`] entries: one batch).
    #[inline]
    fn map(self, len: Option<usize>, variant: bool) -> R<MapSer<'a>> {
        if self.key {
            return Err(unhashable("dict"));
        }
        let one_batch = len.is_some_and(|n| (2..=BATCH).contains(&n));
        if one_batch {
            self.w.out.extend_from_slice(&[op::EMPTY_DICT, op::MARK]);
        } else {
            self.w.out.push(op::EMPTY_DICT);
        }
        Ok(MapSer { w: self.w, batch: Batch::new(len), one_batch, pending_key: false, variant })
    }
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = PickleError;
    type SerializeSeq = SeqSer<'a>;
    type SerializeTuple = SeqSer<'a>;
    type SerializeTupleStruct = SeqSer<'a>;
    type SerializeTupleVariant = SeqSer<'a>;
    type SerializeMap = MapSer<'a>;
    type SerializeStruct = MapSer<'a>;
    type SerializeStructVariant = MapSer<'a>;

    #[inline]
    fn serialize_bool(self, v: bool) -> R<()> {
        self.w.out.push(if v { op::NEWTRUE } else { op::NEWFALSE });
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> R<()> {
        write_int(&mut self.w.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> R<()> {
        self.w.i128(v);
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> R<()> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> R<()> {
        self.w.u128(u128::from(v));
        Ok(())
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> R<()> {
        self.w.u128(v);
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> R<()> {
        self.serialize_f64(f64::from(v))
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> R<()> {
        let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
        self.w.out.extend_from_slice(&[op::BINFLOAT, a, b, c, d, e, f, g, h]);
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> R<()> {
        self.w.str(v.encode_utf8(&mut [0; 4]))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> R<()> {
        if self.key { self.w.str(v) } else { self.w.value_str(v) }
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> R<()> {
        self.w.bytes(v)
    }
    #[inline]
    fn serialize_none(self) -> R<()> {
        self.w.out.push(op::NONE);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R<()> {
        v.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> R<()> {
        self.w.out.push(op::NONE);
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> R<()> {
        self.w.out.push(op::NONE);
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R<()> {
        self.w.static_str(variant).map(drop)
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R<()> {
        v.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> R<()> {
        self.open_variant(variant)?;
        v.serialize(Ser { w: &mut *self.w, key: false })?;
        self.w.out.push(op::SETITEM);
        Ok(())
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> R<SeqSer<'a>> {
        if self.key {
            return Err(unhashable("list"));
        }
        // A list of 2 to BATCH items, as its one batch of APPENDS, counts nothing per item.
        let kind = if let Some(n @ 2..=BATCH) = len {
            self.w.out.extend_from_slice(&[op::EMPTY_LIST, op::MARK]);
            debug_assert!(n <= BATCH);
            SeqKind::OneBatch
        } else {
            self.w.out.push(op::EMPTY_LIST);
            SeqKind::List(Batch::new(len))
        };
        Ok(SeqSer { w: self.w, key: false, kind, variant: false })
    }
    #[inline]
    fn serialize_tuple(self, len: usize) -> R<SeqSer<'a>> {
        Ok(self.tuple(len, false))
    }
    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> R<SeqSer<'a>> {
        Ok(self.tuple(len, false))
    }
    #[inline]
    fn serialize_tuple_variant(mut self, _: &'static str, _: u32, variant: &'static str, len: usize) -> R<SeqSer<'a>> {
        self.open_variant(variant)?;
        Ok(self.tuple(len, true))
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> R<MapSer<'a>> {
        self.map(len, false)
    }
    /// Every standard map: a plain loop over the entries (serde's default walks them with
    /// `try_for_each` and a closure, which compiles to a slower loop around our inlined key
    /// and value writers).
    #[inline]
    fn collect_map<K, V, I>(self, iter: I) -> R<()>
    where
        K: Serialize,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut map = self.map(len, false)?;
        for (k, v) in iter {
            ser::SerializeMap::serialize_entry(&mut map, &k, &v)?;
        }
        map.done()
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, len: usize) -> R<MapSer<'a>> {
        self.map(Some(len), false)
    }
    #[inline]
    fn serialize_struct_variant(mut self, _: &'static str, _: u32, variant: &'static str, len: usize) -> R<MapSer<'a>> {
        self.open_variant(variant)?;
        // The payload dict is the variant dict's value, never a key.
        Ser { w: self.w, key: false }.map(Some(len), true)
    }
}

impl SeqSer<'_> {
    #[inline(always)]
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> R<()> {
        // One call of `v.serialize` (not one per kind): the compiler inlines a whole element's
        // walk into one place where it would not copy it into three.
        let key = match &mut self.kind {
            SeqKind::OneBatch => false,
            SeqKind::List(b) => {
                b.start(&mut self.w.out);
                false
            }
            SeqKind::Tuple { count, .. } => {
                *count += 1;
                self.key
            }
        };
        v.serialize(Ser { w: &mut *self.w, key })?;
        if let SeqKind::List(b) = &mut self.kind {
            b.end_item(&mut self.w.out, op::APPEND, op::APPENDS);
        }
        Ok(())
    }

    #[inline(always)]
    fn done(self) -> R<()> {
        let out = &mut self.w.out;
        match self.kind {
            SeqKind::OneBatch => out.push(op::APPENDS),
            SeqKind::List(b) => b.finish(out, op::APPENDS),
            SeqKind::Tuple { marked: true, .. } => out.push(op::TUPLE),
            SeqKind::Tuple { count, start, marked: false } => match count {
                0 => out.push(op::EMPTY_TUPLE),
                1 => out.push(op::TUPLE1),
                2 => out.push(op::TUPLE2),
                3 => out.push(op::TUPLE3),
                // More items than announced: the MARK goes where the tuple began.
                _ => {
                    out.insert(start, op::MARK);
                    out.push(op::TUPLE);
                }
            },
        }
        if self.variant {
            out.push(op::SETITEM);
        }
        Ok(())
    }
}

forward_seq_traits!(SeqSer<'_>, ());

impl MapSer<'_> {
    /// A struct's field (a struct's `MapSer` is only reached through `SerializeStruct` and
    /// `SerializeStructVariant`, so no map key can be pending).
    #[inline(always)]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> R<()> {
        if !self.one_batch {
            self.batch.start(&mut self.w.out);
        }
        let site = self.w.static_str(key)?;
        let outer = std::mem::replace(&mut self.w.site, site);
        let r = v.serialize(Ser { w: &mut *self.w, key: false });
        self.w.site = outer;
        r?;
        if !self.one_batch {
            self.batch.end_item(&mut self.w.out, op::SETITEM, op::SETITEMS);
        }
        Ok(())
    }

    #[inline(always)]
    fn done(self) -> R<()> {
        if self.pending_key {
            return Err(PickleError::Serde("a map key without a value".into()));
        }
        if self.one_batch {
            self.w.out.push(op::SETITEMS);
        } else {
            self.batch.finish(&mut self.w.out, op::SETITEMS);
        }
        if self.variant {
            self.w.out.push(op::SETITEM);
        }
        Ok(())
    }
}

impl ser::SerializeMap for MapSer<'_> {
    type Ok = ();
    type Error = PickleError;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R<()> {
        if self.pending_key {
            return Err(PickleError::Serde("a map key without a value".into()));
        }
        if !self.one_batch {
            self.batch.start(&mut self.w.out);
        }
        k.serialize(Ser { w: &mut *self.w, key: true })?;
        self.pending_key = true;
        Ok(())
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R<()> {
        if !self.pending_key {
            return Err(PickleError::Serde("a map value without a key".into()));
        }
        v.serialize(Ser { w: &mut *self.w, key: false })?;
        self.pending_key = false;
        if !self.one_batch {
            self.batch.end_item(&mut self.w.out, op::SETITEM, op::SETITEMS);
        }
        Ok(())
    }
    #[inline(always)]
    fn end(self) -> R<()> {
        self.done()
    }
}

forward_struct_traits!(MapSer<'_>, ());

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};

    use super::super::{List, Value, dumps_value, loads_value, to_value};
    use super::*;

    /// What `dumps` wrote before it wrote directly: `to_value`, then the `Value` encoder.
    fn through_value<T: Serialize + ?Sized>(v: &T, proto: u8) -> R<Vec<u8>> {
        dumps_value(&to_value(v)?, proto)
    }

    fn same_bytes<T: Serialize + ?Sized>(v: &T) {
        for proto in 2..=5 {
            let direct = dumps(v, proto).unwrap();
            assert_eq!(direct, through_value(v, proto).unwrap(), "protocol {proto}");
        }
    }

    /// Plain data a `serde` value can be: leaves, lists, tuples, dicts with hashable keys.
    fn plain() -> impl Strategy<Value = Value> {
        let pool = prop::sample::select(vec!["", "a", "b", "name", "é", "日本語", "x y"]);
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (0i64..70_000).prop_map(Value::Int),
            any::<i128>().prop_map(Value::from),
            any::<u128>().prop_map(Value::from),
            any::<f64>().prop_map(Value::Float),
            pool.prop_map(Value::from),
            "\\PC{0,300}".prop_map(Value::from),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 200, 30, |inner| {
            let key = prop_oneof![
                "[a-z]{0,3}".prop_map(Value::from),
                any::<i16>().prop_map(|i| Value::Int(i64::from(i))),
                ("[a-z]{0,2}", any::<bool>()).prop_map(|(s, b)| Value::Tuple(List(vec![s.into(), b.into()]))),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..30).prop_map(Value::from),
                prop::collection::vec(inner.clone(), 0..6).prop_map(|v| Value::Tuple(List(v))),
                prop::collection::vec((key, inner), 0..12).prop_map(|kv| Value::dict(kv).unwrap()),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_values_are_written_as_through_a_value(v in plain()) {
            for proto in 2..=5 {
                let direct = dumps(&v, proto).unwrap();
                prop_assert_eq!(&direct, &through_value(&v, proto).unwrap(), "protocol {}", proto);
            }
        }
    }

    #[derive(serde::Serialize)]
    enum Kind {
        Plain,
        Tagged(i32),
        Pair(u8, String),
        Named { x: f64, name: &'static str },
        Big(Vec<u8>),
    }

    #[derive(serde::Serialize)]
    struct Rec {
        id: u64,
        name: String,
        tags: Vec<String>,
        maybe: Option<i64>,
        kinds: Vec<Kind>,
        pair: (i32, bool),
        big: u128,
        neg: i128,
        ch: char,
        unit: (),
        map: BTreeMap<(String, i32), Option<Kind>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        bytes: Vec<u8>,
    }

    fn rec(i: u64) -> Rec {
        let mut map = BTreeMap::new();
        map.insert(("k".to_string(), i as i32), Some(Kind::Tagged(-(i as i32))));
        map.insert(("l".to_string(), 0), None);
        Rec {
            id: u64::MAX - i,
            name: format!("user{i}"),
            tags: vec!["a".into(), "b".into(), "name".into()],
            maybe: i.is_multiple_of(2).then_some(i as i64),
            kinds: vec![
                Kind::Plain,
                Kind::Tagged(-1),
                Kind::Pair(1, "p".into()),
                Kind::Named { x: 0.5, name: "name" },
                Kind::Big(vec![7; 300]),
            ],
            pair: (7, true),
            big: 1 << 100,
            neg: -(1 << 90),
            ch: 'é',
            unit: (),
            map,
            skipped: i.is_multiple_of(3).then_some(3),
            bytes: (0..=255).collect(),
        }
    }

    /// The front cache keys short strs by their bytes and length packed in a word: every str
    /// of up to 7 bytes over a small alphabet (and a few multi-byte ones), each written twice
    /// (the second time fetched from the memo), loads back as itself.
    #[test]
    fn short_strs_are_told_apart_by_the_front_cache() {
        let mut strs: Vec<String> = vec![String::new(), "é".into(), "日".into(), "éé".into(), "\0".into()];
        let mut level = vec![String::new()];
        for _ in 0..7 {
            level = level.iter().flat_map(|s| ["a", "b", "\0"].map(|c| format!("{s}{c}"))).collect();
            strs.extend(level.iter().filter(|s| s.len() <= 3 || s.starts_with('a')).cloned());
        }
        let twice: Vec<&str> = strs.iter().chain(strs.iter()).map(String::as_str).collect();
        for proto in 2..=5 {
            let p = dumps(&twice, proto).unwrap();
            assert_eq!(loads_value(&p).unwrap(), to_value(&twice).unwrap(), "protocol {proto}");
        }
        same_bytes(&twice);
    }

    #[test]
    fn derived_structs_and_enums_are_written_as_through_a_value() {
        same_bytes(&rec(1));
        // Memo ids beyond 255 (LONG_BINPUT / LONG_BINGET below protocol 4), names fetched by
        // address and by content.
        same_bytes(&(0..400).map(rec).collect::<Vec<_>>());
        same_bytes(&Kind::Plain);
        same_bytes(&Some(Kind::Named { x: -0.0, name: "" }));
        same_bytes(&(b"".as_slice(), 'x', 1u8, -1i8, 3.5f32, u64::MAX, i64::MIN, i128::MIN, u128::MAX));
    }

    #[test]
    fn beyond_the_exact_memo_and_with_fields_unmemoised_the_value_is_the_same() {
        #[derive(serde::Serialize)]
        struct Row {
            name: String,
            city: String,
            tags: Vec<String>,
            kind: Kind,
        }
        // 6,000 rows: names all distinct (their field leaves the memo), cities and tags
        // repeating, more distinct strs than the exact table holds (10,000 at the top level).
        let rows: Vec<Row> = (0..6000i32)
            .map(|i| Row {
                name: format!("user {i}"),
                city: format!("city {}", i % 7),
                tags: vec![format!("t{}", i % 3), "a much longer tag that repeats".into()],
                kind: if i & 1 == 0 { Kind::Plain } else { Kind::Tagged(i) },
            })
            .collect();
        let loose: Vec<String> = (0..10_000).map(|i| format!("s{}", i % 9000)).collect();
        for proto in 2..=5 {
            let direct = dumps(&rows, proto).unwrap();
            assert_eq!(loads_value(&direct).unwrap(), to_value(&rows).unwrap(), "protocol {proto}");
            let through = through_value(&rows, proto).unwrap();
            // Names unmemoised spare their MEMOIZE; cities and tags are still fetched.
            assert!(direct.len() < through.len(), "protocol {proto}: {} vs {}", direct.len(), through.len());
            let direct = dumps(&loose, proto).unwrap();
            assert_eq!(loads_value(&direct).unwrap(), to_value(&loose).unwrap(), "protocol {proto}");
        }
    }

    #[test]
    fn batches_of_a_thousand_as_cpython() {
        for n in [0, 1, 2, 3, 999, 1000, 1001, 1002, 2000, 2001] {
            same_bytes(&(0..n).collect::<Vec<u32>>());
            same_bytes(&(0..n).map(|i| (i, i)).collect::<BTreeMap<u32, u32>>());
            same_bytes(&(0..n).map(|i| format!("s{}", i % 300)).collect::<Vec<_>>());
        }
    }

    /// A `Serialize` that announces `announced` items and gives `actual`, as a list, a map or a
    /// tuple.
    struct Liar {
        shape: u8,
        announced: Option<usize>,
        actual: usize,
    }

    impl Serialize for Liar {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.shape {
                0 => {
                    let mut q = s.serialize_seq(self.announced)?;
                    for i in 0..self.actual {
                        q.serialize_element(&i)?;
                    }
                    q.end()
                }
                1 => {
                    let mut m = s.serialize_map(self.announced)?;
                    for i in 0..self.actual {
                        m.serialize_entry(&i, &"v")?;
                    }
                    m.end()
                }
                _ => {
                    let mut t = s.serialize_tuple(self.announced.unwrap_or(0))?;
                    for i in 0..self.actual {
                        t.serialize_element(&i)?;
                    }
                    t.end()
                }
            }
        }
    }

    #[test]
    fn lengths_unknown_or_untrue_still_load_as_the_value() {
        let counts = [0, 1, 2, 3, 4, 5, 999, 1000, 1001, 2500];
        for shape in 0..3 {
            for &actual in &counts {
                let announced = counts.iter().map(|&c| Some(c)).chain([None]);
                for announced in announced {
                    let v = Liar { shape, announced, actual };
                    for proto in 2..=5 {
                        let direct = dumps(&v, proto).unwrap();
                        let want = to_value(&v).unwrap();
                        let got = loads_value(&direct).unwrap();
                        assert_eq!(got, want, "shape {shape} announced {announced:?} actual {actual}");
                    }
                }
            }
        }
    }

    #[test]
    fn unhashable_keys_are_refused_as_to_value_refuses_them() {
        let list_key: BTreeMap<Vec<i32>, i32> = [(vec![1], 1)].into();
        let dict_key: BTreeMap<BTreeMap<i32, i32>, i32> = [([(1, 1)].into(), 1)].into();
        #[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum K {
            A(i32),
            B { x: i32 },
            C(i32, i32),
            U,
        }
        let variant_keys: Vec<BTreeMap<K, i32>> =
            vec![[(K::A(1), 1)].into(), [(K::B { x: 1 }, 1)].into(), [(K::C(1, 2), 1)].into()];
        let nested: BTreeMap<(i32, Vec<i32>), i32> = [((1, vec![]), 1)].into();
        let check = |direct: R<Vec<u8>>, through: R<Vec<u8>>, name: &str| {
            let (Err(PickleError::Unhashable { type_name: a, .. }), Err(PickleError::Unhashable { type_name: b, .. })) =
                (direct, through)
            else {
                panic!("both refuse an unhashable key");
            };
            assert_eq!((a, b), (name, name));
        };
        for proto in 2..=5 {
            check(dumps(&list_key, proto), through_value(&list_key, proto), "list");
            check(dumps(&dict_key, proto), through_value(&dict_key, proto), "dict");
            check(dumps(&nested, proto), through_value(&nested, proto), "list");
            for k in &variant_keys {
                check(dumps(k, proto), through_value(k, proto), "dict");
            }
        }
        // Hashable keys: tuples, unit variants, bytes, None.
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Bytes(&'static [u8]);
        impl Serialize for Bytes {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let fine: BTreeMap<(K, Option<i32>, Bytes), i32> = [((K::U, None, Bytes(b"x")), 1)].into();
        same_bytes(&fine);
    }

    #[test]
    fn a_map_value_without_a_key_is_an_error_not_a_broken_pickle() {
        struct Bad(u8);
        impl Serialize for Bad {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                match self.0 {
                    0 => m.serialize_value(&1)?,
                    1 => {
                        m.serialize_key(&1)?;
                        m.serialize_key(&2)?;
                    }
                    _ => m.serialize_key(&1)?,
                }
                m.end()
            }
        }
        for i in 0..3 {
            assert!(matches!(dumps(&Bad(i), 4), Err(PickleError::Serde(_))), "case {i}");
        }
    }
}
