//! Sharded reactors (`mpconn::reactor::Sharded`): N reactor threads in one process, TCP spread by
//! `SO_REUSEPORT` (Linux), Unix sockets by one socket all shards accept from (Linux; one acceptor
//! thread elsewhere), which stays spread when one shard gets every wake-up; many CPython and Rust clients at once,
//! every message echoed, the spread over the shards printed; a handle that reaches every shard;
//! a stop from one shard stopping all; the memory budget split per shard and holding there.
//!
//! Loopback and Unix sockets only; every wait is bounded; nothing here measures speed.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::servers::split_unix;
use common::shards::{Echo, connect_to_shard};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
use mpconn::reactor::{Balance, ConnId, Sharded, ShardedHandle};
use mpconn::{Address, Client, Family};

const KEY: &str = "sharded-suite-key";
const WAIT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

struct Group {
    address: Address,
    balance: Balance,
    handle: ShardedHandle,
    opens: mpsc::Receiver<(usize, ConnId)>,
    t: thread::JoinHandle<mpconn::Result<()>>,
}

/// A group of `shards` echo reactors listening on `address`, running on a thread of the test.
fn group(shards: usize, address: Address, config: ReactorConfig, options: ListenOptions) -> Group {
    group_with(shards, address, config, options, None)
}

/// [`group`] with the balance chosen (`None`: the default of `Sharded::listen`).
fn group_with(
    shards: usize,
    address: Address,
    config: ReactorConfig,
    options: ListenOptions,
    balance: Option<Balance>,
) -> Group {
    let (tx, opens) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut sharded = Sharded::new(shards, config, |shard| Echo { shard, opens: Some(tx.clone()) })?;
        let l = match balance {
            Some(balance) => sharded.listen_with(address, options, balance)?,
            None => sharded.listen(address, options)?,
        };
        let _ = ready_tx.send((l.address().clone(), l.balance(), sharded.handle()));
        sharded.run()
    });
    let (address, balance, handle) = ready_rx.recv_timeout(WAIT).expect("the group listens");
    Group { address, balance, handle, opens, t }
}

impl Group {
    fn stop(self) -> BTreeMap<usize, usize> {
        self.handle.stop().unwrap();
        self.t.join().expect("the group's thread").expect("run returns Ok");
        spread(&self.opens)
    }
}

/// Connections per shard, by the `on_open` reports.
fn spread(opens: &mpsc::Receiver<(usize, ConnId)>) -> BTreeMap<usize, usize> {
    let mut per = BTreeMap::new();
    while let Ok((shard, conn)) = opens.try_recv() {
        assert_eq!(conn.shard(), Some(shard), "{conn} says its shard");
        *per.entry(shard).or_insert(0) += 1;
    }
    per
}

fn unix_address() -> (tempfile::TempDir, Address) {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("sharded.sock"));
    (dir, address)
}

const PY_CLIENTS: &str = r#"
import sys
from multiprocessing.connection import Client
address, key, conns, messages = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4])
if not address.startswith('/'):
    host, port = address.rsplit(':', 1)
    address = (host, int(port))
cs = [Client(address, authkey=key) for _ in range(conns)]
for i in range(messages):
    for k, c in enumerate(cs):
        body = b'py %d %d ' % (k, i) + bytes(i % 200)
        c.send_bytes(body)
        assert c.recv_bytes() == body
for c in cs:
    c.close()
print('ok', conns * messages)
"#;

