//! What the challenge-response does and does not prove, tried with raw sockets against live
//! listeners on each face (blocking, reactor, tokio; harness: `tests/common/adversary.rs`) and
//! against real CPython peers. `SECURITY.md` ("What the handshake proves") cites each test.
//!
//! * Reflection against a listener: a listener answers the peer's challenge only after the peer
//!   answered its own, so a peer without the key gets no MAC out of it (no oracle), whatever it
//!   reflects or pipelines.
//! * A client answers first, by protocol design (as CPython's): a malicious listener gets the
//!   HMAC of a challenge of its choosing. It can relay a real listener's challenge through a
//!   victim client and get in without the key, and with two concurrent connections of one client
//!   it can reflect the client's own challenge back and pass as a listener. The `{sha256}`
//!   format does not prevent it: both roles MAC the same message. These tests show it holds.
//! * Digest downgrade: an answer in HMAC-MD5 (raw, or `{md5}`) to a `{sha256}` challenge is
//!   accepted by default, as CPython 3.12+'s `_verify_challenge` accepts it (checked against a
//!   real 3.12 and 3.13 listener), and refused under `DigestPolicy::RequireSha256`, both ways.
//! * Keys that differ only by trailing NUL bytes give the same HMAC (HMAC pads the key with
//!   zeros), in mpconn and in CPython.
//!
//! Loopback only; every wait is bounded; every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use common::adversary::{Config, FACES, KEY, Server, WAIT, closed_within, read_frame, write_frame};
use common::servers::{Child2, pyenv_python};
use mpconn::{Client, Digest, DigestPolicy};

const CHALLENGE: &[u8] = b"#CHALLENGE#";

/// Everything the server sends until it closes (frames), bounded by `WAIT`.
fn frames_until_close(s: &mut TcpStream) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..16 {
        match read_frame(s) {
            Ok(f) => out.push(f),
            Err(_) => break,
        }
    }
    out
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// The answer a key holder gives to a `#CHALLENGE#...` body (CPython's `_create_response`).
fn answer(key: &[u8], challenge: &[u8], digest: Digest, prefixed: bool) -> Vec<u8> {
    let message = &challenge[CHALLENGE.len()..];
    let mac = digest.mac(key, message);
    let mut out = Vec::new();
    if prefixed {
        out.extend_from_slice(format!("{{{}}}", digest.name()).as_bytes());
    }
    out.extend_from_slice(mac.as_bytes());
    out
}

fn python3_11() -> String {
    "python3".into()
}

/// Reflection against a listener, on each face. A keyless attacker takes the challenge of one
/// connection and (3) sends it back on its own connection, (1) sends it as its "answer" on another, (2) sends a
/// wrong answer with the reflected challenge pipelined in the same write.
/// Each time the listener sends `#FAILURE#` and closes: no MAC ever leaves it. A key holder doing
/// (2) with a right answer gets the listener's MAC of the reflected challenge (the control: the
/// listener answers a challenge, but only to a peer that proved the key and could compute it).
#[test]
fn a_listener_answers_no_challenge_before_the_peer_proved_the_key() {
    let _s = common::adversary::serial();
    for face in FACES {
        let server = Server::start(face, &Config::default());
        let mut a = server.raw();
        let ca = read_frame(&mut a).unwrap();
        assert!(ca.starts_with(b"#CHALLENGE#{sha256}"), "{face:?}");
        // (The blocking face handshakes one connection at a time, so each attempt is finished
        // before the next connects.)
        // (3) Its own challenge back, on its own connection.
        write_frame(&mut a, &ca).unwrap();
        assert_eq!(frames_until_close(&mut a), vec![b"#FAILURE#".to_vec()], "{face:?}: (3) only a failure");

        // (1) The other connection's challenge as the answer.
        let mut b = server.raw();
        let _cb = read_frame(&mut b).unwrap();
        write_frame(&mut b, &ca).unwrap();
        assert_eq!(frames_until_close(&mut b), vec![b"#FAILURE#".to_vec()], "{face:?}: (1) only a failure");

        // (2) A wrong answer, then the reflected challenge, in one write.
        let mut c = server.raw();
        let _cc = read_frame(&mut c).unwrap();
        let mut bytes = frame(&[b"{sha256}".as_slice(), &[0u8; 32]].concat());
        bytes.extend_from_slice(&frame(&ca));
        c.write_all(&bytes).unwrap();
        assert_eq!(frames_until_close(&mut c), vec![b"#FAILURE#".to_vec()], "{face:?}: (2) only a failure");

        // Control: the same pipelined write with a right answer is answered.
        let mut d = server.raw();
        let cd = read_frame(&mut d).unwrap();
        let mut bytes = frame(&answer(KEY.as_bytes(), &cd, Digest::Sha256, true));
        bytes.extend_from_slice(&frame(&ca));
        d.write_all(&bytes).unwrap();
        assert_eq!(read_frame(&mut d).unwrap(), b"#WELCOME#", "{face:?}");
        let reply = read_frame(&mut d).unwrap();
        assert_eq!(
            reply,
            answer(KEY.as_bytes(), &ca, Digest::Sha256, true),
            "{face:?}: the MAC of the reflected challenge"
        );

        let reasons = server.ended(3, WAIT);
        println!("{}: reflection attempts ended: {reasons:?}", face.name());
        assert_eq!(reasons.len(), 3, "{face:?}");
        assert!(reasons.iter().all(|r| r.contains("authentication failed")), "{face:?}: {reasons:?}");
        assert_eq!(server.opened.get(), 0, "{face:?}: no reflection opened a connection");
    }
}

