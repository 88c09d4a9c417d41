//! Judging replies: the filler echo's checksum and sequence (today's verified mode), and the
//! `--expect` checks of a real service's replies. A failure is a kind (what the counts are keyed
//! by) and an example (what one failing reply looked like, bounded).

use mpconn::pickle::{Value, loads_value, repr_limited};

use super::plan::{Expect, Plan};

/// Header of every filler message: sequence, send time (ns since start), client index; then
/// filler; then a 4-byte FNV-1a checksum of everything before it.
pub const HEADER: usize = 24;
/// The smallest filler message.
pub const MIN_SIZE: usize = HEADER + 4;
/// The most of a reply's repr shown as an example.
const EXAMPLE_CHARS: usize = 200;

pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

pub fn build_message(buf: &mut Vec<u8>, size: usize, seq: u64, t_ns: u64, client: u64) {
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&t_ns.to_le_bytes());
    buf.extend_from_slice(&client.to_le_bytes());
    buf.extend((HEADER..size - 4).map(|i| (i as u64 ^ seq) as u8));
    let sum = fnv1a(buf);
    buf.extend_from_slice(&sum.to_le_bytes());
}

/// What a filler echo says about itself: `None` when it is not intact (size, checksum, client).
pub fn filler_seq(m: &[u8], size: usize, client: u64) -> Option<u64> {
    let intact = m.len() == size
        && fnv1a(&m[..m.len() - 4]).to_le_bytes() == m[m.len() - 4..]
        && u64::from_le_bytes(m[16..24].try_into().ok()?) == client;
    intact.then(|| u64::from_le_bytes(m[..8].try_into().unwrap_or_default()))
}

/// A reply that failed: its kind and an example.
pub struct Failure {
    pub kind: String,
    pub example: String,
}

/// A reply as Python would print it (a pickle) or as a bytes literal, bounded.
pub fn shown(reply: &[u8]) -> String {
    if reply.first() == Some(&0x80)
        && let Ok(v) = loads_value(reply)
    {
        return repr_limited(&v, EXAMPLE_CHARS);
    }
    repr_limited(&Value::Bytes(reply[..reply.len().min(EXAMPLE_CHARS)].to_vec()), EXAMPLE_CHARS)
}

/// Checks a reply to a `--request`/`--request-bytes` request (`request` is the value sent, or
/// `None` for bytes; `sent` its bytes).
pub fn check(
    plan: &Plan,
    reply: &[u8],
    request: Option<&Value>,
    sent: &[u8],
    seq: u64,
    client: u64,
) -> Option<Failure> {
    let decode = || {
        loads_value(reply).map_err(|e| Failure { kind: format!("reply is not a pickle: {e}"), example: shown(reply) })
    };
    match &plan.expect {
        Expect::Any => None,
        Expect::Echo => match request {
            None => (reply != sent)
                .then(|| Failure { kind: "check failed: not the echo of the request".into(), example: shown(reply) }),
            Some(req) => match decode() {
                Err(f) => Some(f),
                Ok(v) if v == *req => None,
                Ok(v) => Some(Failure {
                    kind: "check failed: not the echo of the request".into(),
                    example: format!(
                        "{} (request {})",
                        repr_limited(&v, EXAMPLE_CHARS),
                        repr_limited(req, EXAMPLE_CHARS)
                    ),
                }),
            },
        },
        Expect::Value(t, text) => match (decode(), t.value(seq, client)) {
            (Err(f), _) => Some(f),
            (_, Err(e)) => Some(Failure { kind: format!("check failed: expected {text}: {e}"), example: shown(reply) }),
            (Ok(v), Ok(want)) if v == want => None,
            (Ok(v), Ok(want)) => Some(Failure {
                kind: format!("check failed: expected {text}"),
                example: format!(
                    "{} (expected {})",
                    repr_limited(&v, EXAMPLE_CHARS),
                    repr_limited(&want, EXAMPLE_CHARS)
                ),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_a_checksum_over_everything_before_it() {
        let mut b = Vec::new();
        build_message(&mut b, 64, 7, 123, 9);
        assert_eq!(b.len(), 64);
        assert_eq!(fnv1a(&b[..60]).to_le_bytes(), b[60..]);
        assert_eq!(filler_seq(&b, 64, 9), Some(7));
        assert_eq!(filler_seq(&b, 64, 8), None);
        b[30] ^= 1;
        assert_ne!(fnv1a(&b[..60]).to_le_bytes(), b[60..]);
        assert_eq!(filler_seq(&b, 64, 9), None);
    }
}
