//! Fuzz target for the WebSocket frame parser: random bytes, and client frames of every length
//! encoding mutated, against any payload limit (up to none at all). Reassembly over a real
//! connection is fuzzed in the crate's `fuzz` module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_testkit::fuzz::config;
use proptest::prelude::*;

use super::{BINARY, CLOSE, CONTINUATION, PING, PONG, PROTOCOL_ERROR, TEXT, TOO_BIG, parse};

/// A masked client frame whose header declares `declared` bytes (the payload may be shorter).
fn frame(b0: u8, declared: u64, payload: &[u8], mask: [u8; 4], encoding: u8) -> Vec<u8> {
    let mut out = vec![b0];
    match encoding % 3 {
        0 if declared < 126 => out.push(0x80 | declared as u8),
        1 if declared <= u64::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&declared.to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop::sample::select(vec![TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG, 0x3]);
    let valid = (
        opcode,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
        any::<u8>(),
    )
        .prop_map(|(opcode, fin, payload, mask, encoding)| {
            let b0 = if fin { 0x80 } else { 0 } | opcode;
            frame(b0, payload.len() as u64, &payload, mask, encoding)
        });
    // Headers that declare more than is there, up to 2^64 - 1 bytes.
    let declared = (
        any::<u8>(),
        prop_oneof![any::<u64>(), Just(u64::MAX), (u64::MAX - 16..=u64::MAX)],
        prop::collection::vec(any::<u8>(), 0..16),
        any::<[u8; 4]>(),
    )
        .prop_map(|(b0, declared, payload, mask)| frame(b0, declared, &payload, mask, 2));
    let edits = prop::collection::vec(any::<(u8, usize, u8)>(), 0..4);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        declared,
        (valid, edits).prop_map(|(mut bytes, edits)| {
            for (kind, at, byte) in edits {
                let at = at % (bytes.len() + 1);
                match kind % 3 {
                    0 if at < bytes.len() => bytes[at] ^= byte | 1,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        }),
    ]
}

/// A frame is found whole inside the buffer and within the limit, or more bytes are asked for,
/// or the connection is refused with a close code; whatever length a header declares, nothing
/// is allocated for it and nothing overflows.
#[test]
fn fuzz_websocket_frame_header() {
    let limit = prop_oneof![
        Just(0usize),
        1usize..400,
        Just(1_000_000),
        Just(usize::MAX - 1),
        Just(usize::MAX),
    ];
    proptest!(config(20_000), |(mut buf in input(), max in limit)| {
        let original = buf.clone();
        match parse(&mut buf, max) {
            Ok(Some(received)) => {
                prop_assert!(received.len <= buf.len());
                prop_assert!(received.payload.end == received.len);
                prop_assert!(received.payload.start <= received.payload.end);
                prop_assert!(received.payload.len() <= max);
                prop_assert!(received.opcode < 0x10);
                // Unmasking twice gives the bytes back: only the payload was touched.
                prop_assert_eq!(&buf[..received.payload.start], &original[..received.payload.start]);
                prop_assert_eq!(&buf[received.len..], &original[received.len..]);
            }
            Ok(None) => prop_assert_eq!(&buf, &original, "an incomplete frame is left as it was"),
            Err(code) => prop_assert!(code == PROTOCOL_ERROR || code == TOO_BIG),
        }
    });
}