/// The client a relay fools.
enum Victim {
    Thread(thread::JoinHandle<Result<(), String>>),
    Child(Child2),
}

/// Starts a victim client towards the given address.
type StartVictim = Box<dyn FnOnce(String) -> Victim>;

/// A fake listener that relays. It has no key: it connects to a real listener (each face), hands
/// the real challenge to a victim client that connected to it, passes the victim's answer back,
/// and then relays the victim's own challenge to the real listener and its answer back. The real
/// listener opens the attacker's connection (it echoes a message), and the victim believes it
/// talks to a key holder. This is the protocol's property, CPython's too (the second victim is a
/// CPython 3.12 client where pyenv has one): the MAC binds neither the connection nor the role.
#[test]
fn a_keyless_relay_between_a_client_and_a_listener_gets_in_on_every_face() {
    let _s = common::adversary::serial();
    for face in FACES {
        let mut victims: Vec<(&str, StartVictim)> = vec![(
            "mpconn Client",
            Box::new(|addr: String| {
                Victim::Thread(thread::spawn(move || {
                    Client::new(addr.as_str()).authkey(KEY).connect().map(drop).map_err(|e| e.to_string())
                }))
            }),
        )];
        if let Some(py) = pyenv_python("3.12") {
            victims.push((
                "CPython 3.12 Client",
                Box::new(move |addr: String| {
                    let (host, port) = addr.rsplit_once(':').unwrap();
                    let mut cmd = Command::new(py);
                    cmd.arg("-c").arg(format!(
                        "from multiprocessing.connection import Client\n\
                         c = Client(('{host}', {port}), authkey=b'{KEY}')\nprint('victim-ok', flush=True)\n\
                         import time; time.sleep(30)"
                    ));
                    Victim::Child(Child2::spawn(cmd, "victim"))
                }),
            ));
        } else {
            println!("SKIPPED: CPython 3.12 victim (no pyenv 3.12)");
        }
        for (who, start_victim) in victims {
            let server = Server::start(face, &Config::default());
            let fake = TcpListener::bind("127.0.0.1:0").unwrap();
            let victim = start_victim(fake.local_addr().unwrap().to_string());
            let (mut v, _) = fake.accept().unwrap();
            v.set_read_timeout(Some(WAIT)).unwrap();
            let mut l = server.raw();
            // Listener -> victim: the challenge; victim -> listener: its answer; the verdict.
            let challenge = read_frame(&mut l).unwrap();
            write_frame(&mut v, &challenge).unwrap();
            let victim_answer = read_frame(&mut v).unwrap();
            write_frame(&mut l, &victim_answer).unwrap();
            let verdict = read_frame(&mut l).unwrap();
            assert_eq!(verdict, b"#WELCOME#", "{face:?} {who}: the listener accepted the relayed answer");
            write_frame(&mut v, &verdict).unwrap();
            // Victim -> listener: the victim's challenge; the listener answers it for us.
            let victim_challenge = read_frame(&mut v).unwrap();
            write_frame(&mut l, &victim_challenge).unwrap();
            let listener_answer = read_frame(&mut l).unwrap();
            write_frame(&mut v, &listener_answer).unwrap();
            assert_eq!(
                read_frame(&mut v).unwrap(),
                b"#WELCOME#",
                "{face:?} {who}: the victim accepted the relayed answer"
            );
            write_frame(&mut l, b"#WELCOME#").unwrap();
            // The attacker, without the key, now has an open connection.
            write_frame(&mut l, b"sent by the keyless relay").unwrap();
            assert_eq!(read_frame(&mut l).unwrap(), b"sent by the keyless relay", "{face:?} {who}");
            match victim {
                Victim::Thread(t) => assert_eq!(
                    t.join().unwrap(),
                    Ok(()),
                    "{face:?} {who}: the victim believes it authenticated the relay"
                ),
                Victim::Child(child) => assert_eq!(child.expect_line("victim-ok"), "", "{face:?} {who}"),
            }
            println!("{}: a keyless relay through a {who} got in (as with CPython)", face.name());
        }
    }
}

