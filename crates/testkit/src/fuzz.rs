//! What every fuzz target (a property test on the stable toolchain) shares: its configuration,
//! and byte edits that turn a valid encoding into the near misses a decoder must refuse.

use proptest::prelude::*;

/// `cases` cases, and no files of failures written into the source tree (a failure found is
/// kept as a named regression test instead).
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One edit: `(kind, at, byte)`, `at` taken modulo the input's length.
pub type Edit = (u8, usize, u8);

/// Between `counts.start` and `counts.end - 1` edits.
pub fn edits(counts: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(any::<Edit>(), counts)
}

/// Applies `edits` to a valid input: a byte flipped, inserted or removed, the input cut short,
/// and, with `replace`, a byte replaced by `replace(byte)` (a varint made huge, a character of
/// the format's own alphabet).
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit], replace: Option<fn(u8) -> u8>) -> Vec<u8> {
    let kinds = if replace.is_some() { 5 } else { 4 };
    for &(kind, at, byte) in edits {
        let at = at % (bytes.len() + 1);
        match (kind % kinds, replace) {
            (0, _) if at < bytes.len() => bytes[at] ^= byte | 1,
            (1, _) => bytes.insert(at, byte),
            (2, _) if at < bytes.len() => {
                bytes.remove(at);
            }
            (3, Some(replace)) if at < bytes.len() => bytes[at] = replace(byte),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// A length or varint byte made huge: a declared length past the input.
pub fn huge_length(byte: u8) -> u8 {
    0x80 | byte
}