/// Rust clients (threads) and CPython clients (processes) at once; every message must come back.
fn clients(address: &Address, rust: usize, python: usize, per_python: usize, messages: usize) {
    let text = address.to_string();
    let pys: Vec<_> = (0..python)
        .map(|_| {
            Command::new("python3")
                .args(["-c", PY_CLIENTS, &text, KEY, &per_python.to_string(), &messages.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 is required")
        })
        .collect();
    let rs: Vec<_> = (0..rust)
        .map(|k| {
            let address = address.clone();
            thread::spawn(move || {
                let mut c = Client::new(address).authkey(KEY).connect().expect("connect");
                for i in 0..messages {
                    let body = format!("rust {k} {i} {}", "x".repeat(i * 7)).into_bytes();
                    c.send_bytes(&body).unwrap();
                    assert_eq!(c.recv_bytes().unwrap(), body);
                }
            })
        })
        .collect();
    for t in rs {
        t.join().expect("a Rust client");
    }
    for p in pys {
        let out = p.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("ok"),
            "a CPython client failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn many_clients_spread_and_echoed(family: Family) {
    let (_dir, address) = match family {
        Family::Unix => unix_address(),
        _ => (tempfile::tempdir().unwrap(), Address::inet("127.0.0.1", 0)),
    };
    let shards = 4;
    let g = group(shards, address, ReactorConfig::default(), ListenOptions::new().authkey(KEY));
    let (rust, python, per_python, messages) = (12, 4, 5, 40);
    clients(&g.address, rust, python, per_python, messages);
    let conns = rust + python * per_python;
    // Every connection closed: the counts are final once each shard saw its closes.
    let until = Instant::now() + WAIT;
    while g.handle.stats().total.closed < conns as u64 && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    let stats = g.handle.stats();
    let balance = g.balance;
    let per = g.stop();
    println!("{family:?} ({balance:?}), {shards} shards, {conns} connections: spread {per:?}");
    for (i, s) in stats.shards.iter().enumerate() {
        println!("  shard {i}: {s:?}");
    }
    assert_eq!(stats.total.opened, conns as u64);
    assert_eq!(stats.total.messages, (conns * messages) as u64);
    assert_eq!(per.values().sum::<usize>(), conns);
    match balance {
        // The acceptor hands each stream to the least-loaded shard, ties round-robin: all get some.
        Balance::Acceptor => assert_eq!(per.len(), shards, "every shard served: {per:?}"),
        // Whichever shard the kernel wakes accepts; which that is depends on who is busy, so only
        // the totals are checked here (the spread has a test of its own below).
        Balance::Shared => {}
        // The kernel hashes the peers' ports: 32 connections never all land on one of 4 sockets
        // in practice (probability 4^-31).
        _ => assert!(per.len() >= 2, "the kernel spread the connections: {per:?}"),
    }
}

#[test]
fn tcp_clients_of_both_languages_spread_over_shards_and_echoed() {
    many_clients_spread_and_echoed(Family::Inet);
}

#[test]
fn unix_clients_of_both_languages_spread_over_shards_and_echoed() {
    many_clients_spread_and_echoed(Family::Unix);
}

#[cfg(target_os = "linux")]
#[test]
fn tcp_on_linux_uses_one_reuse_port_socket_per_shard_and_unix_one_shared_socket() {
    let g = group(2, Address::inet("127.0.0.1", 0), ReactorConfig::default(), ListenOptions::new());
    assert_eq!(g.balance, Balance::ReusePort);
    g.stop();
    let (_dir, address) = unix_address();
    let g = group(2, address.clone(), ReactorConfig::default(), ListenOptions::new());
    assert_eq!(g.balance, Balance::Shared);
    g.stop();
    let path = address.unix_path().expect("a path").to_path_buf();
    assert!(!path.exists(), "the shared socket's file is removed when the group stops");
    let g = group(1, Address::inet("127.0.0.1", 0), ReactorConfig::default(), ListenOptions::new());
    assert_eq!(g.balance, Balance::Single);
    g.stop();
}

/// `listen_with` takes the balance asked for, or refuses it (before binding) where it cannot
/// serve: the acceptor spreads TCP by load where the kernel's hash would not.
#[cfg(target_os = "linux")]
#[test]
fn listen_with_takes_the_balance_asked_for_or_refuses_it() {
    let config = ReactorConfig::default;
    let mut two = Sharded::new(2, config(), |shard| Echo { shard, opens: None }).unwrap();
    let (_dir, unix) = unix_address();
    for (address, balance) in [
        (unix.clone(), Balance::ReusePort),
        (unix.clone(), Balance::Single),
        (Address::inet("127.0.0.1", 0), Balance::Single),
    ] {
        let r = two.listen_with(address.clone(), ListenOptions::new(), balance);
        assert!(matches!(r, Err(mpconn::Error::Config(_))), "{balance:?} on {address}: {r:?}");
    }
    assert!(!unix.unix_path().unwrap().exists(), "nothing bound for a refused balance");
    let mut one = Sharded::new(1, config(), |shard| Echo { shard, opens: None }).unwrap();
    let r = one.listen_with("127.0.0.1:0", ListenOptions::new(), Balance::Acceptor);
    assert!(matches!(r, Err(mpconn::Error::Config(_))), "the acceptor for one shard: {r:?}");
    // TCP through the acceptor: 12 connections one at a time over 3 shards, held open, land 4
    // on each (the least-loaded shard, ties in turn), where the kernel's hash spreads them as
    // it likes.
    let g = group_with(3, Address::inet("127.0.0.1", 0), config(), ListenOptions::new(), Some(Balance::Acceptor));
    assert_eq!(g.balance, Balance::Acceptor);
    let mut held = Vec::new();
    for i in 0..12 {
        let (_, c) =
            connect_to_shard(Client::new(g.address.clone()), WAIT).unwrap_or_else(|e| panic!("client {i}: {e}"));
        held.push(c);
    }
    let per = g.stop();
    println!("TCP through the acceptor, 12 connections on 3 shards: {per:?}");
    assert_eq!(per.values().copied().collect::<Vec<_>>(), [4, 4, 4], "{per:?}");
    // TCP on one socket every shard polls (the Unix default, asked for here): all served.
    let g = group_with(2, Address::inet("127.0.0.1", 0), config(), ListenOptions::new(), Some(Balance::Shared));
    assert_eq!(g.balance, Balance::Shared);
    let held: Vec<_> = (0..8)
        .map(|i| connect_to_shard(Client::new(g.address.clone()), WAIT).unwrap_or_else(|e| panic!("{i}: {e}")))
        .collect();
    let per = g.stop();
    println!("TCP on a shared socket, 8 connections on 2 shards: {per:?}");
    assert_eq!(per.values().sum::<usize>(), 8, "{per:?}");
    drop(held);
}

/// The worst case for a socket the shards share: clients arrive one at a time while every shard
/// idles, so the kernel wakes the same first waiting shard for each. A shard ahead of the
/// least-loaded by more than 1/8 of its load plus 4 hands the stream over: 96 connections held
/// open end up within that of each other on 4 shards, and all are served.
#[cfg(target_os = "linux")]
#[test]
fn connections_arriving_one_at_a_time_on_a_shared_unix_socket_stay_spread() {
    let (_dir, address) = unix_address();
    let shards = 4;
    let g = group(shards, address, ReactorConfig::default(), ListenOptions::new().authkey(KEY));
    assert_eq!(g.balance, Balance::Shared);
    let mut held = Vec::new();
    for i in 0..96 {
        let mut c = Client::new(g.address.clone()).authkey(KEY).connect().expect("connect");
        c.send_bytes(format!("hello {i}").as_bytes()).unwrap();
        assert_eq!(c.recv_bytes().unwrap(), format!("hello {i}").into_bytes());
        held.push(c);
    }
    let per = g.stop();
    println!("96 connections, one at a time, 4 shards: {per:?}");
    assert_eq!(per.values().sum::<usize>(), 96);
    assert_eq!(per.len(), shards, "every shard holds some: {per:?}");
    let (least, most) = (per.values().min().copied().unwrap_or(0), per.values().max().copied().unwrap_or(0));
    assert!(most <= least + least / 8 + 5, "spread within the hand-over slack: {per:?}");
}

/// Connections held open on every shard; the handle sends to each one (each on its own shard),
/// runs a closure on every shard, then stops them all: every client sees its message, then the
/// close.
fn handle_reaches_every_shard(address: Address) {
    let shards = 3;
    let g = group(shards, address, ReactorConfig::default(), ListenOptions::new().authkey(KEY));
    let n = 12;
    let mut conns: Vec<_> =
        (0..n).map(|_| Client::new(g.address.clone()).authkey(KEY).connect().expect("connect")).collect();
    let mut ids = Vec::new();
    let until = Instant::now() + WAIT;
    while ids.len() < n && Instant::now() < until {
        if let Ok(x) = g.opens.recv_timeout(Duration::from_millis(100)) {
            ids.push(x);
        }
    }
    assert_eq!(ids.len(), n, "every connection opened");
    for &(_, id) in &ids {
        g.handle.send(id, format!("to {id}").into_bytes()).unwrap();
    }
    let mut got: Vec<String> =
        conns.iter_mut().map(|c| String::from_utf8(c.recv_bytes().expect("the handle's message")).unwrap()).collect();
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|(_, id)| format!("to {id}")).collect();
    want.sort();
    assert_eq!(got, want, "each connection got the message addressed to it");
    let (tx, rx) = mpsc::channel();
    g.handle
        .call_each(move |shard, ctx| {
            let _ = tx.send((shard, ctx.entry_count()));
        })
        .unwrap();
    let mut seen: Vec<(usize, usize)> =
        (0..shards).map(|_| rx.recv_timeout(WAIT).expect("each shard ran it")).collect();
    seen.sort();
    let per: BTreeMap<usize, usize> = ids.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(*s).or_insert(0) += 1;
        m
    });
    println!("{} over {shards} shards: connections per shard {per:?}; entries per shard {seen:?}", g.address);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), (0..shards).collect::<Vec<_>>());
    assert_eq!(per.len(), shards, "every shard hosts connections: {per:?}");
    // An id of no shard of this group is refused, not sent somewhere.
    let stats = g.handle.stats();
    assert_eq!(stats.total.connections, n);
    g.stop();
    for c in &mut conns {
        assert!(c.recv_bytes().is_err(), "the stop closed the connection");
    }
}

