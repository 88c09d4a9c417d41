//! What one reactor thread counted, and the merge of every thread's counts into the run's:
//! counters, errors by kind with one example each, the latency histograms, and the per-second
//! timeline (each second's own histogram, so its p99 and the `--hdr-out` interval log are exact
//! merges across threads, not averages).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use mpconn::{Error, Result};

/// Lost, duplicated, reordered, corrupted filler echoes.
#[derive(Default, Clone, Copy)]
pub struct Integrity {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

impl Integrity {
    pub fn total(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.corrupted
    }
}

/// One second of the run (second `t` counts from the start of the command).
pub struct Second {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Latency of the replies that passed in this second, µs.
    pub latency_us: Histogram<u64>,
}

/// The run's latency histogram: 1 ns to 10 minutes, 3 significant digits.
pub fn latency_ns_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).map_err(|e| Error::Config(e.to_string()))
}

/// A second's latency histogram, µs: 2 significant digits, growing to the largest value seen,
/// so a long run's timeline stays small (a few KiB a second).
fn latency_us_histogram() -> Result<Histogram<u64>> {
    Histogram::new(2).map_err(|e| Error::Config(e.to_string()))
}

/// A thread's (then the run's) counts.
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, String>,
    pub integrity: Integrity,
    /// Reply latency of the replies that passed, ns.
    pub latency: Histogram<u64>,
    /// Connect + handshake, µs.
    pub connect: Histogram<u64>,
    pub opened: usize,
    pub churned: u64,
    /// Open loop: requests due before sending stopped that never went out (see `record_unsent`).
    pub unsent: u64,
    /// Clients still connecting or in their handshake when Ctrl-C came: closed, not errors.
    pub interrupted: u64,
    /// Clients started in all (the slots plus replacements for churned ones).
    pub clients_started: usize,
    pub timeline: Vec<Second>,
    /// First request sent and last reply, ns since the start.
    pub first_send_ns: Option<u64>,
    pub last_reply_ns: Option<u64>,
}

impl Stats {
    pub fn new() -> Result<Stats> {
        Ok(Stats {
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            integrity: Integrity::default(),
            latency: latency_ns_histogram()?,
            connect: Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| Error::Config(e.to_string()))?,
            opened: 0,
            churned: 0,
            interrupted: 0,
            unsent: 0,
            clients_started: 0,
            timeline: Vec::new(),
            first_send_ns: None,
            last_reply_ns: None,
        })
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn second(&mut self, at_ns: u64) -> Option<&mut Second> {
        let t = (at_ns / 1_000_000_000) as usize;
        while self.timeline.len() <= t {
            let latency_us = latency_us_histogram().ok()?;
            self.timeline.push(Second { sent: 0, ok: 0, errors: 0, latency_us });
        }
        self.timeline.get_mut(t)
    }

    pub fn record_sent(&mut self, at_ns: u64) {
        self.sent += 1;
        self.first_send_ns.get_or_insert(at_ns);
        if let Some(s) = self.second(at_ns) {
            s.sent += 1;
        }
    }

    pub fn record_ok(&mut self, at_ns: u64, latency_ns: u64) {
        self.ok += 1;
        self.last_reply_ns = Some(at_ns);
        let _ = self.latency.record(latency_ns.max(1));
        if let Some(s) = self.second(at_ns) {
            s.ok += 1;
            let _ = s.latency_us.record((latency_ns / 1000).max(1));
        }
    }

    /// A request due before sending stopped that never went out: its latency (intended send
    /// time to the stop) goes into the histograms, so a stall at the end of a run shows there.
    pub fn record_unsent(&mut self, at_ns: u64, latency_ns: u64) {
        self.unsent += 1;
        let _ = self.latency.record(latency_ns.max(1));
        if let Some(s) = self.second(at_ns) {
            let _ = s.latency_us.record((latency_ns / 1000).max(1));
        }
    }

    /// An error of `kind` (the first example of a kind is kept).
    pub fn record_error(&mut self, at_ns: u64, kind: String, example: Option<String>, n: u64) {
        if let Some(e) = example {
            self.examples.entry(kind.clone()).or_insert(e);
        }
        *self.errors.entry(kind).or_default() += n;
        if let Some(s) = self.second(at_ns) {
            s.errors += n;
        }
    }

    /// `n` integrity failures of filler echoes (counted in `integrity` by the caller): counted in
    /// the timeline's errors too, so the timeline adds up to the run's errors.
    pub fn record_integrity(&mut self, at_ns: u64, n: u64) {
        if let Some(s) = self.second(at_ns) {
            s.errors += n;
        }
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.ok += o.ok;
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, e) in o.examples {
            self.examples.entry(k).or_insert(e);
        }
        let i = &mut self.integrity;
        i.lost += o.integrity.lost;
        i.duplicated += o.integrity.duplicated;
        i.reordered += o.integrity.reordered;
        i.corrupted += o.integrity.corrupted;
        let _ = self.latency.add(&o.latency);
        let _ = self.connect.add(&o.connect);
        self.opened += o.opened;
        self.churned += o.churned;
        self.interrupted += o.interrupted;
        self.unsent += o.unsent;
        self.clients_started += o.clients_started;
        for (t, s) in o.timeline.into_iter().enumerate() {
            if t < self.timeline.len() {
                let mine = &mut self.timeline[t];
                mine.sent += s.sent;
                mine.ok += s.ok;
                mine.errors += s.errors;
                let _ = mine.latency_us.add(&s.latency_us);
            } else {
                self.timeline.push(s);
            }
        }
        self.first_send_ns = match (self.first_send_ns, o.first_send_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_reply_ns = self.last_reply_ns.max(o.last_reply_ns);
    }
}
