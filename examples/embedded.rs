//! Embedding the reactor in someone else's event loop: an outer `mio::Poll` waits on the
//! reactor's descriptor, at most until the reactor's next deadline (`Reactor::poll_timeout`),
//! and calls `run_once` when it fires or the deadline comes. `embed_tokio.rs` and
//! `embed_poll.rs` do the same in tokio and in a `poll(2)` loop.
//!
//! ```text
//! cargo run --example embedded
//! ```
//! It starts a reactor echo server, a client thread that sends a few messages through a
//! `Handle`-free blocking `Client`, and stops when the client is done.

// The reactor's pollable descriptor is its epoll descriptor: Unix only.
#[cfg(unix)]
mod unix {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use mpconn::reactor::options::ListenOptions;
    use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};
    use mpconn::{Client, Family, arbitrary_address};

    struct Echo {
        echoed: usize,
    }

    impl Handler for Echo {
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            self.echoed += 1;
            let _ = ctx.send(conn, message);
        }
    }

    const REACTOR: Token = Token(0);

    pub fn main() -> mpconn::Result<()> {
        let mut reactor = Reactor::new(Echo { echoed: 0 })?;
        let listener = reactor.listen(arbitrary_address(Family::fastest())?, ListenOptions::new())?;
        let address = reactor.listener_address(listener).expect("just bound").clone();

        // The outer loop: the application's own Poll, with the reactor as one more source.
        let mut outer = Poll::new()?;
        let fd = reactor.as_raw_fd();
        outer.registry().register(&mut SourceFd(&fd), REACTOR, Interest::READABLE)?;

        let handle = reactor.handle();
        let client = std::thread::spawn(move || -> mpconn::Result<()> {
            let mut conn = Client::new(address).connect()?;
            for i in 0..5 {
                let text = format!("message {i}");
                conn.send_bytes(text.as_bytes())?;
                println!("client got back: {}", String::from_utf8_lossy(&conn.recv_bytes()?));
            }
            handle.stop()
        });

        let mut events = Events::with_capacity(16);
        loop {
            // Wait at most until the reactor's next deadline (a handshake timeout is a timer,
            // not an event on its descriptor), and at most a second for the application's work.
            let wait = reactor.poll_timeout().map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
            outer.poll(&mut events, Some(wait))?;
            let reactor_ready = events.iter().any(|e| e.token() == REACTOR);
            if (reactor_ready || reactor.poll_timeout() == Some(Duration::ZERO))
                && reactor.run_once(Some(Duration::ZERO))? == Turn::Stopped
            {
                client.join().expect("client thread")?;
                println!("the reactor echoed {} messages inside the outer loop", reactor.handler().echoed);
                return Ok(());
            }
            // ... the application's other work goes here ...
        }
    }
}

#[cfg(unix)]
fn main() -> mpconn::Result<()> {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("embedding through the reactor's descriptor needs Unix (epoll); on Windows call run_once from your loop");
}