#[test]
fn a_handle_reaches_every_shard_over_unix() {
    let (_dir, address) = unix_address();
    handle_reaches_every_shard(address);
}

#[cfg(target_os = "linux")]
#[test]
fn a_handle_reaches_every_shard_over_tcp_when_the_kernel_spread_them() {
    // The kernel decides the spread; the handle must reach wherever it put them. (Every-shard
    // coverage is asserted above for the acceptor; here 12 connections over 3 sockets.)
    let shards = 3;
    let g = group(shards, Address::inet("127.0.0.1", 0), ReactorConfig::default(), ListenOptions::new().authkey(KEY));
    let mut conns: Vec<_> =
        (0..12).map(|_| Client::new(g.address.clone()).authkey(KEY).connect().expect("connect")).collect();
    let ids: Vec<_> = (0..12).map(|_| g.opens.recv_timeout(WAIT).expect("opened")).collect();
    for &(_, id) in &ids {
        g.handle.send(id, b"hello".to_vec()).unwrap();
    }
    for c in &mut conns {
        assert_eq!(c.recv_bytes().unwrap(), b"hello");
    }
    let shards_used: std::collections::BTreeSet<usize> = ids.iter().map(|x| x.0).collect();
    println!("TCP, {shards} shards: connections landed on shards {shards_used:?}");
    g.stop();
}

#[test]
fn a_stop_in_one_shard_stops_the_group() {
    let (_dir, address) = unix_address();
    let g = group(3, address, ReactorConfig::default(), ListenOptions::new().authkey(KEY));
    let mut others: Vec<_> = (0..5).map(|_| Client::new(g.address.clone()).authkey(KEY).connect().unwrap()).collect();
    let mut c = Client::new(g.address.clone()).authkey(KEY).connect().unwrap();
    c.send_bytes(b"stop the group").unwrap();
    let t = g.t;
    let until = Instant::now() + WAIT;
    while !t.is_finished() && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(t.is_finished(), "the group stopped");
    t.join().unwrap().unwrap();
    for o in &mut others {
        assert!(o.recv_bytes().is_err());
    }
    let stale = g.handle.send(ConnId::clone(&g.opens.recv().unwrap().1), b"late".to_vec());
    assert!(stale.is_err(), "a stopped group refuses: {stale:?}");
}

