//! Authentication keys, and the process-wide default key.
//!
//! Python gives every process an `authkey` (random from the OS in the main process, inherited by
//! children) that `Listener(authenticate=True)` / `Client(authenticate=True)` use when no explicit
//! key is given; the `processing` package called it `currentProcess().getAuthKey()`. mpconn keeps
//! the same idea: [`default_authkey`] is 32 bytes from the OS random source on first use, unless it
//! was set with [`set_default_authkey`] or inherited from the parent through the environment
//! variable [`AUTHKEY_ENV`] (hex), which [`AuthKey::export_to`] sets on a child's `Command`.
//!
//! A key never appears in `Debug` output, logs or error messages.

use std::fmt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Environment variable through which child processes inherit the parent's default key (hex).
pub const AUTHKEY_ENV: &str = "MPCONN_AUTHKEY";

/// Length of a generated key in bytes.
pub(crate) const GENERATED_KEY_LEN: usize = 32;

/// A shared secret for the HMAC challenge-response. Cheap to clone; redacted in `Debug`.
///
/// Made from anything byte-like (`&str`, `String`, `&[u8]`, `Vec<u8>`, a byte array), from hex,
/// or from the OS random source; every `authkey(...)` setting takes `impl Into<AuthKey>`.
///
/// ```
/// use mpconn::AuthKey;
///
/// let key = AuthKey::from("secret password");             // Python: authkey=b'secret password'
/// assert_eq!(key, AuthKey::from(String::from("secret password")));
/// assert_eq!(AuthKey::from_hex(&key.to_hex())?, key);       // how MPCONN_AUTHKEY carries it
/// assert_eq!(format!("{key:?}"), "AuthKey(<15 bytes redacted>)");
/// let random = AuthKey::generate()?;                         // 32 random bytes
/// assert_eq!(random.as_bytes().len(), 32);
/// # Ok::<(), mpconn::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Arc<[u8]>);

impl AuthKey {
    /// A key from bytes. The empty key is a real key (as in Python 3.13+): only "no key" means
    /// no authentication.
    pub fn new(bytes: impl AsRef<[u8]>) -> AuthKey {
        AuthKey(Arc::from(bytes.as_ref()))
    }

    /// A fresh key of 32 bytes from the OS random source.
    pub fn generate() -> Result<AuthKey> {
        let mut bytes = [0u8; GENERATED_KEY_LEN];
        fill_random(&mut bytes)?;
        Ok(AuthKey::new(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex of the key, the form [`AUTHKEY_ENV`] carries.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the hex form. The error never contains the input.
    pub fn from_hex(hex: &str) -> Result<AuthKey> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) {
            return Err(Error::Config("authentication key hex has an odd number of digits".into()));
        }
        let digit = |c: u8| -> Result<u8> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| Error::Config("authentication key hex has a non-hex character".into()))
        };
        let bytes =
            hex.as_bytes().chunks(2).map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?)).collect::<Result<Vec<u8>>>()?;
        Ok(AuthKey::new(bytes))
    }

    /// Makes a child process started with `command` inherit this key as its default key.
    ///
    /// The key travels in the environment variable [`AUTHKEY_ENV`], which only the same user (and
    /// root) can read from `/proc`; it never appears on the command line.
    pub fn export_to(&self, command: &mut Command) {
        command.env(AUTHKEY_ENV, self.to_hex());
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey(<{} bytes redacted>)", self.0.len())
    }
}

impl From<&[u8]> for AuthKey {
    fn from(b: &[u8]) -> Self {
        AuthKey::new(b)
    }
}

impl From<&str> for AuthKey {
    fn from(s: &str) -> Self {
        AuthKey::new(s.as_bytes())
    }
}

impl From<String> for AuthKey {
    fn from(s: String) -> Self {
        AuthKey::from(s.into_bytes())
    }
}

impl From<&String> for AuthKey {
    fn from(s: &String) -> Self {
        AuthKey::new(s.as_bytes())
    }
}

