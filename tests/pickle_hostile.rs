//! Hostile pickles (issue 10): depth bombs, memo bombs, huge declared lengths, CPU bombs and
//! truncations. Each must be decoded or refused with an error, never abort, never take the
//! memory or the time of the machine. Two ways:
//!
//! * `each_bomb_decodes_or_is_refused_on_a_256_kib_stack`: `loads_value` on a thread with a
//!   256 KiB stack, then the value shown (`repr_limited`) and dropped on that thread, in a child
//!   process of its own per bomb (this test binary again, `hostile_child`), so that an abort is
//!   one bomb's failure rather than the end of the run. Bounds: 60 s and 512 MiB peak RSS a bomb
//!   (the child also has a 3 GiB address-space limit, so a bomb cannot take the machine).
//! * `mpconn_listen_survives_every_bomb`: each bomb sent by an authenticated client to a live
//!   `mpconn listen --echo` on a Unix socket in a temp dir, while a good client keeps doing
//!   pickle round trips: after every bomb the server is alive, prints the bomb's message line and
//!   echoes it, the good client carries on, and the server's peak RSS (VmHWM) stays under 512 MiB.
//!
//! Every loop is bounded in count and time; only processes started here are killed.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use mpconn::Client;
use mpconn::pickle::{Value, dumps, loads_value};

/// The peak RSS any bomb may cost, in the decoding process and in the server.
const RSS_BOUND: u64 = 512 << 20;
/// The longest one bomb may take, decode and show (debug build), and the longest the good client
/// may wait for one round trip while the server has a bomb (CPython refuses a 1,000,000-digit int
/// in microseconds; a server that spends this long on one message stalls every client).
const BOMB_TIME: Duration = Duration::from_secs(20);
const SMALL_STACK: usize = 256 << 10;
const KEY: &str = "pickle-hostile-test-key";

/// The value as the server would show it: bounded in length whatever the value.
fn shown(v: &Value) -> String {
    mpconn::pickle::repr_limited(v, 200)
}

struct Bomb {
    name: String,
    bytes: Vec<u8>,
}