/// Reflection between roles against a client: the fake listener has no key. The client opens two
/// connections at once; the fake listener welcomes the first without checking, takes the
/// client's challenge from it, offers that challenge to the second connection, which answers
/// it, and gives that answer back on the first. The first connection is authenticated: the
/// `{sha256}` format does not stop it, since a listener's and a client's challenges are the same
/// message and both roles compute the same MAC. Shown for the mpconn blocking and tokio clients
/// and, where pyenv has it, CPython 3.12's.
#[test]
fn two_concurrent_connections_let_a_keyless_listener_reflect_a_clients_own_challenge() {
    type Connect = Box<dyn Fn(String) -> Result<(), String> + Send + Sync>;
    let mut clients: Vec<(&str, Connect)> = vec![
        (
            "mpconn blocking Client",
            Box::new(|a| Client::new(a.as_str()).authkey(KEY).connect().map(drop).map_err(|e| e.to_string())),
        ),
        (
            "mpconn tokio Client",
            Box::new(|a| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    mpconn::tokio::Client::new(a.as_str())
                        .authkey(KEY)
                        .connect()
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            }),
        ),
    ];
    if let Some(py) = pyenv_python("3.12") {
        clients.push((
            "CPython 3.12 Client",
            Box::new(move |a| {
                let (host, port) = a.rsplit_once(':').unwrap();
                let out = Command::new(&py)
                    .arg("-c")
                    .arg(format!(
                        "from multiprocessing.connection import Client\n\
                         try:\n    Client(('{host}', {port}), authkey=b'{KEY}'); print('ok')\n\
                         except Exception as e:\n    print(type(e).__name__)"
                    ))
                    .output()
                    .map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if text == "ok" { Ok(()) } else { Err(text) }
            }),
        ));
    }
    for (who, connect) in &clients {
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = fake.local_addr().unwrap().to_string();
        let results = thread::scope(|scope| {
            let first = scope.spawn(|| connect(addr.clone()));
            let (mut c1, _) = fake.accept().unwrap();
            c1.set_read_timeout(Some(WAIT)).unwrap();
            // Any challenge; the answer is not checked.
            write_frame(&mut c1, &[b"#CHALLENGE#{sha256}".as_slice(), &[7u8; 40]].concat()).unwrap();
            let _ = read_frame(&mut c1).unwrap();
            write_frame(&mut c1, b"#WELCOME#").unwrap();
            let own_challenge = read_frame(&mut c1).unwrap();
            assert!(own_challenge.starts_with(b"#CHALLENGE#{sha256}"), "{who}");
            // The second connection answers the first's challenge.
            let second = scope.spawn(|| connect(addr.clone()));
            let (mut c2, _) = fake.accept().unwrap();
            c2.set_read_timeout(Some(WAIT)).unwrap();
            write_frame(&mut c2, &own_challenge).unwrap();
            let mac = read_frame(&mut c2).unwrap();
            drop(c2);
            write_frame(&mut c1, &mac).unwrap();
            let verdict = read_frame(&mut c1).unwrap();
            (verdict, first.join().unwrap(), second.join().unwrap())
        });
        println!("{who}: reflected connection -> {:?}, helper connection -> {:?}", results.1, results.2);
        assert_eq!(results.0, b"#WELCOME#", "{who}: the client welcomed its own reflected MAC");
        assert_eq!(results.1, Ok(()), "{who}: the first connection opened with a keyless listener");
        assert!(results.2.is_err(), "{who}: the helper connection failed");
    }
}

