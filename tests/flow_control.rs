//! Flow control: a peer that writes faster than it reads is throttled (by TCP, once the server stops
//! reading it), never dropped, and loses nothing; a handler can pause and resume reading.
//!
//! Slow readers: each client writes many large messages as fast as it can on one thread, and
//! on another first reads nothing for seconds, or reads slowly, then checks every echo (size,
//! order, content). Against `examples/echo_server` (which closes a connection whose `send` is
//! refused), and an in-process echo with the same handler and a small high-water mark. Every wait is bounded.
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::servers::{Child2, echo_server_example, framed, message, split_tcp};
use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor};

const KEY: &str = "flow key";
/// How long a reader waits for one echo before the client is declared stuck (lost echoes).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one whole client may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Reading {
    /// Reads nothing for this long, then reads as fast as it can.
    PauseThenFast(Duration),
    /// Sleeps this long after every echo it reads.
    Slow(Duration),
}

/// One client's run: writes `count` messages of `size` bytes while reading their echoes the
/// given way. `Ok` only if every echo came back intact and in order.
fn slow_client<S: Read + Write + Send + 'static>(
    (mut reader, mut writer): (S, S),
    seed: u8,
    count: u32,
    size: usize,
    reading: Reading,
) -> Result<String, String> {
    let start = Instant::now();
    let w = thread::spawn(move || -> Result<(), String> {
        for i in 0..count {
            writer.write_all(&framed(seed, i, size)).map_err(|e| format!("write of message {i} failed: {e}"))?;
        }
        Ok(())
    });
    let mut got = 0u32;
    let mut head = [0u8; 4];
    let mut body = vec![0u8; size];
    if let Reading::PauseThenFast(d) = reading {
        thread::sleep(d);
    }
    let outcome = loop {
        if got == count {
            break Ok(());
        }
        if let Err(e) = reader.read_exact(&mut head) {
            break Err(format!("{got} of {count} echoes, then {} ({e})", kind(&e)));
        }
        let len = u32::from_be_bytes(head) as usize;
        if len != size {
            break Err(format!("echo {got} has length {len}, expected {size}"));
        }
        if let Err(e) = reader.read_exact(&mut body) {
            break Err(format!("{got} of {count} echoes, then {} inside a message ({e})", kind(&e)));
        }
        if body != message(seed, got, size) {
            let index = u32::from_be_bytes(body[..4].try_into().unwrap());
            break Err(format!("echo {got} is wrong: it carries message {index} (lost or reordered echoes)"));
        }
        got += 1;
        if let Reading::Slow(d) = reading {
            thread::sleep(d);
        }
    };
    let written = w.join().unwrap();
    outcome?;
    written?;
    Ok(format!("{count} echoes of {size} bytes, intact, in {:.1} s", start.elapsed().as_secs_f64()))
}

fn kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the server closed the connection",
        std::io::ErrorKind::ConnectionReset => "the server reset the connection",
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "no echo for the read timeout (echoes lost)",
        _ => "an error",
    }
}

