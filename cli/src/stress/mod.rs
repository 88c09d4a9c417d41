//! `mpconn stress`: many concurrent authenticated clients on one or more reactor threads,
//! against an external server or, by default, an embedded one (this program, `listen --echo`,
//! in a child process whose memory is measured).
//!
//! With no request options each message carries a sequence number, a timestamp and a checksum
//! and every echo is verified; with `--request` the clients send Python values to a real
//! service and `--expect` judges its replies. Closed loop (each client sends when its reply
//! arrives) or open loop (`--rate`: a schedule, latency from the intended send time).
//!
//! The modules: [`plan`] (options into requests and checks), [`schedule`] (the open-loop
//! schedule and the seeded generator), [`driver`] (one reactor thread's clients), [`check`]
//! (judging replies), [`stats`] (counts and their merge across threads), [`report`] (human
//! lines, JSON, the HdrHistogram log), [`server`] (the embedded server, memory, descriptors).

mod check;
mod driver;
mod plan;
mod report;
mod schedule;
mod server;
mod stats;

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use mpconn::reactor::options::ConnectionOptions;
use mpconn::{Address, AuthKey, Error, Result};

pub use plan::StressArgs;
pub use server::{raise_fd_limit, rss_of};

use check::MIN_SIZE;
use driver::{Config, Progress, Shared};
use plan::{Payload, Plan};
use schedule::Schedule;
use server::{EmbeddedServer, count_fds};
use stats::Stats;

fn validate(args: &StressArgs) -> Result<()> {
    if args.size < MIN_SIZE {
        return Err(Error::Config(format!("--size must be at least {MIN_SIZE} bytes")));
    }
    if args.clients == 0 {
        return Err(Error::Config("--clients must be at least 1".into()));
    }
    if args.threads == 0 || args.threads > args.clients {
        return Err(Error::Config(format!("--threads must be from 1 to --clients ({})", args.clients)));
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(Error::Config(format!("--rate {r}: a number of requests per second above 0")));
    }
    if args.ramp.is_some() && args.rate.is_none() {
        return Err(Error::Config("--ramp needs --rate (a closed loop has no schedule to ramp)".into()));
    }
    if args.timeout.is_zero() {
        return Err(Error::Config("--timeout must be above 0".into()));
    }
    if !(0.0..=1.0).contains(&args.churn) {
        return Err(Error::Config(format!("--churn {}: a probability from 0 to 1", args.churn)));
    }
    Ok(())
}

/// The longest a client may wait between two scheduled requests (`--clients / --rate`
/// seconds): beyond it the schedule's due times (nanoseconds in a u64) would overflow.
const MAX_INTERVAL_SECS: f64 = 1e6;

