//! The seed's listener in Rust: a Python `Client` (or `processing` client) prints
//! `[2.25, None, 'junk']`, `hello`, `8` and `array('i', [42, 1729, 0, 0, 0])`.
//!
//! ```text
//! cargo run --example seed_listener -- [ADDRESS] [--dialect processing]
//! python3 examples/python/seed_client.py [ADDRESS]
//! ```
//! ADDRESS defaults to `localhost:6000`; the key is `secret password`.

use std::io::Write;

use mpconn::pickle::Value;
use mpconn::{Dialect, Listener};

/// Serves one client; writes what it does to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> mpconn::Result<()> {
    let mut dialect = Dialect::Cpython;
    let mut address = "localhost:6000".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dialect" => {
                dialect = it.next().ok_or(mpconn::Error::Config("--dialect needs a value".into()))?.parse()?
            }
            other => address = other.to_string(),
        }
    }
    let mut listener =
        Listener::builder().address(address.as_str()).authkey("secret password").dialect(dialect).bind()?;
    writeln!(out, "listening on {}", listener.address())?;
    out.flush()?;

    let mut conn = listener.accept()?;
    writeln!(
        out,
        "connection accepted from {}",
        listener.last_accepted().map(ToString::to_string).unwrap_or_default()
    )?;

    // Python 2's `str` is bytes: a `processing` peer gets 'junk' as a byte string.
    let junk = match dialect {
        Dialect::Processing => Value::Bytes(b"junk".to_vec()),
        _ => Value::Str("junk".into()),
    };
    conn.send_value(&Value::from(vec![Value::Float(2.25), Value::None, junk]))?;
    conn.send_bytes(b"hello")?;
    let array: Vec<u8> = [42i32, 1729].iter().flat_map(|n| n.to_ne_bytes()).collect();
    conn.send_bytes(&array)?;
    conn.close()?;
    listener.close();
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args, &mut std::io::stdout()) {
        eprintln!("seed_listener: {e}");
        std::process::exit(1);
    }
}
