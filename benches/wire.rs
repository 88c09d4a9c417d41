//! Criterion benches of the sans-IO hot paths: decoding many small frames, encoding headers,
//! and the handshake digests. `cargo bench --bench wire`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpconn::internal::frame::{FrameDecoder, Header, encode_frame};
use mpconn::internal::handshake::{Handshake, HandshakeConfig, MODERN_NONCE_LEN, Nonce};
use mpconn::{AuthKey, Digest};

/// Feeds `wire` as a socket would (at most what `read_buf` offers each time), calling `after`
/// after every read.
fn read_like_a_socket(d: &mut FrameDecoder, wire: &[u8], mut after: impl FnMut(&mut FrameDecoder)) {
    let mut rest = wire;
    while !rest.is_empty() {
        let space = d.read_buf();
        let n = space.len().min(rest.len());
        space[..n].copy_from_slice(&rest[..n]);
        d.advance(n);
        rest = &rest[n..];
        after(d);
    }
}

fn decode_small(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut wire = Vec::new();
    for i in 0..N {
        encode_frame(&[i as u8; 64], &mut wire);
    }
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("64B frames, 64 KiB reads, borrowed", |b| {
        let mut d = FrameDecoder::default();
        b.iter(|| {
            let mut count = 0usize;
            read_like_a_socket(&mut d, &wire, |d| {
                while let Some(m) = d.next_frame().unwrap() {
                    count += m.len();
                }
            });
            black_box(count)
        })
    });
    g.finish();

    let big = vec![7u8; 16 << 20];
    let mut wire = Vec::new();
    encode_frame(&big, &mut wire);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.sample_size(20);
    g.bench_function("16 MiB frame, taken", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::default();
            let mut got = None;
            read_like_a_socket(&mut d, &wire, |d| {
                if let Some(m) = d.take_frame().unwrap() {
                    got = Some(m);
                }
            });
            black_box(got)
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    c.bench_function("encode header", |b| b.iter(|| black_box(Header::for_len(black_box(64)))));
}

fn handshake(c: &mut Criterion) {
    let key = b"secret password";
    let msg = [1u8; 48];
    for d in [Digest::Md5, Digest::Sha1, Digest::Sha256] {
        c.bench_function(&format!("hmac {}", d.name()), |b| b.iter(|| black_box(d.mac(key, black_box(&msg)))));
    }
    let config = HandshakeConfig::new(AuthKey::from("secret password"));
    c.bench_function("full mutual handshake, both sides in memory", |b| {
        b.iter(|| {
            let mut l = Handshake::listener(&config, Nonce::from_bytes([1; MODERN_NONCE_LEN]));
            let mut cl = Handshake::client(&config, Nonce::from_bytes([2; MODERN_NONCE_LEN]));
            for _ in 0..4 {
                while let Some(m) = l.poll_transmit() {
                    cl.handle_message(&m).unwrap();
                }
                while let Some(m) = cl.poll_transmit() {
                    l.handle_message(&m).unwrap();
                }
            }
            assert!(l.is_complete() && cl.is_complete());
        })
    });
}

criterion_group!(benches, decode_small, encode, handshake);
criterion_main!(benches);
