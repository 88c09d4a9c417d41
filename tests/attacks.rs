//! The standing adversary suite, by attack: each attack runs against a live echo server on each
//! face (blocking `Listener` with a thread per connection, reactor, tokio) while a good client
//! pings every 10 ms and the process's RSS is sampled (harness: `tests/common/adversary.rs`). Each
//! run prints one line `attack=X face=F good_n=.. good_p50=.. good_max=.. fresh_connect=..
//! rss_base=.. rss_peak=.. attack_time=..` and asserts how the attackers ended and that the
//! good client was served (no error, no round trip over `GOOD_MAX`, a new client got in).
//!
//! ```text
//! cargo test --all-features --test attacks -- --nocapture --test-threads 1
//! ```
//! Attacks of other subjects (pickle bombs, deadlines on every face, the memory budget across
//! connections) are meant to join this file with the same harness. Every loop is bounded in
//! count and time; loopback only.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::adversary::{Config, Face, KEY, Server, closed_within, read_frame, serial, write_frame};

/// A good round trip never takes longer than this during an attack (generous: a loaded 2-core
/// machine; the figures printed are the measurement).
const GOOD_MAX: Duration = Duration::from_secs(3);

fn has(reasons: &[String], want: &[&str]) -> bool {
    reasons.iter().all(|r| want.iter().any(|w| r.to_lowercase().contains(w)))
}