fn le64(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

fn rep(unit: &[u8], n: usize) -> Vec<u8> {
    unit.repeat(n)
}

/// `pickle.dumps([1, 2**70, -5, 'abc', 'ééé', b'xy', {'k': (1.5, None, True)}, {3},
/// frozenset([4]), bytearray(b'z'), [[]], 'abc'], protocol)` by CPython 3.13, protocols 0, 2, 4, 5.
const WHOLE: [&str; 4] = [
    "286c70300a49310a614c313138303539313632303731373431313330333432344c0a61492d350a61566162630a70310a6156e9e9e90a70320a61635f636f646563730a656e636f64650a70330a285678790a70340a566c6174696e310a70350a7470360a5270370a61286470380a566b0a70390a2846312e350a4e4930310a747031300a7361635f5f6275696c74696e5f5f0a7365740a7031310a28286c7031320a49330a61747031330a527031340a61635f5f6275696c74696e5f5f0a66726f7a656e7365740a7031350a28286c7031360a49340a61747031370a527031380a61635f5f6275696c74696e5f5f0a6279746561727261790a7031390a2867330a28567a0a7032300a67350a747032310a527032320a747032330a527032340a61286c7032350a286c7032360a616167310a612e",
    "80025d7100284b018a090000000000000000404afbffffff580300000061626371015806000000c3a9c3a9c3a97102635f636f646563730a656e636f64650a710358020000007879710458060000006c6174696e3171058671065271077d710858010000006b7109473ff80000000000004e8887710a73635f5f6275696c74696e5f5f0a7365740a710b5d710c4b036185710d52710e635f5f6275696c74696e5f5f0a66726f7a656e7365740a710f5d71104b0461857111527112635f5f6275696c74696e5f5f0a6279746561727261790a7113680358010000007a711468058671155271168571175271185d71195d711a616801652e",
    "80049572000000000000005d94284b018a090000000000000000404afbffffff8c03616263948c06c3a9c3a9c3a99443027879947d948c016b94473ff80000000000004e888794738f94284b0390284b0491948c086275696c74696e73948c0962797465617272617994939443017a94859452945d945d94616801652e",
    "8005955c000000000000005d94284b018a090000000000000000404afbffffff8c03616263948c06c3a9c3a9c3a99443027879947d948c016b94473ff80000000000004e888794738f94284b0390284b0491949601000000000000007a945d945d94616801652e",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Every hostile pickle, by name.
fn bombs() -> Vec<Bomb> {
    let mut v = Vec::new();
    let mut add = |name: String, bytes: Vec<u8>| v.push(Bomb { name, bytes });
    for n in [10_000usize, 100_000, 1_000_000] {
        let k = if n >= 1_000_000 { "1M".to_string() } else { format!("{}k", n / 1000) };
        let p2 = |body: Vec<u8>| [b"\x80\x02".to_vec(), body, b".".to_vec()].concat();
        let p4 = |body: Vec<u8>| [b"\x80\x04".to_vec(), body, b".".to_vec()].concat();
        add(format!("depth {k}: lists ]*N a*(N-1)"), p2([rep(b"]", n), rep(b"a", n - 1)].concat()));
        add(format!("depth {k}: lists via MARK (*N l*N"), [rep(b"(", n), rep(b"l", n), b".".to_vec()].concat());
        add(format!("depth {k}: tuples via MARK (*N t*N"), p2([rep(b"(", n), rep(b"t", n)].concat()));
        add(format!("depth {k}: tuples ) TUPLE1*N"), p2([b")".to_vec(), rep(b"\x85", n)].concat()));
        add(format!("depth {k}: dicts (}}K0)*N }} s*N"), p2([rep(b"}K\x00", n), b"}".to_vec(), rep(b"s", n)].concat()));
        add(
            format!("depth {k}: dicts via MARK (K0*N }} d*N"),
            p2([rep(b"(K\x00", n), b"}".to_vec(), rep(b"d", n)].concat()),
        );
        add(format!("depth {k}: frozensets (*N FROZENSET*N"), p4([rep(b"(", n), rep(b"\x91", n)].concat()));
        add(
            format!("depth {k}: sets in sets (EMPTY_SET MARK)*N ADDITEMS*N"),
            p4([rep(b"\x8f(", n), b"\x8f".to_vec(), rep(b"\x90", n)].concat()),
        );
        add(format!("depth {k}: MARK only"), p2(rep(b"(", n)));
        add(format!("depth {k}: lists with a memo put at each level"), {
            let mut b = b"\x80\x02".to_vec();
            for i in 0..n {
                b.push(b']');
                b.push(b'r');
                b.extend_from_slice(&(i as u32).to_le_bytes());
            }
            b.extend(rep(b"a", n - 1));
            b.push(b'.');
            b
        });
    }
    // Memo bombs.
    for (label, fill, gets) in [("185 KB", 45_000usize, 45_000usize), ("1 MB", 250_000, 250_000)] {
        // x = []; memoised while empty; filled; then referenced `gets` times: [x, x, ...].
        let b = [
            b"\x80\x02]q\x00(".to_vec(),
            rep(b"K\x01", fill),
            b"e0]q\x01(".to_vec(),
            rep(b"h\x00", gets),
            b"e.".to_vec(),
        ]
        .concat();
        add(format!("memo: memoise-then-fill, {fill} items, {gets} GETs ({label})"), b);
    }
    add("memo: 40 lists each [prev, prev] memoised before filled (2^40 leaves)".into(), {
        let mut b = b"\x80\x02]q\x00(".to_vec();
        b.extend(rep(b"K\x01", 1000));
        b.extend_from_slice(b"e0");
        for i in 1..=40u8 {
            b.extend_from_slice(&[b']', b'q', i, b'(', b'h', i - 1, b'h', i - 1, b'e', b'0']);
        }
        b.extend_from_slice(&[b'h', 40, b'.']);
        b
    });
    add(
        "memo: DUP fan-out, t = (t, t) 40 times".into(),
        [b"\x80\x02X\x01\x00\x00\x00a".to_vec(), rep(b"2\x86", 40), b".".to_vec()].concat(),
    );
    add("memo: DUP of a list filled afterwards, 40 doublings".into(), {
        // l = [1]*1000; then 40 times: l = [l, l] built as ] DUP ( l l ) through the memo.
        let mut b = b"\x80\x02(".to_vec();
        b.extend(rep(b"K\x01", 1000));
        b.extend_from_slice(b"lq\x00");
        for i in 1..=40u8 {
            b.extend_from_slice(&[b']', b'2', b'(', b'h', i - 1, b'h', i - 1, b'e', b'q', i, b'0']);
        }
        b.extend_from_slice(&[b'h', 40, b'.']);
        b
    });
    add("memo: GET fan-out of a 64 KiB str, 400k GETs".into(), {
        let mut b = b"\x80\x02X".to_vec();
        b.extend_from_slice(&(65536u32).to_le_bytes());
        b.extend(rep(b"x", 65536));
        b.extend_from_slice(b"q\x00]q\x01(");
        b.extend(rep(b"h\x00", 400_000));
        b.extend_from_slice(b"e.");
        b
    });
    add("memo: GET fan-out of a filled 10k list, 100k GETs in a tuple".into(), {
        let mut b = b"\x80\x02(".to_vec();
        b.extend(rep(b"K\x07", 10_000));
        b.extend_from_slice(b"lq\x00(");
        b.extend(rep(b"h\x00", 100_000));
        b.extend_from_slice(b"t.");
        b
    });
    add(
        "memo: LONG_BINPUT at index 2^31-1".into(),
        b"\x80\x02Nr\xff\xff\xff\x7f0r\xfe\xff\xff\x7fj\xff\xff\xff\x7f.".to_vec(),
    );
    add("memo: LONG_BINPUT at index 2^32-1".into(), b"\x80\x02Nr\xff\xff\xff\xff.".to_vec());
    add("memo: LONG_BINGET of an index never put".into(), b"\x80\x02j\xff\xff\xff\x7f.".to_vec());
    // Declared lengths beyond the input.
    add(
        "length: BINUNICODE8 of 2^62 bytes".into(),
        [b"\x80\x04\x8d".to_vec(), le64(1 << 62).to_vec(), b"abc.".to_vec()].concat(),
    );
    add(
        "length: BINUNICODE8 of 2^64-1 bytes".into(),
        [b"\x80\x04\x8d".to_vec(), le64(u64::MAX).to_vec(), b"abc.".to_vec()].concat(),
    );
    add(
        "length: BINBYTES8 of 2^62 bytes".into(),
        [b"\x80\x04\x8e".to_vec(), le64(1 << 62).to_vec(), b"abc.".to_vec()].concat(),
    );
    add(
        "length: BYTEARRAY8 of 2^62 bytes".into(),
        [b"\x80\x05\x96".to_vec(), le64(1 << 62).to_vec(), b"abc.".to_vec()].concat(),
    );
    add(
        "length: FRAME of 2^62 bytes".into(),
        [b"\x80\x04\x95".to_vec(), le64(1 << 62).to_vec(), b"N.".to_vec()].concat(),
    );
    add("length: BINUNICODE of 2^31-1 bytes".into(), b"\x80\x03X\xff\xff\xff\x7fabc.".to_vec());
    add("length: BINBYTES of 2^32-1 bytes".into(), b"\x80\x03B\xff\xff\xff\xffabc.".to_vec());
    add("length: BINSTRING of -1 bytes".into(), b"\x80\x02T\xff\xff\xff\xffabc.".to_vec());
    add("length: LONG4 of 2^31-1 bytes".into(), b"\x80\x02\x8b\xff\xff\xff\x7fabc.".to_vec());
    add("length: LONG4 of -1 bytes".into(), b"\x80\x02\x8b\xff\xff\xff\xffabc.".to_vec());
    // CPU: numbers whose conversion is quadratic if done naively.
    add(
        "cpu: LONG text of 1,000,000 decimal digits".into(),
        [b"\x80\x02L".to_vec(), rep(b"9", 1_000_000), b"L\n.".to_vec()].concat(),
    );
    add(
        "cpu: INT text of 1,000,000 decimal digits".into(),
        [b"I".to_vec(), rep(b"7", 1_000_000), b"\n.".to_vec()].concat(),
    );
    add("cpu: LONG4 of 1 MiB (an 8-Mbit int), shown".into(), {
        let mut b = b"\x80\x02\x8b".to_vec();
        b.extend_from_slice(&(1u32 << 20).to_le_bytes());
        b.extend(rep(b"\x5a", 1 << 20));
        b.push(b'.');
        b
    });
    // Truncations of real pickles: every prefix.
    for (i, h) in WHOLE.iter().enumerate() {
        let whole = unhex(h);
        for cut in 0..whole.len() {
            add(format!("truncated: CPython pickle #{i} cut at {cut} of {}", whole.len()), whole[..cut].to_vec());
        }
    }
    v
}

/// What happened to one bomb on a 256 KiB stack, as the child prints it.
fn decode_on_small_stack(bytes: Vec<u8>) -> String {
    thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || match loads_value(&bytes) {
            Ok(v) => {
                let s = shown(&v);
                drop(v);
                format!("decoded: {s}")
            }
            Err(e) => format!("refused: {e}"),
        })
        .unwrap()
        .join()
        .map_err(|_| "PANIC".to_string())
        .unwrap_or_else(|e| e)
}

/// The child side of `each_bomb_decodes_or_is_refused_on_a_256_kib_stack`: decodes the bomb
/// named in MPCONN_HOSTILE_BOMB and prints the outcome. Run only by that test.
#[test]
#[ignore = "run by each_bomb_decodes_or_is_refused_on_a_256_kib_stack, one bomb per process"]
fn hostile_child() {
    let Ok(name) = std::env::var("MPCONN_HOSTILE_BOMB") else { return };
    // One bomb by its name, or all those whose name starts with it (the truncations of a pickle).
    let chosen: Vec<Bomb> =
        bombs().into_iter().filter(|b| b.name == name || b.name.starts_with(&format!("{name} "))).collect();
    assert!(!chosen.is_empty(), "no bomb named {name}");
    for bomb in chosen {
        let outcome = decode_on_small_stack(bomb.bytes);
        println!("\nOUTCOME {}: {}", bomb.name, outcome.replace('\n', " "));
    }
}

/// Runs `cmd` with an address-space limit; returns (exit status text, stdout, peak RSS in bytes,
/// how long), killing it past `limit`.
#[allow(clippy::zombie_processes, reason = "reaped by wait4 below, which also reports its peak RSS")]
fn run_bounded(mut cmd: Command, limit: Duration) -> (String, String, u64, Duration) {
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 3 << 30, rlim_max: 3 << 30 };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if start.elapsed() > limit && !killed {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let how = if killed {
        format!("killed after {limit:?}")
    } else if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else {
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_string();
        format!("signal {} ({last})", libc::WTERMSIG(status))
    };
    (how, stdout, usage.ru_maxrss as u64 * 1024, took)
}

#[test]
fn each_bomb_decodes_or_is_refused_on_a_256_kib_stack() {
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    let all = bombs();
    // One child per bomb; the truncations of each pickle in one child.
    let mut groups: Vec<(String, Vec<&Bomb>)> = Vec::new();
    for b in &all {
        let key = match b.name.split_once(" cut at ") {
            Some((pickle, _)) => pickle.to_string(),
            None => b.name.clone(),
        };
        match groups.last_mut() {
            Some((k, members)) if *k == key => members.push(b),
            _ => groups.push((key, vec![b])),
        }
    }
    for (key, members) in &groups {
        let mut cmd = Command::new(&exe);
        cmd.args(["hostile_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("MPCONN_HOSTILE_BOMB", key);
        let (how, out, rss, took) = run_bounded(cmd, BOMB_TIME);
        for b in members {
            let tag = format!("OUTCOME {}: ", b.name);
            let outcome = out.lines().find_map(|l| l.split_once(&tag).map(|x| x.1.to_string()));
            let line = format!(
                "{} ({} bytes): {how}, {took:.1?}, peak RSS {} MiB: {}",
                b.name,
                b.bytes.len(),
                rss >> 20,
                outcome.as_deref().unwrap_or("(no outcome)").chars().take(160).collect::<String>()
            );
            let ok = how == "exit 0" && outcome.as_deref().is_some_and(|o| !o.starts_with("PANIC")) && rss < RSS_BOUND;
            let truncated_decoded =
                b.name.starts_with("truncated") && outcome.as_deref().is_some_and(|o| o.starts_with("decoded"));
            if !ok || truncated_decoded {
                failures.push(line.clone());
            }
            if !b.name.starts_with("truncated") || !ok {
                outcomes.push(line);
            }
        }
    }
    eprintln!("{}", outcomes.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} hostile pickles aborted, panicked, took over {BOMB_TIME:?} or {} MiB, or (truncated) decoded:\n{}",
        failures.len(),
        all.len(),
        RSS_BOUND >> 20,
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------------
// Against a live `mpconn listen`.

struct Server {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &std::path::Path, n: usize) -> Server {
        let sock = dir.join(format!("listen-{n}.sock"));
        let mut cmd = Command::new(common::cli_binary::mpconn());
        cmd.args(["listen", "--echo", "--authkey-env", "PICKLE_HOSTILE_KEY"])
            .arg(&sock)
            .env("PICKLE_HOSTILE_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: 3 << 30, rlim_max: 3 << 30 };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                if tx.send(String::from_utf8_lossy(&l).into_owned()).is_err() {
                    return;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30)).expect("mpconn listen printed its address");
        let address = first.strip_prefix("listening on ").expect("the address line").to_string();
        Server { child, address, lines }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// VmHWM and VmRSS, in bytes.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// Consumes lines up to the next "open" (the good client's, before any bomb is sent).
    fn skip_open(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("open ") => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("mpconn listen did not print the good client's open line");
    }

    /// Waits for the line of the bomb's message: the next connection opened is the bomb's (the
    /// good client's is older), then its "message N (len bytes): ..." line.
    fn message_line(&self, len: usize, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let want = format!("({len} bytes)");
        let mut conn: Option<String> = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let l = self.lines.recv_timeout(left).ok()?;
            match &conn {
                None => {
                    if let Some(rest) = l.strip_prefix("open ") {
                        conn = rest.split_whitespace().next().map(String::from);
                    }
                }
                Some(c) => {
                    if l.starts_with(&format!("message {c} ")) && l.contains(&want) {
                        return Some(l);
                    }
                }
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client doing pickle round trips through the echo until stopped.
struct Good {
    /// The longest round trip so far, in ms; reset by `take_worst`.
    worst_ms: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    trips: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Good {
    fn start(address: &str) -> Good {
        let stop = Arc::new(AtomicBool::new(false));
        let trips = Arc::new(AtomicUsize::new(0));
        let failure = Arc::new(Mutex::new(None));
        let mut conn = Client::new(address).authkey(KEY).connect().expect("the good client connects");
        conn.set_read_timeout(Some(BOMB_TIME)).unwrap();
        let worst_ms = Arc::new(AtomicUsize::new(0));
        let (s, t, f, w) = (stop.clone(), trips.clone(), failure.clone(), worst_ms.clone());
        let thread = thread::spawn(move || {
            let mut i = 0i64;
            while !s.load(Ordering::Relaxed) {
                let sent = dumps(&(format!("good {i}"), ()), 2).unwrap();
                let t0 = Instant::now();
                let r = conn.send_bytes(&sent).and_then(|()| conn.recv_bytes());
                w.fetch_max(t0.elapsed().as_millis() as usize, Ordering::Relaxed);
                match r {
                    Ok(back) if back == sent => {
                        t.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        *f.lock().unwrap() = Some(format!("round trip {i}: {other:?}"));
                        return;
                    }
                }
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
        });
        Good { worst_ms, stop, trips, failure, thread: Some(thread) }
    }

    /// Whether the good client makes `n` more round trips within `within`.
    fn progresses(&self, n: usize, within: Duration) -> bool {
        let start = self.trips.load(Ordering::Relaxed);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.trips.load(Ordering::Relaxed) >= start + n {
                return true;
            }
            if self.failure.lock().unwrap().is_some() {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Good {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn mpconn_listen_survives_every_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let mut restarts = 0;
    let mut server = Server::start(dir.path(), restarts);
    let mut good = Good::start(&server.address);
    server.skip_open();
    assert!(good.progresses(3, Duration::from_secs(30)), "the good client works before any bomb");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    // The truncations are many and small: a sample of them is enough here.
    let all: Vec<Bomb> =
        bombs().into_iter().filter(|b| !b.name.starts_with("truncated") || b.name.contains(" cut at 7")).collect();
    for b in &all {
        let start = Instant::now();
        good.worst_ms.store(0, Ordering::Relaxed);
        let mut problems = Vec::new();
        match Client::new(server.address.as_str()).authkey(KEY).connect() {
            Ok(mut conn) => {
                conn.set_read_timeout(Some(BOMB_TIME)).unwrap();
                match conn.send_bytes(&b.bytes).and_then(|()| conn.recv_bytes()) {
                    Ok(back) if back == b.bytes => {}
                    Ok(_) => problems.push("the echo differs".to_string()),
                    Err(e) => problems.push(format!("no echo: {e}")),
                }
            }
            Err(e) => problems.push(format!("cannot connect: {e}")),
        }
        let line = server.message_line(b.bytes.len(), Duration::from_secs(10));
        if line.is_none() {
            problems.push("no message line".into());
        }
        // A server that closed the bomb's connection may be dying: give it a moment to show.
        let mut alive = server.alive();
        let dying = Instant::now();
        while alive && !problems.is_empty() && dying.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(20));
            alive = server.alive();
        }
        if !alive {
            problems.push(format!("the server died: {:?}", server.child.try_wait()));
        } else if !good.progresses(3, Duration::from_secs(10)) {
            problems.push(format!("the good client stalled: {:?}", good.failure.lock().unwrap()));
        }
        let worst = Duration::from_millis(good.worst_ms.load(Ordering::Relaxed) as u64);
        if worst > BOMB_TIME / 2 {
            problems.push(format!("the good client waited {worst:.1?} for one round trip"));
        }
        let (hwm, rss) = server.memory();
        if alive && hwm >= RSS_BOUND {
            problems.push(format!("peak RSS {} MiB", hwm >> 20));
        }
        let shown = line
            .as_deref()
            .map(|l| l.split_once("): ").map_or(l, |x| x.1))
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        let summary = format!(
            "{} ({} bytes): {:.1?}, good client's worst round trip {worst:.1?}, VmHWM {} MiB, VmRSS {} MiB, shown as {shown}",
            b.name,
            b.bytes.len(),
            start.elapsed(),
            hwm >> 20,
            rss >> 20
        );
        report.push(summary.clone());
        if !problems.is_empty() {
            failures.push(format!("{summary}: {}", problems.join("; ")));
            // Carry on with a fresh server, so one failure does not hide the others.
            drop(good);
            restarts += 1;
            server = Server::start(dir.path(), restarts);
            good = Good::start(&server.address);
            server.skip_open();
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} bombs hurt `mpconn listen` (server restarted after each):\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