#[test]
fn ids_name_their_shard_and_are_unique_across_shards() {
    let (_dir, address) = unix_address();
    let g = group(4, address, ReactorConfig::default(), ListenOptions::new());
    let _conns: Vec<_> = (0..8).map(|_| Client::new(g.address.clone()).connect().unwrap()).collect();
    let ids: Vec<(usize, ConnId)> = (0..8).map(|_| g.opens.recv_timeout(WAIT).unwrap()).collect();
    let texts: std::collections::BTreeSet<String> = ids.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(texts.len(), 8, "unique: {texts:?}");
    for (shard, id) in &ids {
        assert!(id.to_string().starts_with(&format!("conn#{shard}.")), "{id} on shard {shard}");
    }
    g.stop();
}

#[test]
fn an_id_of_another_group_reaches_none_of_this_groups_connections() {
    // Two groups of one shard each: every connection is on shard 0, at the same slot.
    let (_dir_a, a) = unix_address();
    let (_dir_b, b) = unix_address();
    let (ga, gb) = (
        group(1, a, ReactorConfig::default(), ListenOptions::new()),
        group(1, b, ReactorConfig::default(), ListenOptions::new()),
    );
    let mut client_a = Client::new(ga.address.clone()).connect().unwrap();
    let mut client_b = Client::new(gb.address.clone()).connect().unwrap();
    let (_, id_a) = ga.opens.recv_timeout(WAIT).unwrap();
    let (_, id_b) = gb.opens.recv_timeout(WAIT).unwrap();
    assert_ne!(id_a, id_b, "two groups gave the same id: {id_a}");
    // A's handle with B's id: not delivered to A's client (it was, before: the ids matched).
    let _ = ga.handle.send(id_b, b"meant for B".to_vec());
    ga.handle.send(id_a, b"meant for A".to_vec()).unwrap();
    gb.handle.send(id_b, b"meant for B".to_vec()).unwrap();
    assert_eq!(client_a.recv_bytes().unwrap(), b"meant for A", "A's client got another group's message first");
    assert_eq!(client_b.recv_bytes().unwrap(), b"meant for B");
    assert!(!client_a.poll(Some(Duration::from_millis(200))).unwrap(), "A's client got a second message");
    ga.stop();
    gb.stop();
}

