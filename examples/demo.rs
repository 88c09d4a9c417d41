//! A self-contained run: a listener on a fresh Unix socket (no configuration), a number of
//! authenticated clients on threads, each doing round trips of bytes and pickled objects, and a
//! summary. `cargo run --release --example demo -- [CLIENTS] [ROUND_TRIPS]`.

use std::thread;
use std::time::Instant;

use mpconn::{AuthKey, Client, Listener};

fn main() -> mpconn::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let clients = args.next().transpose().map_err(|e| mpconn::Error::Config(format!("CLIENTS: {e}")))?.unwrap_or(8);
    let trips =
        args.next().transpose().map_err(|e| mpconn::Error::Config(format!("ROUND_TRIPS: {e}")))?.unwrap_or(10_000);

    let key = AuthKey::generate()?;
    let mut listener = Listener::builder().authkey(key.clone()).bind()?;
    println!("listening on {} ({})", listener.address(), listener.address().family());

    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (address, key) = (listener.address().clone(), key.clone());
        handles.push(thread::spawn(move || -> mpconn::Result<()> {
            let mut conn = Client::new(address).authkey(key).connect()?;
            for i in 0..trips {
                conn.send_bytes(&(i as u64).to_le_bytes())?;
                let back = conn.recv_bytes()?;
                if back != (i as u64).to_le_bytes() {
                    return Err(mpconn::Error::Config(format!("round trip {i} came back as {back:?}")));
                }
            }
            conn.send(&("done", trips as i64))?;
            Ok(())
        }));
    }
    let mut servers = Vec::new();
    for _ in 0..clients {
        let mut conn = listener.accept()?;
        servers.push(thread::spawn(move || -> mpconn::Result<(String, i64)> {
            for _ in 0..trips {
                let m = conn.recv_bytes()?;
                conn.send_bytes(&m)?;
            }
            conn.recv()
        }));
    }
    for h in handles {
        h.join().expect("client thread")?;
    }
    for s in servers {
        let (word, n) = s.join().expect("server thread")?;
        assert_eq!((word.as_str(), n), ("done", trips as i64));
    }
    let elapsed = start.elapsed();
    let total = clients * trips;
    println!(
        "{clients} authenticated clients, {total} round trips in {:.2} s: {:.0} round trips/s, {:.1} µs each per client",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / trips as f64
    );
    Ok(())
}
