//! Python 2.7's own objects relayed through Rust values: a `date`, `datetime` and `time` sent by
//! CPython 2.7, received as `Value`s, sent back at protocol 2, must come back equal (their state
//! is a Python 2 `str`, kept as `Value::Py2Str`; `tests/pickle_py2_relay.rs` has the random
//! differential test).
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use mpconn::Listener;

#[path = "common/python.rs"]
mod python;

fn py27() -> PathBuf {
    python::pyenv_python("2.7.18").expect("CPython 2.7.18 through pyenv (required)")
}

/// A Python 2.7 `date`/`datetime`/`time` whose state bytes happen to be ASCII (1900-01-01) is
/// received as a Value whose argument is a `str`; re-sent with `send_value` (protocol 2, the one
/// chosen for a Python 2 peer) it becomes `unicode` and Python 2 raises
/// `TypeError: an integer is required`. Python 2's own objects do not survive a Rust relay.
#[test]
fn python27_date_relayed_through_rust_values_comes_back() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(false).bind().unwrap();
    let addr = listener.address().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "import datetime\nfrom multiprocessing.connection import Client\n\
         for v in [datetime.date(1900, 1, 1), datetime.datetime(1900, 1, 1, 1, 1, 1), datetime.time(1, 2, 3)]:\n\
         \x20   c = Client(('{host}', {port}))\n\
         \x20   c.send(v)\n\
         \x20   try:\n\
         \x20       print(repr(c.recv()))\n\
         \x20   except Exception as e:\n\
         \x20       print('EXC %r' % e)\n"
    );
    let child = Command::new(py27()).args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    for _ in 0..3 {
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.pickle_protocol(), 2);
        let v = conn.recv_value().unwrap();
        conn.send_value(&v).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["datetime.date(1900, 1, 1)", "datetime.datetime(1900, 1, 1, 1, 1, 1)", "datetime.time(1, 2, 3)"],
        "Python 2.7 got back:\n{out}"
    );
}
