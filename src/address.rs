//! Addresses and address families, inferred from the address as Python does.
//!
//! Python tells the family by the address's type: a `(host, port)` tuple is `AF_INET`, a string
//! starting with two backslashes is `AF_PIPE`, any other string is `AF_UNIX` (a leading NUL makes
//! it a Linux abstract name). Rust has one string type, so [`Address::from_str`] reads:
//!
//! | written as | family |
//! |---|---|
//! | `host:port`, `1.2.3.4:port`, `[::1]:port` | `AF_INET` (IPv4 and IPv6) |
//! | `\\.\pipe\name`, `\\server\pipe\name` | `AF_PIPE` (Windows named pipes) |
//! | `\0name` (a NUL character, or the two characters `\` `0`) | `AF_UNIX`, Linux abstract name |
//! | anything else (`/tmp/sock`, `./sock`) | `AF_UNIX` path |
//!
//! A path that looks like `host:port` can be given explicitly with [`Address::unix`].

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// An address family: Python's `'AF_INET'`, `'AF_UNIX'`, `'AF_PIPE'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// TCP over IPv4 or IPv6.
    Inet,
    /// Unix domain sockets: paths, and abstract names on Linux.
    Unix,
    /// Windows named pipes.
    Pipe,
}

impl Family {
    /// The fastest family available here, what Python picks when no address is given:
    /// `AF_UNIX` on Unix, `AF_PIPE` on Windows.
    pub fn fastest() -> Family {
        if cfg!(windows) { Family::Pipe } else { Family::Unix }
    }

    /// Python's name for the family.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "AF_INET",
            Family::Unix => "AF_UNIX",
            Family::Pipe => "AF_PIPE",
        }
    }

    /// Whether this platform can use the family.
    pub fn is_supported(self) -> bool {
        match self {
            Family::Inet => true,
            Family::Unix => cfg!(unix),
            Family::Pipe => cfg!(windows),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = Error;
    fn from_str(s: &str) -> Result<Family> {
        match s.to_ascii_lowercase().as_str() {
            "af_inet" | "inet" | "tcp" => Ok(Family::Inet),
            "af_unix" | "unix" => Ok(Family::Unix),
            "af_pipe" | "pipe" => Ok(Family::Pipe),
            _ => Err(Error::Address(format!("unknown family {s:?} (expected AF_INET, AF_UNIX or AF_PIPE)"))),
        }
    }
}

/// Where a listener listens or a client connects.
///
/// Parsed from text as Python infers the family from the type: `host:port` is TCP, `\\.\pipe\name`
/// a Windows pipe, `\0name` a Linux abstract socket, anything else a Unix socket path. Every
/// `address(...)` setting takes an [`IntoAddress`]: `&str`, `String`, `(&str, u16)`,
/// `SocketAddr`, a `Path`, or an `Address`.
///
/// ```
/// use mpconn::{Address, Family};
///
/// let tcp: Address = "localhost:6000".parse()?;
/// assert_eq!(tcp, Address::inet("localhost", 6000));
/// assert_eq!(tcp.family(), Family::Inet);
/// let unix: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(unix.unix_path(), Some(std::path::Path::new("/tmp/app.sock")));
/// let v6: Address = "[::1]:6000".parse()?;
/// assert_eq!(v6.to_string(), "[::1]:6000");
/// assert!("".parse::<Address>().is_err());
/// # Ok::<(), mpconn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address: a host name or IP literal, and a port.
    Inet {
        /// Host name or IP literal (without brackets).
        host: String,
        /// Port; 0 asks the OS for a free one when binding.
        port: u16,
    },
    /// A Unix socket path. The empty path is an unnamed socket (what Python's `last_accepted`
    /// shows as `''`).
    Unix(PathBuf),
    /// A Linux abstract socket name (without the leading NUL).
    Abstract(Vec<u8>),
    /// A Windows named pipe, `\\.\pipe\name`.
    Pipe(String),
}