/// Runs the clients on threads; fails unless every one finished intact within the limit.
fn run_clients(label: &str, clients: Vec<Box<dyn FnOnce() -> Result<String, String> + Send>>) {
    let (tx, rx) = mpsc::channel();
    let n = clients.len();
    for (i, c) in clients.into_iter().enumerate() {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((i, c()));
        });
    }
    let deadline = Instant::now() + CLIENT_LIMIT;
    let mut failures = Vec::new();
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, Ok(report))) => println!("{label}: client {i}: {report}"),
            Ok((i, Err(e))) => {
                println!("{label}: client {i}: FAILED: {e}");
                failures.push(format!("client {i}: {e}"));
            }
            Err(_) => {
                failures.push(format!("a client had not finished after {CLIENT_LIMIT:?}"));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{label}: slow readers were dropped or lost echoes: {failures:#?}");
}

fn tcp_clients(
    address: &str,
    key: Option<&'static str>,
    count: u32,
    size: usize,
) -> Vec<Box<dyn FnOnce() -> Result<String, String> + Send>> {
    let readings = [
        Reading::PauseThenFast(Duration::from_secs(4)),
        Reading::PauseThenFast(Duration::from_secs(8)),
        Reading::Slow(Duration::from_millis(8)),
    ];
    readings
        .into_iter()
        .enumerate()
        .map(|(i, reading)| {
            let address = address.to_string();
            Box::new(move || {
                let (r, w) = split_tcp(&address, key);
                r.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                w.set_write_timeout(Some(CLIENT_LIMIT)).unwrap();
                slow_client((r, w), i as u8, count, size, reading)
            }) as Box<dyn FnOnce() -> Result<String, String> + Send>
        })
        .collect()
}

/// 48 MiB per client: more than the default 16 MiB high-water mark plus what the kernel's
/// socket buffers hold on loopback (a few MiB each way).
const COUNT: u32 = 768;
const SIZE: usize = 64 * 1024;

#[test]
fn echo_server_example_never_drops_a_slow_reader() {
    let exe = echo_server_example();
    let mut cmd = Command::new(exe);
    cmd.args(["127.0.0.1:0", "--authkey", KEY]);
    let server = Child2::spawn(cmd, "examples/echo_server");
    let address = server.expect_line("listening on");
    run_clients("examples/echo_server", tcp_clients(&address, Some(KEY), COUNT, SIZE));
}

/// `examples/echo_server`'s handler: echo, or close the connection when the echo is refused.
struct StrictEcho {
    refused: mpsc::Sender<String>,
}

impl Handler for StrictEcho {
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if let Err(e) = ctx.send(conn, message) {
            let _ = self.refused.send(format!("{conn}: {e}"));
            ctx.close(conn);
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        if !reason.is_clean() {
            let _ = self.refused.send(format!("{conn} closed: {reason}"));
        }
    }
}

#[test]
fn a_small_high_water_mark_still_throttles_instead_of_refusing() {
    // 256 KiB high-water mark: one read of the shared buffer (1 MiB) carries more than that,
    // so the reactor must stop delivering, not refuse the echo.
    let (refused_tx, refused) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(StrictEcho { refused: refused_tx }).unwrap();
        let opts = ConnectionOptions::new().authkey(KEY).high_water_mark(256 * 1024);
        let l = reactor.listen("127.0.0.1:0", ListenOptions::new().connection(opts)).unwrap();
        let address = reactor.listener_address(l).unwrap().to_string();
        ready_tx.send((address, reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (address, handle) = ready.recv_timeout(common::servers::WAIT).unwrap();
    run_clients("in-process echo, 256 KiB high-water mark", tcp_clients(&address, Some(KEY), 256, SIZE));
    handle.stop().unwrap();
    t.join().unwrap();
    let refusals: Vec<String> = refused.try_iter().collect();
    assert!(refusals.is_empty(), "echoes refused or connections closed: {refusals:#?}");
}

/// Pausing and resuming from the handler and from another thread (the API of issue 11).
mod pause {
    use super::*;
    use mpconn::Client;

    enum Ev {
        Open(ConnId),
        Msg(Vec<u8>),
        Paused(bool),
        Close(String),
    }

    /// Records messages; pauses reading (from inside `on_message`) after `pause_after` of them.
    struct Pauser {
        tx: mpsc::Sender<Ev>,
        pause_after: Option<usize>,
        seen: usize,
    }

    impl Handler for Pauser {
        fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mpconn::Address) {
            let _ = self.tx.send(Ev::Open(conn));
        }
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            self.seen += 1;
            let _ = self.tx.send(Ev::Msg(message.to_vec()));
            if Some(self.seen) == self.pause_after {
                let r = ctx.pause_reading(conn);
                let _ = self.tx.send(Ev::Paused(r));
            }
        }
        fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, reason: CloseReason) {
            let _ = self.tx.send(Ev::Close(format!("{reason:?}")));
        }
    }

    fn spawn(
        pause_after: Option<usize>,
    ) -> (String, mpconn::reactor::Handle, mpsc::Receiver<Ev>, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let t = thread::spawn(move || {
            let mut reactor = Reactor::new(Pauser { tx, pause_after, seen: 0 }).unwrap();
            let l = reactor.listen("127.0.0.1:0", ListenOptions::new().authkey(KEY)).unwrap();
            ready_tx.send((reactor.listener_address(l).unwrap().to_string(), reactor.handle())).unwrap();
            reactor.run().unwrap();
        });
        let (a, h) = ready.recv_timeout(common::servers::WAIT).unwrap();
        (a, h, rx, t)
    }

    fn msgs(rx: &mpsc::Receiver<Ev>, within: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(ev) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            match ev {
                Ev::Msg(m) => out.push(m),
                Ev::Close(r) => panic!("closed while paused: {r}"),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn pausing_inside_on_message_stops_the_rest_of_the_batch_until_resumed() {
        const N: u32 = 100;
        let (address, handle, rx, t) = spawn(Some(10));
        let mut client = Client::new(address.as_str()).authkey(KEY).connect().unwrap();
        let conn = match rx.recv_timeout(common::servers::WAIT).unwrap() {
            Ev::Open(c) => c,
            _ => panic!("expected open"),
        };
        // All 100 in one write: they arrive in one read, and the reactor would deliver the batch.
        let mut all = Vec::new();
        for i in 0..N {
            all.extend_from_slice(&framed(1, i, 16));
        }
        client.send_frames(&all).unwrap();
        let mut got = Vec::new();
        let mut paused = None;
        let end = Instant::now() + Duration::from_secs(2);
        while let Ok(ev) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            match ev {
                Ev::Msg(m) => got.push(m),
                Ev::Paused(r) => paused = Some(r),
                Ev::Close(r) => panic!("closed: {r}"),
                Ev::Open(_) => {}
            }
        }
        assert_eq!(paused, Some(true), "pause_reading of an open connection returns true");
        assert_eq!(got.len(), 10, "messages delivered after pause_reading returned (in 2 s)");
        handle.resume_reading(conn).unwrap();
        got.extend(msgs(&rx, Duration::from_secs(5)));
        assert_eq!(got.len(), N as usize, "after resume_reading every message arrives");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m, &message(1, i as u32, 16), "message {i} in order");
        }
        drop(client);
        handle.stop().unwrap();
        t.join().unwrap();
    }

    #[test]
    fn pausing_through_the_handle_holds_every_message_until_resumed() {
        const N: u32 = 50;
        let (address, handle, rx, t) = spawn(None);
        let mut client = Client::new(address.as_str()).authkey(KEY).connect().unwrap();
        let conn = match rx.recv_timeout(common::servers::WAIT).unwrap() {
            Ev::Open(c) => c,
            _ => panic!("expected open"),
        };
        handle.pause_reading(conn).unwrap();
        // Commands are carried out in order: once this call ran, the pause has.
        let (sync_tx, sync) = mpsc::channel();
        handle
            .call(move |ctx| {
                // Pausing again reports the connection exists (it is open).
                let _ = sync_tx.send(ctx.pause_reading(conn));
            })
            .unwrap();
        assert!(sync.recv_timeout(common::servers::WAIT).unwrap());
        for i in 0..N {
            client.send_bytes(&message(2, i, 100)).unwrap();
        }
        // Three seconds of nothing, however the messages were split into reads.
        assert_eq!(msgs(&rx, Duration::from_secs(3)).len(), 0, "on_message while paused");
        handle.resume_reading(conn).unwrap();
        let got = msgs(&rx, Duration::from_secs(5));
        assert_eq!(got.len(), N as usize);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m, &message(2, i as u32, 100));
        }
        // An unknown connection: false from the context.
        let (tx2, rx2) = mpsc::channel();
        drop(client);
        handle
            .call(move |ctx| {
                let _ = tx2.send(ctx.resume_reading(conn));
            })
            .unwrap();
        let _ = rx2.recv_timeout(common::servers::WAIT).unwrap();
        handle.stop().unwrap();
        t.join().unwrap();
    }
}
