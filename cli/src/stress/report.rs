//! The end of a run: the human report lines (their shape is a contract: scripts parse them, so
//! new lines are added, none reshaped), the `--json` object, and the `--hdr-out` interval log.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use mpconn::{Error, Result};
use serde_json::{Value as J, json};

use super::stats::Stats;

/// Open descriptors before and after the run: this process's, the embedded server's.
pub struct Descriptors {
    pub client_before: Option<usize>,
    pub client_after: Option<usize>,
    pub server_before: Option<usize>,
    pub server_after: Option<usize>,
}

/// What the report says beyond the counts.
pub struct Summary<'a> {
    pub stats: &'a Stats,
    pub elapsed: Duration,
    pub clients: usize,
    pub threads: usize,
    pub target_rate: Option<f64>,
    pub ramp: Option<Duration>,
    pub server_pid: Option<u32>,
    /// Server RSS before the clients and with every client open (embedded server).
    pub rss_before: Option<u64>,
    pub rss_all_open: Option<u64>,
    pub server_rss: &'a [u64],
    /// `None` where descriptors are not counted.
    pub fds: Option<Descriptors>,
    pub leaked: bool,
}

fn micros(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let v = h.value_at_quantile(q);
    if v >= 10_000 { format!("{:.1} ms", v as f64 / 1000.0) } else { format!("{v} µs") }
}

fn nanos(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let v = if q >= 1.0 { h.max() } else { h.value_at_quantile(q) };
    match v {
        v if v >= 10_000_000 => format!("{:.1} ms", v as f64 / 1e6),
        v if v >= 10_000 => format!("{:.0} µs", v as f64 / 1e3),
        v => format!("{:.1} µs", v as f64 / 1e3),
    }
}

/// Requests per second over the active window (first request sent to last good reply).
pub fn achieved_rate(s: &Stats) -> f64 {
    match (s.first_send_ns, s.last_reply_ns) {
        (Some(a), Some(b)) if b > a => s.ok as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    }
}

/// Every error: the kinds counted while running plus the filler echo's integrity failures.
pub fn errors_by_kind(s: &Stats) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = s.errors.iter().map(|(k, n)| (k.clone(), *n)).collect();
    let i = &s.integrity;
    for (k, n) in
        [("lost", i.lost), ("duplicated", i.duplicated), ("reordered", i.reordered), ("corrupted", i.corrupted)]
    {
        if n > 0 {
            all.push((format!("echo {k}"), n));
        }
    }
    all
}

/// The human lines after the run (the first line, `stress: ...`, is printed before it).
pub fn write_human(out: &mut dyn Write, r: &Summary<'_>) -> std::io::Result<()> {
    let h = r.stats;
    writeln!(
        out,
        "connect + handshake: p50 {}, p99 {}, max {} ({} ok, {} failed)",
        micros(&h.connect, 0.5),
        micros(&h.connect, 0.99),
        micros(&h.connect, 1.0),
        h.opened,
        r.clients - h.opened.min(r.clients)
    )?;
    writeln!(
        out,
        "round trips: {} in {:.2} s = {:.0} msg/s",
        h.ok,
        r.elapsed.as_secs_f64(),
        h.ok as f64 / r.elapsed.as_secs_f64()
    )?;
    if let Some(rate) = r.target_rate {
        writeln!(
            out,
            "rate: target {rate:.0}/s{}, achieved {:.0}/s (first request to last reply); latency from each request's intended send time",
            r.ramp.map(|d| format!(" after a {:.1} s ramp", d.as_secs_f64())).unwrap_or_default(),
            achieved_rate(h)
        )?;
    }
    writeln!(
        out,
        "latency: p50 {}, p99 {}, p999 {}, max {}",
        nanos(&h.latency, 0.5),
        nanos(&h.latency, 0.99),
        nanos(&h.latency, 0.999),
        nanos(&h.latency, 1.0)
    )?;
    if h.errors.is_empty() {
        writeln!(out, "errors: none")?;
    } else {
        for (kind, n) in &h.errors {
            writeln!(out, "errors: {n} x {}", crate::clean::text(kind))?;
        }
        for (kind, e) in &h.examples {
            writeln!(out, "example of {}: {}", crate::clean::text(kind), crate::clean::text(e))?;
        }
    }
    if h.unsent > 0 {
        writeln!(
            out,
            "unsent: {} requests were due but never sent (a client waited on a late reply); their latency, from the intended send time to the end, is in the histogram",
            h.unsent
        )?;
    }
    if h.interrupted > 0 {
        writeln!(out, "interrupted: {} clients were still connecting at Ctrl-C (closed, not errors)", h.interrupted)?;
    }
    if h.churned > 0 {
        writeln!(out, "churn: {} clients hung up and were replaced ({} clients in all)", h.churned, h.clients_started)?;
    }
    let i = &h.integrity;
    writeln!(
        out,
        "integrity: {} lost, {} duplicated, {} reordered, {} corrupted",
        i.lost, i.duplicated, i.reordered, i.corrupted
    )?;
    if let (Some(before), Some(after)) = (r.rss_before, r.rss_all_open) {
        let per = after.saturating_sub(before) as f64 / r.clients as f64;
        writeln!(
            out,
            "server memory: {:.0} B per open connection (RSS {:.1} MiB -> {:.1} MiB with {} clients)",
            per,
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            r.clients
        )?;
    }
    let rss = r.server_rss;
    if rss.len() >= 2 {
        let min = rss.iter().min().copied().unwrap_or(0);
        let max = rss.iter().max().copied().unwrap_or(0);
        let at = |q: usize| rss[(rss.len() - 1) * q / 4] as f64 / 1048576.0;
        writeln!(
            out,
            "server RSS over the run: {:.1} / {:.1} / {:.1} / {:.1} / {:.1} MiB at 0/25/50/75/100 %, min {:.1}, max {:.1} ({} samples)",
            at(0),
            at(1),
            at(2),
            at(3),
            at(4),
            min as f64 / 1048576.0,
            max as f64 / 1048576.0,
            rss.len()
        )?;
    }
    match &r.fds {
        None => writeln!(out, "descriptors: not counted on this platform")?,
        Some(d) => writeln!(
            out,
            "descriptors: client {} -> {}{}",
            d.client_before.map_or("?".into(), |n| n.to_string()),
            d.client_after.map_or("?".into(), |n| n.to_string()),
            match (d.server_before, d.server_after) {
                (Some(b), Some(a)) => format!(", server {b} -> {a}"),
                _ => String::new(),
            }
        )?,
    }
    if r.leaked {
        writeln!(out, "descriptors: LEAK")?;
    }
    Ok(())
}

