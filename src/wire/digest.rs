//! The HMAC digests the handshake dialects use, and the policy that says which a verifier accepts.
//!
//! CPython 3.12+ names its digest in braces (`{sha256}`) and accepts md5, sha256, sha384, `sha3_256`
//! and `sha3_384` replies; CPython up to 3.11 speaks raw HMAC-MD5; the original `processing`
//! package raw HMAC-SHA1. Comparison of MACs is constant-time (`hmac`'s `verify_slice`, built on
//! `subtle`).

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};

/// A MAC algorithm of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Digest {
    /// HMAC-MD5: CPython's legacy reply (16 bytes) and the `{md5}` modern name.
    Md5,
    /// HMAC-SHA1: the `processing` package's dialect (20 bytes).
    Sha1,
    /// HMAC-SHA256: what CPython 3.12+ offers.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

/// The longest MAC any digest produces.
pub const MAX_MAC_LEN: usize = 48;

/// A computed MAC (up to 48 bytes) without allocation.
#[derive(Clone, Copy)]
pub struct MacBytes {
    bytes: [u8; MAX_MAC_LEN],
    len: u8,
}

impl MacBytes {
    /// The MAC's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for MacBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MacBytes({} bytes)", self.len)
    }
}

fn mac_of<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> MacBytes {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    let out = mac.finalize().into_bytes();
    let mut bytes = [0u8; MAX_MAC_LEN];
    bytes[..out.len()].copy_from_slice(&out);
    MacBytes { bytes, len: out.len() as u8 }
}

fn verify_with<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.verify_slice(tag).is_ok()
}

impl Digest {
    /// Every digest, in the order CPython lists its allowed ones (plus sha1).
    pub const ALL: [Digest; 6] =
        [Digest::Md5, Digest::Sha1, Digest::Sha256, Digest::Sha384, Digest::Sha3_256, Digest::Sha3_384];

    /// The name CPython writes between braces.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha1 => "sha1",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The digest CPython knows by `name` in a `{name}` prefix (sha1 is not among them).
    pub fn from_cpython_name(name: &[u8]) -> Option<Digest> {
        match name {
            b"md5" => Some(Digest::Md5),
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            b"sha3_256" => Some(Digest::Sha3_256),
            b"sha3_384" => Some(Digest::Sha3_384),
            _ => None,
        }
    }

    /// Length of the MAC in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha1 => 20,
            Digest::Sha256 | Digest::Sha3_256 => 32,
            Digest::Sha384 | Digest::Sha3_384 => 48,
        }
    }

    /// HMAC of `message` under `key`.
    pub fn mac(self, key: &[u8], message: &[u8]) -> MacBytes {
        match self {
            Digest::Md5 => mac_of::<Hmac<md5::Md5>>(key, message),
            Digest::Sha1 => mac_of::<Hmac<sha1::Sha1>>(key, message),
            Digest::Sha256 => mac_of::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => mac_of::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => mac_of::<SimpleHmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => mac_of::<SimpleHmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Constant-time check that `tag` is the HMAC of `message` under `key`.
    pub fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        match self {
            Digest::Md5 => verify_with::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha1 => verify_with::<Hmac<sha1::Sha1>>(key, message, tag),
            Digest::Sha256 => verify_with::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => verify_with::<Hmac<sha2::Sha384>>(key, message, tag),
            Digest::Sha3_256 => verify_with::<SimpleHmac<sha3::Sha3_256>>(key, message, tag),
            Digest::Sha3_384 => verify_with::<SimpleHmac<sha3::Sha3_384>>(key, message, tag),
        }
    }
}

/// Which digests a side accepts from its peer, and uses when it must choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DigestPolicy {
    /// Accept what CPython accepts (md5 including the legacy raw reply, sha256, sha384,
    /// `sha3_256`, `sha3_384`; sha1 in the `processing` dialect), so every Python version interoperates.
    #[default]
    CpythonCompatible,
    /// Require HMAC-SHA256 both ways: legacy MD5 peers and the `processing` dialect are refused.
    RequireSha256,
}

impl DigestPolicy {
    /// Whether a reply or challenge using `digest` is acceptable.
    pub fn allows(self, digest: Digest) -> bool {
        match self {
            DigestPolicy::CpythonCompatible => true,
            DigestPolicy::RequireSha256 => digest == Digest::Sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed with Python: hmac.new(b"key", b"msg", name).hexdigest()
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn macs_match_python_hmac() {
        // hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", name).hexdigest()
        // printed by CPython 3.11.
        let expected = [
            (Digest::Md5, "80070713463e7749b90c2dc24911e275"),
            (Digest::Sha1, "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"),
            (Digest::Sha256, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"),
            (
                Digest::Sha384,
                "d7f4727e2c0b39ae0f1e40cc96f60242d5b7801841cea6fc592c5d3e1ae50700582a96cf35e1e554995fe4e03381c237",
            ),
            (Digest::Sha3_256, "8c6e0683409427f8931711b10ca92a506eb1fafa48fadd66d76126f47ac2c333"),
            (
                Digest::Sha3_384,
                "aa739ad9fcdf9be4a04f06680ade7a1bd1e01a0af64accb04366234cf9f6934a0f8589772f857681fcde8acc256091a2",
            ),
        ];
        for (d, want) in expected {
            let got = hex(d.mac(b"key", b"The quick brown fox jumps over the lazy dog").as_bytes());
            assert_eq!(got, want, "{}", d.name());
        }
    }

    #[test]
    fn every_digest_verifies_its_own_mac_and_rejects_truncation() {
        for d in Digest::ALL {
            let m = d.mac(b"k", b"challenge");
            assert_eq!(m.as_bytes().len(), d.mac_len(), "{}", d.name());
            assert!(d.verify(b"k", b"challenge", m.as_bytes()));
            assert!(!d.verify(b"k", b"challenge", &m.as_bytes()[1..]));
            assert!(!d.verify(b"k", b"challengf", m.as_bytes()));
        }
    }

    #[test]
    fn strict_policy_allows_only_sha256() {
        assert!(DigestPolicy::RequireSha256.allows(Digest::Sha256));
        assert!(!DigestPolicy::RequireSha256.allows(Digest::Md5));
        assert!(!DigestPolicy::RequireSha256.allows(Digest::Sha1));
        assert!(Digest::ALL.iter().all(|d| DigestPolicy::CpythonCompatible.allows(*d)));
    }
}
