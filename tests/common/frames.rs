//! Raw frames for the suites' hand-made peers: Python's framing (a 4-byte big-endian length,
//! then the body) over any byte stream, without the library.

use std::io::{Read, Write};

/// Reads one frame (4-byte big-endian length, then the body).
pub fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Writes one frame, header and body in one write.
pub fn write_frame(s: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    s.write_all(&f)
}