impl Address {
    /// A TCP address.
    pub fn inet(host: impl Into<String>, port: u16) -> Address {
        Address::Inet { host: host.into(), port }
    }

    /// A Unix socket path.
    pub fn unix(path: impl Into<PathBuf>) -> Address {
        Address::Unix(path.into())
    }

    /// A Linux abstract socket name (give it without the leading NUL).
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Address {
        Address::Abstract(name.into())
    }

    /// The family this address belongs to.
    pub fn family(&self) -> Family {
        match self {
            Address::Inet { .. } => Family::Inet,
            Address::Unix(_) | Address::Abstract(_) => Family::Unix,
            Address::Pipe(_) => Family::Pipe,
        }
    }

    /// The path of a Unix socket file, if this is one.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(p) => Some(p),
            _ => None,
        }
    }

    /// Resolves a TCP address, IPv4 results first (Python's `multiprocessing` is IPv4-only, so a
    /// name like `localhost` should reach a Python peer).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let Address::Inet { host, port } = self else {
            return Err(Error::Address(format!("{self} is not a TCP address")));
        };
        let mut addrs: Vec<SocketAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| Error::Address(format!("cannot resolve {host:?}: {e}")))?
            .collect();
        addrs.sort_by_key(std::net::SocketAddr::is_ipv6);
        if addrs.is_empty() {
            return Err(Error::Address(format!("{host:?} resolves to no address")));
        }
        Ok(addrs)
    }

    /// Checks that the address belongs to `family` (when one is given explicitly).
    pub fn check_family(&self, family: Family) -> Result<()> {
        if self.family() == family {
            Ok(())
        } else {
            Err(Error::Address(format!("address {self} is not of family {family}")))
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Inet { host: a.ip().to_string(), port: a.port() }
    }
}

impl From<(&str, u16)> for Address {
    fn from((host, port): (&str, u16)) -> Address {
        Address::inet(host, port)
    }
}

