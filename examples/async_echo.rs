//! An echo server on the async face (`mpconn::tokio`): every message comes back to its sender,
//! many clients served by one task each on one current-thread runtime.
//!
//! ```text
//! cargo run --release --features tokio --example async_echo -- [ADDRESS] [--authkey KEY]
//! ```
//! The command line of `examples/echo_server.rs`: prints `listening on <address>` once ready;
//! with no address it binds a fresh Unix socket. Python clients work as they are:
//! `Client(address, authkey=b"KEY").send_bytes(b"hi")`.
//!
//! Each accepted client authenticates in its own task (`accept_incoming` + `handshake`), so a
//! slow or silent client delays nobody; it is dropped at the handshake deadline.

use mpconn::tokio::{Connection, Listener};
use mpconn::{Address, Error};

async fn echo(mut conn: Connection) -> mpconn::Result<()> {
    loop {
        match conn.recv_bytes().await {
            Ok(m) => conn.send_bytes(&m).await?,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn main() -> mpconn::Result<()> {
    let mut address = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--authkey" => key = Some(args.next().ok_or(Error::Config("--authkey needs a value".into()))?),
            other => address = Some(other.parse::<Address>()?),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut builder = Listener::builder();
        if let Some(a) = address {
            builder = builder.address(a);
        }
        if let Some(k) = key {
            builder = builder.authkey(k.as_str());
        }
        let mut listener = builder.bind()?;
        println!("listening on {}", listener.address());
        loop {
            let incoming = match listener.accept_incoming().await {
                Ok(i) => i,
                Err(e) => {
                    // One failed accept (a client gone before we took it) concerns that client.
                    // Out of descriptors, say: pause rather than spin.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let peer = incoming.peer().clone();
            tokio::spawn(async move {
                let result = match incoming.handshake().await {
                    Ok(conn) => echo(conn).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    log::info!("{peer}: {e}");
                }
            });
        }
    })
}