#[test]
fn max_connections_applies_per_shard_through_the_acceptor() {
    let (_dir, address) = unix_address();
    let options = ListenOptions::new().max_connections(2);
    let g = group_with(2, address, ReactorConfig::default(), options, Some(Balance::Acceptor));
    assert_eq!(g.balance, Balance::Acceptor);
    // Four fit (two per shard); the fifth waits in the backlog until one closes.
    let mut held: Vec<_> = (0..4).map(|_| Client::new(g.address.clone()).connect().unwrap()).collect();
    for c in &mut held {
        c.send_bytes(b"x").unwrap();
        assert_eq!(c.recv_bytes().unwrap(), b"x");
    }
    let fifth = {
        let a = g.address.clone();
        thread::spawn(move || {
            let mut c = Client::new(a).connect()?;
            c.send_bytes(b"fifth")?;
            c.recv_bytes()
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert_eq!(g.handle.stats().total.opened, 4, "the fifth is not served while both shards are full");
    drop(held.pop());
    let reply = fifth.join().unwrap().expect("served once a slot freed");
    assert_eq!(reply, b"fifth");
    g.stop();
}

/// A stream one shard accepts from a shared socket and hands to another counts against the
/// receiving shard's limit: clients arriving at once at shards of `max` each are served `max` per
/// shard at most, and the rest once some close. An outside tester saw 14 + 10 served, and
/// 100 / 50 / 81 / 97 of 50 each on 4 shards, while handed streams counted nowhere; then CI saw
/// [10, 14] once more, when a shard's own accepts raced a sibling handing it streams by its
/// last published count. Each client's message makes its shard sleep a few milliseconds, so
/// turns are long and the published counts stale while the shards race.
#[test]
fn max_connections_holds_per_shard_when_a_shared_socket_hands_streams_over() {
    for round in 0..2 {
        fill_shards(Balance::Shared, 2, 10, 30, round);
        fill_shards(Balance::Shared, 2, 40, 100, round);
        fill_shards(Balance::Shared, 3, 30, 120, round);
    }
}

/// The same through the acceptor thread (the only balance off Linux, chosen here with
/// `listen_with`), over Unix sockets and TCP.
#[test]
fn max_connections_holds_per_shard_through_the_acceptor_thread() {
    for round in 0..2 {
        fill_shards(Balance::Acceptor, 2, 10, 30, round);
        fill_shards(Balance::Acceptor, 3, 30, 120, round);
    }
}

/// `clients` connect at once to `shards` shards of `max` each spread by `balance` (a Unix socket;
/// for the acceptor, every other round TCP): every shard fills to its limit and no further, and
/// every client is served once some close.
fn fill_shards(balance: Balance, shards: usize, max: usize, clients: usize, round: usize) {
    let (_dir, unix) = unix_address();
    let address = match balance {
        Balance::Acceptor if round % 2 == 1 => Address::inet("127.0.0.1", 0),
        _ => unix,
    };
    let options = ListenOptions::new().max_connections(max).backlog(256);
    let g = group_with(shards, address, ReactorConfig::default(), options, Some(balance));
    assert_eq!(g.balance, balance);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (a, release) = (g.address.clone(), release_rx.clone());
            thread::spawn(move || -> mpconn::Result<Vec<u8>> {
                let mut c = Client::new(a).connect()?;
                c.set_read_timeout(Some(WAIT))?;
                c.send_bytes(format!("sleep {}", 2 + i % 7).as_bytes())?;
                let echo = c.recv_bytes()?;
                // Held open until the test lets one client go.
                let _ = release.lock().unwrap().recv_timeout(WAIT);
                Ok(echo)
            })
        })
        .collect();
    // Bounded wait for every shard to fill.
    let full = (shards * max) as u64;
    let deadline = std::time::Instant::now() + WAIT;
    while g.handle.stats().total.opened < full && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let stats = g.handle.stats();
    let per_shard: Vec<usize> = stats.shards.iter().map(|s| s.connections).collect();
    println!("{balance:?} round {round}: {clients} clients at once, {max} per shard: {per_shard:?} served");
    assert!(per_shard.iter().all(|&n| n <= max), "a shard holds more than its limit: {per_shard:?}");
    assert_eq!(stats.total.opened, full, "every shard fills: {per_shard:?}");
    for _ in 0..clients {
        let _ = release_tx.send(());
    }
    for (i, c) in threads.into_iter().enumerate() {
        let echo = c.join().unwrap().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(echo, format!("sleep {}", 2 + i % 7).as_bytes());
    }
    g.stop();
}

/// A shard that is full but woken by the kernel for a client of the shared socket (the kernel
/// wakes one waiting shard, and a shard whose last accept of a batch took its last slot stays in
/// the poller) passes the client to a sibling with room instead of leaving it in the backlog.
/// Found from outside: a shard that filled to 4 with one burst was woken alone for the 5th
/// client, which then waited, with the other shard empty, until a held connection closed (30
/// of 41 rounds stuck with two CPU hogs running, 3 of 60 without). A thread spins here while
/// the rounds run, as the hogs did; a stuck round fails at its first.
#[test]
fn a_full_shard_woken_for_a_client_passes_it_to_a_sibling_with_room() {
    const MAX: usize = 4;
    const ROUNDS: usize = 60;
    let spin = Arc::new(AtomicBool::new(true));
    let hog = {
        let spin = spin.clone();
        thread::spawn(move || {
            let t0 = Instant::now();
            while spin.load(Ordering::Relaxed) && t0.elapsed() < WAIT {
                std::hint::spin_loop();
            }
        })
    };
    for round in 0..ROUNDS {
        let (_dir, address) = unix_address();
        let g = group(2, address, ReactorConfig::default(), ListenOptions::new().max_connections(MAX));
        // A burst of MAX at once: often one shard takes them all in one batch.
        let mut held: Vec<_> = (0..MAX).map(|_| Client::new(g.address.clone()).connect().unwrap()).collect();
        for c in &mut held {
            c.set_read_timeout(Some(WAIT)).unwrap();
            c.send_bytes(b"held").unwrap();
            assert_eq!(c.recv_bytes().unwrap(), b"held");
        }
        let per_shard: Vec<usize> = g.handle.stats().shards.iter().map(|s| s.connections).collect();
        // One more, with room for MAX more: served while every held one stays open. (Ten
        // seconds: a loaded machine serves it in milliseconds; a stuck one is never served.)
        let mut fifth = Client::new(g.address.clone()).connect().unwrap();
        fifth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        fifth.send_bytes(b"fifth").unwrap();
        let reply = fifth.recv_bytes();
        assert!(
            matches!(&reply, Ok(r) if r == b"fifth"),
            "round {round}: held per shard {per_shard:?}, the next client not served: {reply:?}"
        );
        drop(held);
        drop(fifth);
        g.stop();
    }
    spin.store(false, Ordering::Relaxed);
    hog.join().unwrap();
}

/// Whether a client of `address` is served within `within`: it connects, sends and gets its echo.
fn served_within(address: &Address, within: Duration) -> std::thread::JoinHandle<mpconn::Result<Vec<u8>>> {
    let address = address.clone();
    thread::spawn(move || {
        let mut c = Client::new(address).connect()?;
        c.set_read_timeout(Some(within))?;
        c.send_bytes(b"waiting")?;
        c.recv_bytes()
    })
}

/// With every shard full, a client waits in the backlog; a close on *any* shard lets it in.
/// The kernel wakes one shard for it, which (everything full) leaves the poller; before, only a
/// close on that shard resumed accepting, so a close elsewhere (a shard filled by streams handed
/// to it, never paused) admitted nobody and the client waited beside the room (found from
/// outside: 3 shards of 1, stuck in up to 5 of 24 rounds). Each round closes on another shard.
#[test]
fn a_close_on_any_shard_lets_a_client_waiting_at_the_limit_in() {
    const SHARDS: usize = 3;
    const ROUNDS: usize = 24;
    for round in 0..ROUNDS {
        let (_dir, address) = unix_address();
        let g = group(SHARDS, address, ReactorConfig::default(), ListenOptions::new().max_connections(1));
        let mut held: Vec<(usize, mpconn::Connection)> =
            (0..SHARDS).map(|_| connect_to_shard(Client::new(g.address.clone()), WAIT).unwrap()).collect();
        let mut shards: Vec<usize> = held.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        assert_eq!(shards, (0..SHARDS).collect::<Vec<_>>(), "round {round}: one per shard");
        let waiting = served_within(&g.address, Duration::from_secs(10));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(g.handle.stats().total.opened, SHARDS as u64, "round {round}: nobody over the limit");
        // Close the one on shard (round mod SHARDS): the waiting client gets that room.
        let target = round % SHARDS;
        held.retain(|(s, _)| *s != target);
        let reply = waiting.join().unwrap();
        assert!(
            matches!(&reply, Ok(r) if r == b"waiting"),
            "round {round}: a close on shard {target} let nobody in: {reply:?}, per shard {:?}",
            g.handle.stats().shards.iter().map(|s| s.connections).collect::<Vec<_>>()
        );
        drop(held);
        g.stop();
    }
}

/// A connection closes on a full group and a client arrives at once, 300 times over 4 shards of
/// 1: every client is served. The close's shard retries an accept that may find nothing yet,
/// holding a slot for it while a shard woken for the client finds no room and pauses; the slot
/// must go back by the pause/close handshake, or the client waits beside it (found from
/// outside; a race: this loop caught it in 3 of 61 runs on a loaded host, the trace showed the
/// order every time).
#[test]
fn a_client_arriving_as_a_connection_closes_is_served() {
    const SHARDS: usize = 4;
    const ROUNDS: usize = 300;
    let (_dir, address) = unix_address();
    let g = group(SHARDS, address, ReactorConfig::default(), ListenOptions::new().max_connections(1));
    let mut held: Vec<(usize, mpconn::Connection)> =
        (0..SHARDS).map(|_| connect_to_shard(Client::new(g.address.clone()), WAIT).unwrap()).collect();
    for round in 0..ROUNDS {
        let target = round % SHARDS;
        let pos = held.iter().position(|(s, _)| *s == target).expect("one held per shard");
        drop(held.swap_remove(pos));
        let next = thread::spawn({
            let address = g.address.clone();
            move || connect_to_shard(Client::new(address.clone()), Duration::from_secs(10))
        });
        match next.join().unwrap() {
            Ok(served) => held.push(served),
            Err(e) => panic!(
                "round {round}: after a close on shard {target} the next client was not served: {e}; per shard {:?}",
                g.handle.stats().shards.iter().map(|s| s.connections).collect::<Vec<_>>()
            ),
        }
    }
    drop(held);
    g.stop();
}

/// A full shard woken for a client, whose only sibling with room is busy in its handler (more
/// than the 50 ms that marks a shard stuck), hands the client to that sibling rather than
/// leaving it in the backlog: it is served when the sibling comes back (found from outside:
/// not served within 4 s in 11 of 12 rounds; the kernel does not report it again).
#[test]
fn a_client_is_not_left_waiting_beside_a_busy_shard_with_room() {
    for round in 0..6 {
        let (_dir, address) = unix_address();
        let g = group(2, address, ReactorConfig::default(), ListenOptions::new().max_connections(2));
        let mut held: Vec<(usize, mpconn::Connection)> =
            (0..3).map(|_| connect_to_shard(Client::new(g.address.clone()), WAIT).unwrap()).collect();
        let per_shard: Vec<usize> = g.handle.stats().shards.iter().map(|s| s.connections).collect();
        let Some(lone) = (0..2).find(|&s| per_shard[s] == 1) else {
            g.stop();
            continue; // the three did not split 2 + 1 this round
        };
        let (_, busy) = held.iter_mut().find(|(s, _)| *s == lone).unwrap();
        busy.send_bytes(b"sleep 400").unwrap();
        thread::sleep(Duration::from_millis(100));
        let reply = served_within(&g.address, Duration::from_secs(10)).join().unwrap();
        assert!(
            matches!(&reply, Ok(r) if r == b"waiting"),
            "round {round}: per shard {per_shard:?}, shard {lone} busy: the next client not served: {reply:?}"
        );
        drop(held);
        g.stop();
    }
}

/// A shard whose handler blocks is not handed new streams: while the least-loaded shard sleeps
/// in a handler, the other (woken alone by the kernel, since the sleeper is not waiting) keeps
/// what it accepts instead of handing it over, where it would wait out the sleep (an outside
/// tester saw connects take 2.9 s, one per hand-over to a shard stuck for 3 s).
#[test]
fn a_shard_stuck_in_its_handler_is_not_handed_new_connections() {
    const SLEEP: Duration = Duration::from_millis(3000);
    let (_dir, address) = unix_address();
    let g = group(2, address, ReactorConfig::default(), ListenOptions::new());
    let connect = |a: &Address| -> mpconn::Connection {
        let mut c = Client::new(a.clone()).connect().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.send_bytes(b"hi").unwrap();
        assert_eq!(c.recv_bytes().unwrap(), b"hi");
        c
    };
    // One connection on each shard at least (the kernel and the hand-over choose; bounded).
    let mut held: Vec<(usize, mpconn::Connection)> = Vec::new();
    for _ in 0..50 {
        let c = connect(&g.address);
        let (shard, _) = g.opens.recv_timeout(WAIT).unwrap();
        held.push((shard, c));
        if held.iter().any(|(s, _)| *s == 0) && held.iter().any(|(s, _)| *s == 1) {
            break;
        }
    }
    let counts = [0, 1].map(|s| held.iter().filter(|(h, _)| *h == s).count());
    let (stuck, busy) = if counts[0] <= counts[1] { (0, 1) } else { (1, 0) };
    let pos = held.iter().position(|(s, _)| *s == stuck).expect("a connection on each shard");
    held[pos].1.send_bytes(format!("sleep {}", SLEEP.as_millis()).as_bytes()).unwrap();
    let asleep = Instant::now();
    thread::sleep(Duration::from_millis(200));
    let mut landed = Vec::new();
    for _ in 0..16 {
        // Only connects begun while the shard surely slept count (a loaded machine may be slow).
        let during = asleep.elapsed() < SLEEP - Duration::from_millis(300);
        let c = connect(&g.address);
        let (shard, _) = g.opens.recv_timeout(WAIT).unwrap();
        if during {
            landed.push(shard);
        }
        held.push((shard, c));
    }
    let reply = held[pos].1.recv_bytes().unwrap();
    assert!(reply.starts_with(b"sleep"));
    println!("shard {stuck} asleep, {} connected on shard {busy} before: landed on {landed:?}", counts[busy]);
    assert!(landed.iter().all(|&s| s == busy), "handed to the sleeping shard {stuck}: {landed:?}");
    drop(held);
    g.stop();
}

/// Unfinished large messages on every shard: each shard's budget (the group's divided by the
/// shards) refuses reads on that shard and its count stays within its share plus the slack the
/// budget allows (the leader's whole message, and per connection its 1 MiB of small input with
/// the buffer's doubling past it), far below the 8 × 20 MiB per shard the attackers would park
/// without a budget; a new client is still served.
#[test]
fn the_memory_budget_is_split_and_holds_per_shard() {
    const SHARDS: usize = 2;
    const GROUP_BUDGET: usize = 32 * MIB;
    const PER_SHARD_ATTACKERS: usize = 8;
    const DECLARED: usize = 24 * MIB;
    const SENT: usize = 20 * MIB;
    let (_dir, address) = unix_address();
    let config = ReactorConfig::default().memory_budget(Some(GROUP_BUDGET));
    let options = ListenOptions::new()
        .authkey(KEY)
        .connection(ConnectionOptions::new().authkey(KEY).partial_message_timeout(Some(Duration::from_secs(120))));
    let g = group(SHARDS, address, config, options);
    let path = g.address.to_string();
    let socks: Vec<UnixStream> = (0..SHARDS * PER_SHARD_ATTACKERS).map(|_| split_unix(&path, Some(KEY)).0).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Per shard, and the group's total at each sample (the last entry).
    let peaks = Arc::new(Mutex::new(vec![0usize; SHARDS + 1]));
    let sampler = {
        let (h, stop, peaks) = (g.handle.clone(), stop.clone(), peaks.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = h.stats();
                let mut p = peaks.lock().unwrap();
                for (i, sh) in s.shards.iter().enumerate() {
                    p[i] = p[i].max(sh.budget_held);
                }
                p[SHARDS] = p[SHARDS].max(s.shards.iter().map(|sh| sh.budget_held).sum());
                drop(p);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(4);
    let chunk = Arc::new(vec![0u8; MIB]);
    let attackers: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            let chunk = chunk.clone();
            thread::spawn(move || {
                s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
                s.write_all(&(DECLARED as u32).to_be_bytes()).unwrap();
                let mut sent = 0;
                while sent < SENT && Instant::now() < until {
                    match s.write(&chunk[..chunk.len().min(SENT - sent)]) {
                        Ok(k) => sent += k,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                (s, sent)
            })
        })
        .collect();
    let held: Vec<(UnixStream, usize)> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    // A good client is served meanwhile, on whichever shard it lands.
    let mut good = Client::new(g.address.clone()).authkey(KEY).connect().unwrap();
    good.send_bytes(b"still served").unwrap();
    assert_eq!(good.recv_bytes().unwrap(), b"still served");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let stats = g.handle.stats();
    let peaks = peaks.lock().unwrap().clone();
    let per_shard_cap = GROUP_BUDGET / SHARDS;
    // One leader's message in the whole group (the shards share the lead), and each
    // attacker's small input with its buffer's doubling.
    let slack = DECLARED + SHARDS * PER_SHARD_ATTACKERS * 2 * MIB + MIB;
    println!(
        "budget {} MiB over {SHARDS} shards ({} MiB each), {} attackers sent {:?} MiB: peak held per shard {:?} KiB, \
         in total {} KiB (bound {} KiB), refusals per shard {:?}",
        GROUP_BUDGET / MIB,
        per_shard_cap / MIB,
        held.len(),
        held.iter().map(|h| h.1 / MIB).collect::<Vec<_>>(),
        peaks[..SHARDS].iter().map(|p| p / 1024).collect::<Vec<_>>(),
        peaks[SHARDS] / 1024,
        (GROUP_BUDGET + slack) / 1024,
        stats.shards.iter().map(|s| s.budget_refusals).collect::<Vec<_>>(),
    );
    for (i, s) in stats.shards.iter().enumerate() {
        assert!(peaks[i] <= per_shard_cap + slack, "shard {i} held {} MiB", peaks[i] / MIB);
        assert!(s.budget_refusals > 0, "shard {i}'s budget never refused: the test did not reach it");
    }
    assert!(peaks[SHARDS] <= GROUP_BUDGET + slack, "the group held {} MiB in total", peaks[SHARDS] / MIB);
    drop(held);
    g.stop();
}

/// The shards share one memory-budget lead, so it must pass between them: large messages on
/// both shards under pressure, each shard refusing reads, every message arriving whole (a lead
/// given back without telling the other shard would leave its senders waiting until their
/// partial-message deadline).
#[test]
fn the_budgets_lead_passes_between_shards_and_every_large_message_arrives() {
    const SHARDS: usize = 2;
    const BUDGET: usize = 8 * MIB;
    const SIZE: usize = 6 * MIB;
    const CLIENTS: u8 = 10;
    let (_dir, address) = unix_address();
    let config = ReactorConfig::default().memory_budget(Some(BUDGET));
    let g = group(SHARDS, address, config, ListenOptions::new());
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let address = g.address.clone();
            thread::spawn(move || {
                let mut c = Client::new(address).connect().unwrap();
                c.set_read_timeout(Some(WAIT)).unwrap();
                let m = common::servers::message(seed, 0, SIZE);
                c.send_bytes(&m).unwrap();
                let echoed = c.recv_bytes().unwrap();
                assert!(echoed == m, "client {seed}'s message came back changed");
                started.elapsed()
            })
        })
        .collect();
    let took: Vec<Duration> = clients.into_iter().map(|t| t.join().expect("every client's message arrives")).collect();
    let stats = g.handle.stats();
    let refusals: Vec<u64> = stats.shards.iter().map(|s| s.budget_refusals).collect();
    let spread = g.stop();
    println!(
        "{CLIENTS} clients x {} MiB over {SHARDS} shards {spread:?}, budget {} MiB: refusals per shard {refusals:?}, echoed after {took:?}",
        SIZE / MIB,
        BUDGET / MIB
    );
    assert_eq!(spread.len(), SHARDS, "both shards served clients: {spread:?}");
    // Two messages at once on one shard are 12 MiB against the group's 8: that shard's budget
    // refuses reads until the lead comes back to it. (A shard the kernel gave a single client
    // may have read it while the lead was free: CI once spread 6 clients 5 to 1.)
    for (shard, &served) in &spread {
        if served >= 2 {
            assert!(refusals[*shard] > 0, "shard {shard} with {served} clients never refused a read: {refusals:?}");
        }
    }
}

const PY_HOLD_AND_ECHO: &str = r#"
import sys
from multiprocessing.connection import Client
address, conns = sys.argv[1], int(sys.argv[2])
cs = [Client(address) for _ in range(conns)]
for k, c in enumerate(cs):
    c.send_bytes(b'm%d' % k)
for k, c in enumerate(cs):
    assert c.recv_bytes() == b'm%d' % k
for c in cs:
    c.close()
print('ok')
"#;

/// Lines of a server process until `n` lines starting with `close ` came (bounded by `WAIT`).
fn lines_until_closes(server: &common::servers::Child2, n: usize) -> Vec<String> {
    let until = Instant::now() + WAIT;
    let mut lines = Vec::new();
    while lines.iter().filter(|l: &&String| l.starts_with("close ")).count() < n {
        let left = until.saturating_duration_since(Instant::now());
        match server.lines.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("{}: {} close lines within {WAIT:?}; got {lines:?}", server.label, n),
        }
    }
    lines
}