/// Checks the options that need no connection, before anything runs: a malformed value is a
/// usage error (exit 2), not a runtime error. `--request-bytes @FILE` is read later (a missing
/// file is a runtime error). `--hdr-out` is created here, so an unwritable path is found before
/// the run and not after it (when the results would be lost).
pub fn usage(args: &StressArgs) -> std::result::Result<(), String> {
    let msg = |e: Error| match e {
        Error::Config(m) => m,
        e => e.to_string(),
    };
    validate(args).map_err(msg)?;
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err("--duration must be above 0 (a run of 0 s sends nothing)".into());
    }
    if let Some(r) = args.rate
        && args.clients as f64 / r > MAX_INTERVAL_SECS
    {
        return Err(format!(
            "--rate {r}: {} s between two requests of a client (--clients / --rate); at most {MAX_INTERVAL_SECS} s",
            args.clients as f64 / r
        ));
    }
    for r in &args.requests {
        plan::Template::parse(r).map_err(|e| format!("--request: {}", msg(e)))?;
    }
    if let Some(b) = &args.request_bytes
        && !b.starts_with('@')
    {
        plan::parse_bytes(b).map_err(msg)?;
    }
    if let Some(e) = args.expect.as_deref()
        && !matches!(e, "any" | "echo")
    {
        plan::Template::parse(e).map_err(|e| format!("--expect: {}", msg(e)))?;
    }
    if let Some(path) = &args.hdr_out {
        std::fs::File::create(path).map_err(|e| format!("--hdr-out {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs the stress test; returns whether it passed (no error, nothing lost or corrupted, no
/// descriptor leaked).
pub fn run(args: StressArgs) -> Result<bool> {
    validate(&args)?;
    let plan = Plan::new(&args)?;
    // Human lines go to stdout, or to stderr when stdout carries the JSON object.
    let mut human: Box<dyn Write> = if args.json { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    if let Some((old, new)) = raise_fd_limit() {
        eprintln!("stress: raised the descriptor limit from {old} to {new}");
    }
    let messages = args.messages.unwrap_or(if args.duration.is_some() { u64::MAX } else { 1000 });
    let (server, address, key) = match &args.address {
        Some(a) => (None, a.parse::<Address>()?, args.keys.key()?),
        None => {
            let key = match args.keys.key()? {
                Some(k) => k,
                // A random key in printable form, so it can travel in the environment.
                None => AuthKey::from(AuthKey::generate()?.to_hex().as_str()),
            };
            let s = EmbeddedServer::start(&key)?;
            let a = s.address.clone();
            (Some(s), a, Some(key))
        }
    };
    let server_pid = server.as_ref().map(|s| s.child.id());
    let rss_before = server_pid.and_then(rss_of);
    let mut options = ConnectionOptions::new().max_message_size(args.keys.max_message_size());
    if let Some(k) = &key {
        options = options.authkey(k.clone());
    }
    let what = match &plan.payload {
        Payload::Filler => format!("messages of {} B", args.size),
        Payload::Bytes(b) => format!("requests of {} B", b.len()),
        Payload::Values(v) if v.len() == 1 => "requests".to_string(),
        Payload::Values(v) => format!("requests ({} values, round robin)", v.len()),
    };
    writeln!(
        human,
        "stress: {} clients x {} {} against {}{}{}",
        args.clients,
        if messages == u64::MAX { "unlimited".to_string() } else { messages.to_string() },
        what,
        address,
        server_pid.map(|p| format!(" (embedded server, pid {p})")).unwrap_or_default(),
        if args.threads > 1 { format!(" on {} threads", args.threads) } else { String::new() }
    )?;

    let schedule = args.rate.map(|rate| Schedule {
        rate,
        ramp: args.ramp.map_or(0.0, |d| d.as_secs_f64()),
        clients: args.clients as f64,
    });
    let cfg = Arc::new(Config {
        address,
        options,
        messages,
        size: args.size,
        duration: args.duration,
        churn: args.churn,
        timeout: args.timeout,
        schedule,
        plan,
    });
    let started_at = SystemTime::now();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        clients: args.clients,
        settled: Default::default(),
        schedule_start: OnceLock::new(),
        abort: Default::default(),
        progress: (0..args.threads).map(|_| Progress::default()).collect(),
    });
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ std::process::id() as u64
    });
    let fds_before = count_fds(std::process::id());
    let server_fds_before = server_pid.and_then(count_fds);
    let mut workers = Vec::new();
    for t in 0..args.threads {
        // Thread t drives clients t, t + threads, t + 2 threads, ...
        let slots: Vec<u64> = (t as u64..args.clients as u64).step_by(args.threads).collect();
        let (cfg, shared) = (cfg.clone(), shared.clone());
        let thread_seed = seed.wrapping_add((t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let worker = std::thread::Builder::new()
            .name(format!("stress-{t}"))
            .spawn(move || {
                let r = driver::run_thread(cfg, shared.clone(), t, slots, thread_seed);
                if r.is_err() {
                    shared.abort.store(true, Ordering::SeqCst);
                }
                r
            })
            .map_err(Error::Io)?;
        workers.push(worker);
    }

    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(args.clients as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} clients done {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut server_rss: Vec<u64> = Vec::new();
    let mut all_open_rss: Option<u64> = None;
    let mut last_report = Instant::now();
    let sum = |f: &dyn Fn(&Progress) -> u64| shared.progress.iter().map(f).sum::<u64>();
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let opened = sum(&|p| p.opened.load(Ordering::Relaxed) as u64);
        let failed = sum(&|p| p.connect_failed.load(Ordering::Relaxed) as u64);
        if all_open_rss.is_none() && (opened + failed) as usize >= args.clients {
            all_open_rss = server_pid.and_then(rss_of);
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Some(r) = server_pid.and_then(rss_of) {
                server_rss.push(r);
            }
            let finished = sum(&|p| p.finished.load(Ordering::Relaxed) as u64);
            let ok = sum(&|p| p.ok.load(Ordering::Relaxed));
            let errors = sum(&|p| p.errors.load(Ordering::Relaxed));
            match &progress {
                Some(bar) => {
                    bar.set_position(finished);
                    bar.set_message(format!("{opened} open, {ok} round trips, {errors} errors"));
                }
                None => eprintln!(
                    "progress: {:.0} s, {} connections opened (of {} at a time), {} done, {} round trips, {} errors",
                    start.elapsed().as_secs_f64(),
                    opened,
                    args.clients,
                    finished,
                    ok,
                    errors
                ),
            }
        }
    }
    let mut stats = Stats::new()?;
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(s)) => stats.merge(s),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(Error::Config("a stress thread panicked".into())),
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Descriptors after every client closed: the server's should be back where they started.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut server_fds_after = server_pid.and_then(count_fds);
    while server_fds_after > server_fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        server_fds_after = server_pid.and_then(count_fds);
    }
    let fds_after = count_fds(std::process::id());
    let leaked = fds_after > fds_before || server_fds_after > server_fds_before;
    let errors = stats.error_count() + stats.integrity.total();
    let passed = errors == 0 && !leaked;
    let summary = report::Summary {
        stats: &stats,
        elapsed,
        clients: args.clients,
        threads: args.threads,
        target_rate: args.rate,
        ramp: args.ramp,
        server_pid,
        rss_before,
        rss_all_open: all_open_rss,
        server_rss: &server_rss,
        fds: (fds_before.is_some() || server_fds_before.is_some()).then_some(report::Descriptors {
            client_before: fds_before,
            client_after: fds_after,
            server_before: server_fds_before,
            server_after: server_fds_after,
        }),
        leaked,
    };
    report::write_human(&mut human, &summary)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", report::json(&summary, passed))?;
        out.flush()?;
    }
    human.flush()?;
    drop(server);
    // The histogram log last: a failure to write it (the disk full since `usage` created the
    // file) must not cost the report, which is out by now.
    if let Some(path) = &args.hdr_out {
        report::write_hdr_log(path, &stats, started_at)?;
    }
    Ok(passed)
}
