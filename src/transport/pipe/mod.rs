//! Windows named pipes (`AF_PIPE`), wire-compatible with Python's `PipeConnection` and
//! `PipeListener`: message-mode pipes, one pipe message per message.
//!
//! [`driver`] runs the overlapped I/O on one completion-port thread, [`stream`] turns a pipe into
//! the framed byte stream the layers above expect, [`listener`] makes instances and connects,
//! [`watcher`] tells a reactor or `wait` about changes.

mod driver;
mod listener;
mod stream;
mod watcher;

pub use listener::{PipeListener, connect, connect_nonblocking};
pub use stream::PipeStream;