/// Handshake trickle: 5 peers each answer the challenge one byte every 100 ms (a 41-byte reply
/// would take 4 s), past the 1 s handshake deadline. Each is closed for the deadline. The
/// blocking face runs each handshake inside `accept`, one at a time: a new client waits behind
/// the tricklers (the `fresh_connect` figure shows it).
fn handshake_trickle(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    const N: usize = 5;
    let report = common::adversary::run("handshake_trickle", &server, |server| {
        let mut peers: Vec<TcpStream> = (0..N).map(|_| server.raw()).collect();
        let reply = [0x41u8; 41];
        let mut frame = (reply.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&reply);
        let start = Instant::now();
        let mut sent = 0;
        // One byte per peer every 100 ms, until the frame is out or 8 s passed; a write to a
        // closed peer fails and is ignored.
        let (mut reasons, mut first_end) = (Vec::new(), None);
        while sent < frame.len() && start.elapsed() < Duration::from_secs(8) {
            for p in &mut peers {
                let _ = p.write_all(&frame[sent..sent + 1]);
            }
            sent += 1;
            thread::sleep(Duration::from_millis(100));
            reasons.extend(server.ended(N - reasons.len(), Duration::ZERO));
            if first_end.is_none() && !reasons.is_empty() {
                first_end = Some(start.elapsed());
            }
        }
        reasons.extend(server.ended(N - reasons.len(), Duration::from_secs(30)));
        let first_end = first_end.unwrap_or_else(|| start.elapsed());
        println!("handshake_trickle {}: first end after {:.2} s: {reasons:?}", face.name(), first_end.as_secs_f64());
        assert_eq!(reasons.len(), N, "every trickler ended");
        // The blocking face authenticates inside `accept`, one peer at a time: a trickler whose
        // turn comes after its whole (forged) reply arrived fails on the reply, not the clock.
        let outcomes: &[&str] = if face == Face::Blocking {
            &["timed out", "timeout", "authentication failed"]
        } else {
            &["timed out", "timeout"]
        };
        assert!(has(&reasons, outcomes), "closed for the handshake deadline: {reasons:?}");
        assert!(has(&reasons[..1], &["timed out", "timeout"]), "the first trickler hit the deadline: {reasons:?}");
        assert!(first_end < Duration::from_secs(4), "the first trickler ended at the deadline, not its reply's end");
        for p in &mut peers {
            assert!(closed_within(p, Duration::from_secs(5)), "the server closed the trickler");
        }
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// Silent peers: many connect and never answer the challenge; each is closed at the 1 s
/// handshake deadline. 100 on the reactor and tokio; 5 on the blocking face, whose serial
/// handshakes would take N seconds (see `handshake_trickle`).
fn silent_peers(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    let n = if face == Face::Blocking { 5 } else { 100 };
    let report = common::adversary::run("silent_peers", &server, |server| {
        let mut peers: Vec<TcpStream> = (0..n).map(|_| server.raw()).collect();
        let reasons = server.ended(n, Duration::from_secs(30));
        println!("silent_peers {} n={n}: first {:?}", face.name(), reasons.first());
        assert_eq!(reasons.len(), n, "every silent peer ended");
        assert!(has(&reasons, &["timed out", "timeout"]), "closed for the handshake deadline: {reasons:?}");
        for p in &mut peers {
            assert!(closed_within(p, Duration::from_secs(5)), "the server closed the silent peer");
        }
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// Pre-authentication garbage: a 2 GiB length, a 2^40 long header, a 300-byte reply (over the
/// 256-byte handshake cap), a reply that is no digest, random bytes. Each is refused at once
/// (well before the handshake deadline), never with a timeout.
fn preauth_garbage(face: Face) {
    let _s = serial();
    let config = Config { handshake_timeout: Duration::from_secs(10), ..Config::default() };
    let server = Server::start(face, &config);
    let report = common::adversary::run("preauth_garbage", &server, |server| {
        let mut long_header = (-1i32).to_be_bytes().to_vec();
        long_header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut over_cap = 300u32.to_be_bytes().to_vec();
        over_cap.extend_from_slice(&[b'{'; 300]);
        let mut not_a_digest = 41u32.to_be_bytes().to_vec();
        not_a_digest.extend_from_slice(&[b'x'; 41]);
        let random: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let cases: [(&str, Vec<u8>); 5] = [
            ("2 GiB length", 0x7fff_ffffu32.to_be_bytes().to_vec()),
            ("2^40 long header", long_header),
            ("300-byte reply", over_cap),
            ("no digest", not_a_digest),
            ("random bytes", random),
        ];
        for (what, bytes) in cases {
            let t = Instant::now();
            let mut s = server.raw();
            read_frame(&mut s).expect("the challenge");
            let _ = s.write_all(&bytes);
            assert!(closed_within(&mut s, Duration::from_secs(5)), "{what}: closed");
            let took = t.elapsed();
            let reasons = server.ended(1, Duration::from_secs(5));
            println!(
                "preauth_garbage {} {what}: closed in {:.1} ms: {reasons:?}",
                face.name(),
                took.as_secs_f64() * 1e3
            );
            assert_eq!(reasons.len(), 1, "{what}: the server reported the end");
            assert!(
                !has(&reasons, &["timed out", "timeout"]),
                "{what}: refused at once, not by a deadline: {reasons:?}"
            );
            assert!(took < Duration::from_secs(5), "{what}: refused before the 10 s deadline");
        }
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// Slowloris mid-message: 3 authenticated peers each declare a 1,000-byte message and send one
/// byte of it every 100 ms. Each is closed by the partial-message deadline (reactor) or the
/// receive timeout (blocking, tokio), 1 s, not kept for the 10 s the message would take.
fn slowloris_mid_message(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    const N: usize = 3;
    let report = common::adversary::run("slowloris_mid_message", &server, |server| {
        let mut peers: Vec<TcpStream> = (0..N).map(|_| server.authenticated(KEY)).collect();
        for p in &mut peers {
            p.write_all(&1000u32.to_be_bytes()).unwrap();
        }
        let start = Instant::now();
        let mut reasons = Vec::new();
        for _ in 0..80 {
            for p in &mut peers {
                let _ = p.write_all(b"x");
            }
            thread::sleep(Duration::from_millis(100));
            reasons.extend(server.ended(N - reasons.len(), Duration::ZERO));
            if reasons.len() == N {
                break;
            }
        }
        println!("slowloris {}: {reasons:?} after {:.2} s", face.name(), start.elapsed().as_secs_f64());
        assert_eq!(reasons.len(), N, "every slowloris peer ended");
        assert!(start.elapsed() < Duration::from_secs(8), "ended by a deadline, not by the message's end");
        assert!(has(&reasons, &["timed out", "timeout", "incomplete"]), "{reasons:?}");
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// A peer that never reads: authenticated, it sends 64 KiB messages (echoed) without reading
/// any echo, until its writes block. The server stops reading it (reactor: auto-pause at the
/// 1 MiB high-water mark) and closes it once its output made no progress for 1 s (write stall,
/// or the write/send timeout of the blocking and tokio servers).
fn never_reading_peer(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    let report = common::adversary::run("never_reading_peer", &server, |server| {
        let mut p = server.authenticated(KEY);
        p.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        let body = vec![7u8; 64 * 1024];
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < 4096 && start.elapsed() < Duration::from_secs(10) {
            if write_frame(&mut p, &body).is_err() {
                break;
            }
            sent += 1;
        }
        let reasons = server.ended(1, Duration::from_secs(20));
        println!(
            "never_reading_peer {}: wrote {sent} x 64 KiB before blocking; ended after {:.2} s: {reasons:?}",
            face.name(),
            start.elapsed().as_secs_f64()
        );
        assert_eq!(reasons.len(), 1, "the never-reading peer was closed");
        // The blocking server's read timeout ends it with the documented `WouldBlock` error.
        assert!(
            has(&reasons, &["timed out", "timeout", "stall", "took no output", "temporarily unavailable"]),
            "{reasons:?}"
        );
        assert!(sent < 4096, "the server stopped reading it (its writes blocked)");
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// Bulk streamers: 4 authenticated peers each stream batches of 32 messages of 256 KiB and read
/// every echo back (legitimate but heavy), batch after batch for at least 1.5 s (at most 20
/// batches: 160 MiB each way per peer). All are served intact; the good client's latency is the
/// figure.
fn bulk_streamers(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    let report = common::adversary::run("bulk_streamers", &server, |server| {
        let mut peers: Vec<TcpStream> = (0..4).map(|_| server.authenticated(KEY)).collect();
        let start = Instant::now();
        let mut batches = 0u32;
        while batches < 20 && (batches == 0 || start.elapsed() < Duration::from_millis(1500)) {
            let handles: Vec<_> = peers
                .drain(..)
                .enumerate()
                .map(|(k, p)| {
                    let mut w = p.try_clone().unwrap();
                    let mut r = p;
                    let writer = thread::spawn(move || {
                        for i in 0..32u32 {
                            let mut b = vec![(k as u8).wrapping_add(i as u8); 256 * 1024];
                            b[..4].copy_from_slice(&i.to_be_bytes());
                            write_frame(&mut w, &b).unwrap();
                        }
                    });
                    thread::spawn(move || {
                        for i in 0..32u32 {
                            let b = read_frame(&mut r).expect("an echo");
                            assert_eq!(b.len(), 256 * 1024);
                            assert_eq!(&b[..4], &i.to_be_bytes(), "echo {i} in order");
                            assert_eq!(b[5], (k as u8).wrapping_add(i as u8), "echo {i} intact");
                        }
                        writer.join().unwrap();
                        r
                    })
                })
                .collect();
            for h in handles {
                peers.push(h.join().expect("a streamer failed"));
            }
            batches += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "bulk_streamers {}: {batches} batches of 4 x 8 MiB echoed in {secs:.2} s ({:.0} MiB/s each way)",
            face.name(),
            f64::from(batches) * 32.0 / secs
        );
    });
    report.assert_good_client_served(GOOD_MAX);
    // The streamers must not starve the others: generous (the reactor's p50 is under 1 ms, the
    // tokio face's 1.1 ms with its fair slice; 71-73 ms before it, 32-440 ms in the review).
    assert!(
        report.good_p50 <= Duration::from_millis(25),
        "bulk streamers starved the good client: p50 {:?}",
        report.good_p50
    );
}

/// Wrong keys in a loop: a client with the wrong key connects again and again (at most 200
/// times, at most 4 s). Every attempt is refused (`Rejected` on its side, a digest mismatch on
/// the server's), nothing opens.
fn wrong_keys_in_a_loop(face: Face) {
    let _s = serial();
    let server = Server::start(face, &Config::default());
    let report = common::adversary::run("wrong_keys_in_a_loop", &server, |server| {
        let start = Instant::now();
        let mut tries = 0;
        while tries < 200 && start.elapsed() < Duration::from_secs(4) {
            let e = mpconn::Client::new(&server.address).authkey("not the key").connect().map(|_| ()).unwrap_err();
            assert!(e.to_string().contains("rejected"), "{e}");
            tries += 1;
        }
        let opened_before = server.opened.get();
        let reasons = server.ended(tries, Duration::from_secs(10));
        println!(
            "wrong_keys {}: {tries} refused in {:.2} s ({:.0}/s); first reason {:?}",
            face.name(),
            start.elapsed().as_secs_f64(),
            tries as f64 / start.elapsed().as_secs_f64(),
            reasons.first()
        );
        assert_eq!(reasons.len(), tries);
        assert!(has(&reasons, &["digest received was wrong"]), "{reasons:?}");
        // The good and the fresh client opened; no attacker did.
        assert!(server.opened.get() - opened_before <= 1, "a wrong key never opens a connection");
    });
    report.assert_good_client_served(GOOD_MAX);
}

/// One test per face, `common::servers::blocking`, `common::servers::reactor`, `common::servers::tokio`; a face can carry an
/// `#[ignore = "why"]` for a known failure (the test still runs with `--include-ignored`).
macro_rules! on_every_face {
    ($attack:ident $(; blocking: #[$b:meta])? $(; tokio: #[$t:meta])?) => {
        mod $attack {
            #[test]
            $(#[$b])?
            fn blocking() {
                super::$attack(super::Face::Blocking)
            }
            #[test]
            fn reactor() {
                super::$attack(super::Face::Reactor)
            }
            #[test]
            $(#[$t])?
            fn tokio() {
                super::$attack(super::Face::Tokio)
            }
            #[test]
            fn sharded() {
                super::$attack(super::Face::Sharded)
            }
        }
    };
}

// The blocking face reads a handshake with the time left of the whole-handshake deadline (it
// read on while bytes came before, and the first trickler ended after 4.5 s instead of 1 s).
on_every_face!(handshake_trickle);
on_every_face!(silent_peers);
on_every_face!(preauth_garbage);
// The blocking face honours the session's partial-message deadline too (before, a read timeout
// restarted at every byte and a dribbler held its thread as long as it liked).
on_every_face!(slowloris_mid_message);
on_every_face!(never_reading_peer);
// Found here: on the tokio face (one current-thread runtime) 4 streamers starved the other
// tasks (good p50 32-440 ms over three runs, and once a new client's handshake missed the 1 s
// deadline): tokio's cooperative budget let one task read up to 8 MiB between yields. Each
// connection now yields after `FAIR_SLICE` (256 KiB) read or written.
on_every_face!(bulk_streamers);
on_every_face!(wrong_keys_in_a_loop);