fn us(h: &Histogram<u64>, q: f64) -> J {
    if h.is_empty() {
        return J::Null;
    }
    let v = if q >= 1.0 { h.max() } else { h.value_at_quantile(q) };
    json!((v as f64 / 1000.0 * 10.0).round() / 10.0)
}

/// The `--json` object.
pub fn json(r: &Summary<'_>, passed: bool) -> J {
    let s = r.stats;
    let kinds = errors_by_kind(s);
    let errors: u64 = kinds.iter().map(|(_, n)| n).sum();
    let c = &s.connect;
    let connect_q =
        |q: f64| if c.is_empty() { J::Null } else { json!(if q >= 1.0 { c.max() } else { c.value_at_quantile(q) }) };
    let i = &s.integrity;
    json!({
        "passed": passed,
        "mode": if r.target_rate.is_some() { "open" } else { "closed" },
        "clients": r.clients,
        "threads": r.threads,
        "duration_s": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "target_rate": r.target_rate,
        "ramp_s": r.ramp.map(|d| d.as_secs_f64()),
        "rate": (achieved_rate(s) * 10.0).round() / 10.0,
        "sent": s.sent,
        "ok": s.ok,
        "errors": errors,
        "errors_by_kind": kinds.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "error_examples": s.examples.iter().map(|(k, e)| (k.clone(), json!(e))).collect::<serde_json::Map<_, _>>(),
        "latency_us": {
            "count": s.latency.len(),
            "p50": us(&s.latency, 0.5),
            "p90": us(&s.latency, 0.9),
            "p99": us(&s.latency, 0.99),
            "p999": us(&s.latency, 0.999),
            "max": us(&s.latency, 1.0),
            "mean": if s.latency.is_empty() { J::Null } else { json!((s.latency.mean() / 100.0).round() / 10.0) },
        },
        "connect_us": {
            "ok": s.opened,
            "failed": r.clients - s.opened.min(r.clients),
            "p50": connect_q(0.5),
            "p99": connect_q(0.99),
            "max": connect_q(1.0),
        },
        "churned": s.churned,
        "interrupted_connects": s.interrupted,
        "unsent": s.unsent,
        "clients_started": s.clients_started,
        "integrity": {"lost": i.lost, "duplicated": i.duplicated, "reordered": i.reordered, "corrupted": i.corrupted},
        "server": {
            "pid": r.server_pid,
            "rss_per_connection_bytes": match (r.rss_before, r.rss_all_open) {
                (Some(b), Some(a)) => json!((a.saturating_sub(b) as f64 / r.clients as f64).round()),
                _ => J::Null,
            },
        },
        "timeline": s.timeline.iter().enumerate().map(|(t, sec)| json!({
            "t": t,
            "sent": sec.sent,
            "ok": sec.ok,
            "errors": sec.errors,
            "p99_us": if sec.latency_us.is_empty() { J::Null } else { json!(sec.latency_us.value_at_quantile(0.99)) },
        })).collect::<Vec<_>>(),
    })
}

/// Writes each second's latency histogram (µs) to `path` as an HdrHistogram interval log (V2,
/// compressed), readable by HdrHistogram's tools in every language.
pub fn write_hdr_log(path: &Path, s: &Stats, started: SystemTime) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::Config(format!("--hdr-out {}: {e}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let mut serializer = V2DeflateSerializer::new();
    let fail = |e: String| Error::Config(format!("--hdr-out {}: {e}", path.display()));
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("mpconn stress: reply latency in microseconds, one interval per second")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| fail(e.to_string()))?;
        for (t, sec) in s.timeline.iter().enumerate() {
            w.write_histogram(&sec.latency_us, Duration::from_secs(t as u64), Duration::from_secs(1), None)
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    out.flush().map_err(|e| fail(e.to_string()))
}