/// A key holder answers the `{sha256}` challenge in HMAC-MD5 (raw 16 bytes, as CPython up to
/// 3.11 does, and `{md5}`-prefixed): accepted under the default policy, refused under
/// `RequireSha256` (`#FAILURE#`, the server says why), on each face.
#[test]
fn an_md5_answer_to_a_sha256_challenge_is_accepted_by_default_and_refused_when_strict() {
    let _s = common::adversary::serial();
    for face in FACES {
        for policy in [DigestPolicy::CpythonCompatible, DigestPolicy::RequireSha256] {
            let server = Server::start(face, &Config { policy, ..Config::default() });
            for prefixed in [false, true] {
                let mut s = server.raw();
                let challenge = read_frame(&mut s).unwrap();
                let reply = answer(KEY.as_bytes(), &challenge, Digest::Md5, prefixed);
                assert_eq!(reply.len(), if prefixed { 21 } else { 16 });
                write_frame(&mut s, &reply).unwrap();
                let verdict = read_frame(&mut s).unwrap();
                if policy == DigestPolicy::CpythonCompatible {
                    assert_eq!(verdict, b"#WELCOME#", "{face:?} prefixed={prefixed}");
                } else {
                    assert_eq!(verdict, b"#FAILURE#", "{face:?} prefixed={prefixed}");
                    assert!(closed_within(&mut s, WAIT));
                    let reasons = server.ended(1, WAIT);
                    assert!(reasons[0].contains("digest md5 refused by the digest policy"), "{face:?}: {reasons:?}");
                }
            }
        }
        println!("{}: MD5 answers to a sha256 challenge: accepted by default, refused by RequireSha256", face.name());
    }
}

/// The same against real peers: a CPython 3.11 client (it answers every challenge in raw
/// HMAC-MD5) is let in by each face by default and refused under `RequireSha256`.
#[test]
fn a_cpython_3_11_md5_client_is_accepted_by_default_and_refused_when_strict() {
    let _s = common::adversary::serial();
    for face in FACES {
        for policy in [DigestPolicy::CpythonCompatible, DigestPolicy::RequireSha256] {
            let server = Server::start(face, &Config { policy, ..Config::default() });
            let out = Command::new(python3_11())
                .arg("-c")
                .arg(format!(
                    "from multiprocessing.connection import Client\n\
                     try:\n    c = Client(('127.0.0.1', {}), authkey=b'{KEY}'); c.send_bytes(b'x'); print(c.recv_bytes())\n\
                     except Exception as e:\n    print(type(e).__name__, e)",
                    server.addr.port()
                ))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("{} {policy:?}: CPython 3.11 client -> {text}", face.name());
            if policy == DigestPolicy::CpythonCompatible {
                assert_eq!(text, "b'x'", "{face:?}");
            } else {
                assert!(text.starts_with("AuthenticationError"), "{face:?}: {text}");
                let reasons = server.ended(1, WAIT);
                assert!(reasons[0].contains("md5 refused"), "{face:?}: {reasons:?}");
            }
        }
    }
}

/// What CPython 3.12 and 3.13 themselves accept: their `Listener` (a `{sha256}` challenge)
/// welcomes a raw HMAC-MD5 answer and a `{md5}` one (`_verify_challenge` takes any digest the
/// reply names, MD5 for a 16-byte one). So the default policy is CPython's.
#[test]
fn cpython_3_12_and_3_13_listeners_accept_an_md5_answer_to_their_sha256_challenge() {
    for version in ["3.12", "3.13"] {
        let Some(py) = pyenv_python(version) else {
            println!("SKIPPED: CPython {version} (not in pyenv)");
            continue;
        };
        for prefixed in [false, true] {
            let mut cmd = Command::new(&py);
            cmd.arg("-c").arg(format!(
                "from multiprocessing.connection import Listener\n\
                 l = Listener(('127.0.0.1', 0), authkey=b'{KEY}')\nprint('addr', l.address[1], flush=True)\n\
                 try:\n    c = l.accept(); print('accepted', c.recv_bytes(), flush=True)\n\
                 except Exception as e:\n    print('refused', type(e).__name__, e, flush=True)"
            ));
            let child = Child2::spawn(cmd, "cpython listener");
            let port: u16 = child.expect_line("addr").parse().unwrap();
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let challenge = read_frame(&mut s).unwrap();
            assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"), "{version}");
            write_frame(&mut s, &answer(KEY.as_bytes(), &challenge, Digest::Md5, prefixed)).unwrap();
            assert_eq!(read_frame(&mut s).unwrap(), b"#WELCOME#", "CPython {version} prefixed={prefixed}");
            println!("CPython {version}: welcomed an MD5 answer (prefixed={prefixed}) to its sha256 challenge");
        }
    }
}