impl From<(String, u16)> for Address {
    fn from((host, port): (String, u16)) -> Address {
        Address::Inet { host, port }
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if s.is_empty() {
            return Err(Error::Address("empty address".into()));
        }
        if s.starts_with(r"\\") {
            return Ok(Address::Pipe(s.to_string()));
        }
        if let Some(name) = s.strip_prefix('\0').or_else(|| s.strip_prefix(r"\0")) {
            if name.is_empty() {
                return Err(Error::Address("empty abstract socket name".into()));
            }
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if let Some(inet) = parse_inet(s)? {
            return Ok(inet);
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

/// `host:port` or `[v6]:port`; `None` when the text is not of that shape (then it is a path).
fn parse_inet(s: &str) -> Result<Option<Address>> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Some(sa.into()));
    }
    // `[` and a colon: meant as `[v6]:port`, mistyped (not silently a Unix path).
    if s.starts_with('[') && s.contains(':') {
        return Err(Error::Address(format!("{s:?} is not an IPv6 address and port ([v6]:port)")));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Ok(None);
    };
    let host_like =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !host_like || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    let port: u16 = port.parse().map_err(|_| Error::Address(format!("port {port} out of range in {s:?}")))?;
    Ok(Some(Address::inet(host, port)))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Inet { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(name) => write!(f, "\\0{}", String::from_utf8_lossy(name)),
            Address::Pipe(name) => f.write_str(name),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh address of `family`, as Python's `arbitrary_address`: `127.0.0.1:0` for TCP (the OS
/// picks the port at bind), a new socket name inside a new private (0700) temporary directory for
/// Unix, `\\.\pipe\mpconn-<pid>-<n>-<random>` for pipes.
pub fn arbitrary_address(family: Family) -> Result<Address> {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut rnd = [0u8; 6];
    crate::authkey::fill_random(&mut rnd)?;
    let tag: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    match family {
        Family::Inet => Ok(Address::inet("127.0.0.1", 0)),
        Family::Unix => {
            let dir = std::env::temp_dir().join(format!("mpconn-{}-{n}-{tag}", std::process::id()));
            create_private_dir(&dir)?;
            Ok(Address::Unix(dir.join(format!("listener-{tag}"))))
        }
        Family::Pipe => Ok(Address::Pipe(format!(r"\\.\pipe\mpconn-{}-{n}-{tag}", std::process::id()))),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir)?;
    Ok(())
}

/// Anything that names an address: an [`Address`], a string in the forms
/// [`Address`'s parser](Address#impl-FromStr-for-Address) reads, a `SocketAddr`, a
/// `(host, port)` pair, or a path.
pub trait IntoAddress {
    /// Converts, reporting a malformed address.
    fn into_address(self) -> Result<Address>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for &std::net::SocketAddr {
    fn into_address(self) -> Result<Address> {
        Ok((*self).into())
    }
}

impl IntoAddress for (String, u16) {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for std::net::SocketAddr {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for (&str, u16) {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for &std::path::Path {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl IntoAddress for std::path::PathBuf {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Unix(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn family_is_inferred_as_python_does() {
        assert_eq!(parse("localhost:6000"), Address::inet("localhost", 6000));
        assert_eq!(parse("127.0.0.1:0"), Address::inet("127.0.0.1", 0));
        assert_eq!(parse("[::1]:80"), Address::inet("::1", 80));
        assert_eq!(parse(r"\\.\pipe\foo"), Address::Pipe(r"\\.\pipe\foo".into()));
        assert_eq!(parse(r"\\server\pipe\foo").family(), Family::Pipe);
        assert_eq!(parse("\0abc"), Address::Abstract(b"abc".to_vec()));
        assert_eq!(parse(r"\0abc"), Address::Abstract(b"abc".to_vec()));
        assert_eq!(parse("/tmp/x.sock"), Address::unix("/tmp/x.sock"));
        assert_eq!(parse("relative.sock"), Address::unix("relative.sock"));
        assert_eq!(parse("./a:80"), Address::unix("./a:80"));
        assert_eq!(parse("/tmp/a:80").family(), Family::Unix);
    }

    #[test]
    fn bad_addresses_are_clear_errors() {
        assert!("".parse::<Address>().is_err());
        assert!("\0".parse::<Address>().is_err());
        let e = "localhost:70000".parse::<Address>().unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        for typo in ["[::1:80", "[::1]80", "[::1]:x"] {
            let e = typo.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains("IPv6"), "{typo}: {e}");
        }
        // The error of a builder's address says "bad address" once.
        let e = mpconn_listener_error("localhost:99999");
        assert_eq!(e.matches("bad address").count(), 1, "{e}");
    }

    fn mpconn_listener_error(address: &str) -> String {
        crate::Listener::builder().address(address).bind().unwrap_err().to_string()
    }

    #[test]
    fn display_round_trips() {
        for s in ["localhost:6000", "[::1]:80", "/tmp/x", r"\0name", r"\\.\pipe\p"] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn family_names_parse() {
        assert_eq!("AF_INET".parse::<Family>().unwrap(), Family::Inet);
        assert_eq!("unix".parse::<Family>().unwrap(), Family::Unix);
        assert!("AF_BOGUS".parse::<Family>().is_err());
    }

    #[test]
    fn arbitrary_unix_address_is_in_a_fresh_private_directory() {
        let a = arbitrary_address(Family::Unix).unwrap();
        let b = arbitrary_address(Family::Unix).unwrap();
        assert_ne!(a, b);
        let dir = a.unix_path().unwrap().parent().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
        }
        std::fs::remove_dir(dir).unwrap();
        std::fs::remove_dir(b.unix_path().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn localhost_resolves_ipv4_first() {
        let addrs = Address::inet("localhost", 1).resolve().unwrap();
        assert!(addrs[0].is_ipv4(), "{addrs:?}");
    }
}
