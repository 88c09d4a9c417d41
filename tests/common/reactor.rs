//! What the reactor test suites share: a handler that records every event on a channel (and
//! echoes when asked), a reactor on its own thread with one listener or one outgoing connection,
//! and bounded waits. Each suite uses part of it.
#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor};
use mpconn::{Address, IntoAddress};

/// The longest any test waits for one thing.
pub const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum Ev {
    Open(ConnId),
    Msg(Vec<u8>),
    Close(ConnId, String),
    Drained,
}

/// Records every event on a channel; echoes messages when asked to (a peer that does not read
/// its echoes is closed once its queue is full).
pub struct Recorder {
    pub tx: mpsc::Sender<Ev>,
    pub echo: bool,
}

impl Handler for Recorder {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &Address) {
        let _ = self.tx.send(Ev::Open(conn));
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if self.echo {
            if ctx.send(conn, message).is_err() {
                ctx.close(conn);
            }
        } else {
            let _ = self.tx.send(Ev::Msg(message.to_vec()));
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let _ = self.tx.send(Ev::Close(conn, format!("{reason:?}")));
    }
    fn on_drained(&mut self, _: &mut Context<'_>, _: ConnId) {
        let _ = self.tx.send(Ev::Drained);
    }
}

/// A reactor on its own thread with one listener; returns its address, handle and events.
pub fn spawn_reactor(
    address: impl IntoAddress + Send + 'static,
    options: ListenOptions,
    echo: bool,
) -> (Address, Handle, mpsc::Receiver<Ev>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Recorder { tx, echo }).unwrap();
        let l = reactor.listen(address, options).unwrap();
        let bound = reactor.listener_address(l).unwrap().clone();
        ready_tx.send((bound, reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (bound, handle) = ready_rx.recv_timeout(WAIT).unwrap();
    (bound, handle, rx, t)
}

/// A reactor on its own thread that connects to `address`; returns its handle and events.
pub fn spawn_client_reactor(
    address: Address,
    options: ConnectionOptions,
) -> (Handle, mpsc::Receiver<Ev>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (handle_tx, handle_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Recorder { tx, echo: false }).unwrap();
        reactor.connect(&address, options).unwrap();
        handle_tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
    });
    (handle_rx.recv_timeout(WAIT).unwrap(), rx, t)
}

pub fn next_event(rx: &mpsc::Receiver<Ev>) -> Ev {
    rx.recv_timeout(WAIT).expect("an event within the time limit")
}

pub fn stop(handle: Handle, t: thread::JoinHandle<()>) {
    handle.stop().unwrap();
    t.join().unwrap();
}
