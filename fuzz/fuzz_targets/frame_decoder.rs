//! The frame decoder against arbitrary bytes in arbitrary splits: no panic, memory bounded by
//! what arrived, and the incremental decoder agrees with the in-place parser on every message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpconn::internal::frame::{FrameDecoder, SliceFrames};

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    // Reference: everything in one slice.
    let mut reference = Vec::new();
    let mut s = SliceFrames::new(wire);
    let reference_error = loop {
        match s.next_frame_limited(LIMIT) {
            Ok(Some(m)) => reference.push(m.to_vec()),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    // Incremental: reads of `split + 1` bytes at most.
    let chunk = split as usize + 1;
    let mut d = FrameDecoder::with_read_block(LIMIT, 64);
    let mut got = Vec::new();
    let mut error = false;
    let mut received = 0usize;
    'feed: for piece in wire.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            let space = d.read_buf();
            let n = space.len().min(piece.len());
            space[..n].copy_from_slice(&piece[..n]);
            d.advance(n);
            received += n;
            piece = &piece[n..];
            assert!(d.capacity() <= 4 * received + 256, "memory must follow bytes received");
            loop {
                match d.take_frame() {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => break,
                    Err(_) => {
                        error = true;
                        break 'feed;
                    }
                }
            }
        }
    }
    assert_eq!(error, reference_error);
    assert_eq!(got, reference);
});
