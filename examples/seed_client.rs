//! The seed's client in Rust, against the seed's Python listener (or the Rust one):
//!
//! ```text
//! python3 examples/python/seed_listener.py            # or: cargo run --example seed_listener
//! cargo run --example seed_client -- [ADDRESS]
//! ```
//! Prints what it receives in a Python-like form. The dialect (CPython or `processing`) is
//! detected from the listener's challenge.

use std::io::Write;

use mpconn::Client;
use mpconn::pickle::{Value, repr};

/// Connects, receives the seed's three messages and writes them to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> mpconn::Result<()> {
    let address = args.iter().find(|a| !a.starts_with("--")).map(String::as_str).unwrap_or("localhost:6000");
    let mut conn = Client::new(address).authkey("secret password").connect()?;

    // The seed's Python listener sends [2.25, None, 'junk', float]: the type object arrives as a
    // Global naming it (`builtins.float`); nothing is run. A decode error would leave the
    // connection usable.
    match conn.recv_value() {
        Ok(v) => writeln!(out, "{}", repr(&v))?,
        Err(e) => writeln!(out, "could not decode the object: {e}")?,
    }
    let hello = conn.recv_bytes()?;
    writeln!(out, "{}", repr(&Value::Bytes(hello)))?;
    let mut arr = [0u8; 5 * 4];
    let n = conn.recv_bytes_into(&mut arr)?;
    writeln!(out, "{n}")?;
    let ints: Vec<String> = arr.chunks(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]).to_string()).collect();
    writeln!(out, "array('i', [{}])", ints.join(", "))?;
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args, &mut std::io::stdout()) {
        eprintln!("seed_client: {e}");
        std::process::exit(1);
    }
}