/// `mpconn listen --reactors 3 --echo` on a Unix socket: CPython clients held open at once are
/// echoed; the `open CONN from PEER`, `message CONN (N bytes): REPR` and `close CONN: REASON` lines
/// are kept, each connection's name is unique and says its reactor, and all three reactors serve.
#[test]
fn listen_command_with_reactors_keeps_its_lines_and_names_connections_uniquely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.sock");
    let mut cmd = Command::new(common::servers::mpconn());
    cmd.args(["listen", path.to_str().unwrap(), "--reactors", "3", "--echo"]);
    let server = common::servers::Child2::spawn(cmd, "mpconn listen --reactors 3");
    server.expect_line("listening on");
    // Enough that the shards' hand-over spreads them whatever the kernel's wake-ups (a shard
    // keeps what it accepts until it is more than 4 ahead of the least loaded, so 9 could all
    // land on two shards when the machine is busy).
    let conns = 24;
    let out = Command::new("python3")
        .args(["-c", PY_HOLD_AND_ECHO, path.to_str().unwrap(), &conns.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = lines_until_closes(&server, conns);
    let name = |l: &str, prefix: &str| -> String {
        l.strip_prefix(prefix).and_then(|r| r.split([' ', ':']).next()).unwrap_or_default().to_string()
    };
    let opens: std::collections::BTreeSet<String> =
        lines.iter().filter(|l| l.starts_with("open ")).map(|l| name(l, "open ")).collect();
    let messages = lines.iter().filter(|l| l.starts_with("message ") && l.contains(" bytes): b'm")).count();
    let shards: std::collections::BTreeSet<String> =
        opens.iter().map(|c| c.trim_start_matches("conn#").split('.').next().unwrap_or_default().to_string()).collect();
    println!("listen --reactors 3: connections {opens:?}");
    assert_eq!(opens.len(), conns, "unique names: {lines:?}");
    assert_eq!(messages, conns, "{lines:?}");
    assert!(lines.iter().filter(|l| l.starts_with("open ")).all(|l| l.contains(" from ")), "{lines:?}");
    assert_eq!(shards.len(), 3, "every reactor served: {opens:?}");
    for c in &opens {
        assert_eq!(c.matches('.').count(), 2, "conn#SHARD.SLOT.GENERATION: {c}");
    }
}

/// `examples/echo_server --reactors 2` over TCP and Unix: CPython and Rust clients echoed.
#[test]
fn echo_server_example_with_reactors_echoes_everyone() {
    let exe = common::servers::echo_server_example();
    let dir = tempfile::tempdir().unwrap();
    for address in ["127.0.0.1:0".to_string(), dir.path().join("echo.sock").to_string_lossy().into_owned()] {
        let mut cmd = Command::new(&exe);
        cmd.args([address.as_str(), "--authkey", KEY, "--reactors", "2"]);
        let server = common::servers::Child2::spawn(cmd, "echo_server --reactors 2");
        let bound: Address = server.expect_line("listening on").parse().unwrap();
        clients(&bound, 4, 2, 3, 10);
        println!("echo_server --reactors 2 on {bound}: 10 connections echoed");
    }
}