impl From<Vec<u8>> for AuthKey {
    fn from(v: Vec<u8>) -> Self {
        AuthKey(Arc::from(v))
    }
}

impl<const N: usize> From<&[u8; N]> for AuthKey {
    fn from(b: &[u8; N]) -> Self {
        AuthKey::new(b)
    }
}

static DEFAULT_KEY: Mutex<Option<AuthKey>> = Mutex::new(None);

/// The process-wide default key: inherited from [`AUTHKEY_ENV`] if the parent set it (an empty
/// or malformed value is an error, never an empty key), else generated from the OS random source
/// on first use. The same key for the life of the process
/// unless replaced with [`set_default_authkey`].
pub fn default_authkey() -> Result<AuthKey> {
    let mut slot = DEFAULT_KEY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(key) = slot.as_ref() {
        return Ok(key.clone());
    }
    let key = key_from_env(std::env::var(AUTHKEY_ENV).ok())?;
    *slot = Some(key.clone());
    Ok(key)
}

/// The default key from the value of [`AUTHKEY_ENV`] (`None`: unset, a new random key).
fn key_from_env(value: Option<String>) -> Result<AuthKey> {
    match value {
        // An empty value is a mistake (a variable exported before it was filled in), not the
        // empty key anyone could guess.
        Some(hex) if hex.trim().is_empty() => {
            Err(Error::Config(format!("{AUTHKEY_ENV} is set but empty: no key to inherit")))
        }
        Some(hex) => AuthKey::from_hex(&hex)
            .map_err(|_| Error::Config(format!("{AUTHKEY_ENV} is set but is not a hex-encoded key"))),
        None => AuthKey::generate(),
    }
}

/// The key a listener or client uses: the explicit one, else the default key when
/// `authenticate` is set (Python's `authenticate=True`), else none.
pub(crate) fn resolve_key(explicit: Option<AuthKey>, authenticate: bool) -> Result<Option<AuthKey>> {
    match (explicit, authenticate) {
        (Some(k), _) => Ok(Some(k)),
        (None, true) => default_authkey().map(Some),
        (None, false) => Ok(None),
    }
}

/// Replaces the process-wide default key (Python: `current_process().authkey = key`).
pub fn set_default_authkey(key: AuthKey) {
    *DEFAULT_KEY.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key);
}

/// Fills `buf` from the OS random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Io(std::io::Error::other(format!("OS random source failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_malformed_inherited_key_is_an_error_not_a_key() {
        for bad in ["", "  ", "\n", "abc", "zz"] {
            assert!(matches!(key_from_env(Some(bad.into())), Err(Error::Config(_))), "{bad:?}");
        }
        assert_eq!(key_from_env(Some("6b6579".into())).unwrap(), AuthKey::from("key"));
        assert_eq!(key_from_env(None).unwrap().as_bytes().len(), GENERATED_KEY_LEN);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let k = AuthKey::from("secret password");
        let shown = format!("{k:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("15 bytes"), "{shown}");
    }

    #[test]
    fn hex_round_trips_and_bad_hex_is_an_error_without_the_input() {
        let k = AuthKey::new([0u8, 1, 0xab, 0xff]);
        assert_eq!(k.to_hex(), "0001abff");
        assert_eq!(AuthKey::from_hex("0001ABff").unwrap(), k);
        let e = AuthKey::from_hex("zz1").unwrap_err().to_string();
        assert!(!e.contains("zz1"), "{e}");
        assert!(AuthKey::from_hex("zz").is_err());
    }

    #[test]
    fn generated_keys_differ() {
        let a = AuthKey::generate().unwrap();
        let b = AuthKey::generate().unwrap();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn default_key_is_stable_and_settable() {
        let a = default_authkey().unwrap();
        assert_eq!(a, default_authkey().unwrap());
        set_default_authkey(AuthKey::from("other"));
        assert_eq!(default_authkey().unwrap(), AuthKey::from("other"));
        set_default_authkey(a);
    }
}