/// The reverse direction: a CPython 3.12/3.13 listener that challenges with `{md5}` (its
/// `deliver_challenge(conn, key, digest_name='md5')`) is answered by a default mpconn client and
/// refused by a `RequireSha256` one (`DigestRefused`, nothing sent).
#[test]
fn an_md5_challenge_is_answered_by_default_and_refused_by_a_strict_client() {
    for version in ["3.12", "3.13"] {
        let Some(py) = pyenv_python(version) else {
            println!("SKIPPED: CPython {version} (not in pyenv)");
            continue;
        };
        for policy in [DigestPolicy::CpythonCompatible, DigestPolicy::RequireSha256] {
            let mut cmd = Command::new(&py);
            cmd.arg("-c").arg(format!(
                "import multiprocessing.connection as mc\n\
                 l = mc.Listener(('127.0.0.1', 0))\nprint('addr', l.address[1], flush=True)\n\
                 c = l.accept()\n\
                 try:\n    mc.deliver_challenge(c, b'{KEY}', digest_name='md5'); mc.answer_challenge(c, b'{KEY}'); print('ok', flush=True)\n\
                 except Exception as e:\n    print('failed', type(e).__name__, flush=True)"
            ));
            let child = Child2::spawn(cmd, "cpython md5 listener");
            let port: u16 = child.expect_line("addr").parse().unwrap();
            let r = Client::new(format!("127.0.0.1:{port}").as_str()).authkey(KEY).digest_policy(policy).connect();
            println!("CPython {version} {{md5}} listener, {policy:?} client: {:?}", r.as_ref().map(|_| ()));
            if policy == DigestPolicy::CpythonCompatible {
                assert!(r.is_ok(), "{version}: {:?}", r.err());
                assert_eq!(child.expect_line("ok"), "");
            } else {
                let e = r.map(|_| ()).unwrap_err();
                assert!(e.to_string().contains("digest md5 refused"), "{version}: {e}");
                // The strict client sent no answer: the listener saw the connection end.
                assert!(child.expect_line("failed").contains("EOFError"), "{version}");
            }
        }
    }
}

/// HMAC pads a key shorter than the hash's block with zero bytes, so "k", "k\0" and "k\0\0" are
/// one key, in every digest, in mpconn as in CPython (CPython's own `hmac` prints the same MAC).
/// On each face, a CPython 3.11 client with the key plus two NULs is let in by a listener with
/// the key; and an mpconn client with the key is let in by a CPython listener with key + NUL.
#[test]
fn keys_that_differ_only_by_trailing_nul_bytes_are_the_same_key() {
    let _s = common::adversary::serial();
    for d in Digest::ALL {
        assert_eq!(d.mac(b"k", b"challenge").as_bytes(), d.mac(b"k\0\0", b"challenge").as_bytes(), "{}", d.name());
        assert_ne!(d.mac(b"k", b"challenge").as_bytes(), d.mac(b"k\0x", b"challenge").as_bytes(), "{}", d.name());
    }
    let py = Command::new(python3_11())
        .arg("-c")
        .arg("import hmac; print(hmac.new(b'k', b'challenge', 'sha256').hexdigest() == hmac.new(b'k\\0\\0', b'challenge', 'sha256').hexdigest())")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "True", "CPython's hmac agrees");
    for face in FACES {
        let server = Server::start(face, &Config::default());
        let out = Command::new(python3_11())
            .arg("-c")
            .arg(format!(
                "from multiprocessing.connection import Client\n\
                 c = Client(('127.0.0.1', {}), authkey=b'{KEY}\\0\\0'); c.send_bytes(b'nul'); print(c.recv_bytes())",
                server.addr.port()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "b'nul'",
            "{face:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{}: a CPython client with key + b'\\0\\0' was let in", face.name());
    }
    let mut cmd = Command::new(python3_11());
    cmd.arg("-c").arg(format!(
        "from multiprocessing.connection import Listener\n\
         l = Listener(('127.0.0.1', 0), authkey=b'{KEY}\\0')\nprint('addr', l.address[1], flush=True)\n\
         c = l.accept(); c.send_bytes(b'hi'); print('ok', flush=True)"
    ));
    let child = Child2::spawn(cmd, "cpython nul listener");
    let port: u16 = child.expect_line("addr").parse().unwrap();
    let mut c = Client::new(format!("127.0.0.1:{port}").as_str()).authkey(KEY).connect().unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"hi");
    assert_eq!(child.expect_line("ok"), "");
}
