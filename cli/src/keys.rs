//! Options every subcommand shares: where the key comes from, the dialect, the message limit.

use std::path::PathBuf;

use mpconn::{AuthKey, Dialect, Error, Result};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct KeyArgs {
    /// The authentication key as text. It shows in `ps`: prefer --authkey-file or --authkey-env.
    #[arg(long, global = true)]
    pub authkey: Option<String>,
    /// Read the key from this file (its bytes; one trailing newline is dropped).
    #[arg(long, global = true)]
    pub authkey_file: Option<PathBuf>,
    /// Read the key from this environment variable.
    #[arg(long, global = true)]
    pub authkey_env: Option<String>,
    /// Handshake dialect a listener offers: cpython (default; every CPython answers it), legacy
    /// (CPython <= 3.11's 20-byte MD5 challenge) or processing (the original package). A client
    /// detects the listener's, but needs legacy-sha256 for Red Hat's (FIPS) Python 3.6-3.11.
    #[arg(long, global = true, value_parser = parse_dialect)]
    pub dialect: Option<Dialect>,
    /// Largest message accepted, in bytes (default 128 MiB).
    #[arg(long, global = true)]
    pub max_message_size: Option<usize>,
}

fn parse_dialect(s: &str) -> std::result::Result<Dialect, String> {
    s.parse::<Dialect>().map_err(|e| e.to_string())
}

impl KeyArgs {
    /// The key, if one was given; an error if it was given twice or cannot be read.
    pub fn key(&self) -> Result<Option<AuthKey>> {
        let given = [self.authkey.is_some(), self.authkey_file.is_some(), self.authkey_env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::Config("give the key once: --authkey, --authkey-file or --authkey-env".into()));
        }
        if let Some(k) = &self.authkey {
            return Ok(Some(AuthKey::from(k.as_str())));
        }
        if let Some(path) = &self.authkey_file {
            let mut bytes = std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read the key file {}: {e}", path.display())))?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            return Ok(Some(AuthKey::from(bytes)));
        }
        if let Some(var) = &self.authkey_env {
            let value = std::env::var_os(var)
                .ok_or_else(|| Error::Config(format!("the environment variable {var} is not set")))?;
            return Ok(Some(AuthKey::new(value.as_encoded_bytes())));
        }
        Ok(None)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or_default()
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size.unwrap_or(mpconn::DEFAULT_MAX_MESSAGE_SIZE)
    }
}
