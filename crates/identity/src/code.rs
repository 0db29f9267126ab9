//! One-time codes a person types or scans: invite, device and recovery codes. 80 random bits
//! from the OS, shown as `XXXX-XXXX-XXXX-XXXX` (Crockford base32), compared without dashes,
//! spaces or case (look-alikes folded), and stored only as a SHA-256 hash. Also the random
//! bearer tokens and their hashes, and a constant-time compare, for every service.

use rand::RngCore;
use sha2::Digest;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Digits of a code, without its dashes.
pub const CODE_DIGITS: usize = 16;

/// A new code: 80 bits from the OS, as 16 base32 digits in groups of four.
pub fn new_code() -> String {
    let mut bytes = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut wide = [0u8; 16];
    wide[6..].copy_from_slice(&bytes);
    let mut value = u128::from_be_bytes(wide);
    let mut digits = [0u8; CODE_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = CROCKFORD[usize::try_from(value & 31).unwrap_or(0)];
        value >>= 5;
    }
    digits
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, compared without dashes, spaces or case, with Crockford's look-alikes
/// folded.
pub fn normalize(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

/// Whether a typed code could be one of ours at all (before any lookup).
pub fn well_formed(code: &str) -> bool {
    code.len() <= 64 && normalize(code).len() == CODE_DIGITS
}

/// What a code is stored as.
pub fn hash_code(code: &str) -> String {
    sha256_hex(normalize(code).as_bytes())
}

/// What a bearer token is stored as.
pub fn hash_token(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh bearer token: 256 random bits from the OS, URL-safe base64 (43 characters).
pub fn new_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Whether two token hashes are the same, in constant time.
pub fn same_hash(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_normalize() {
        let a = new_code();
        let b = new_code();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert!(well_formed(&a));
        assert!(!well_formed("ABCD"));
        assert_eq!(
            normalize(&a.to_lowercase().replace('-', " ")),
            normalize(&a)
        );
        assert_eq!(hash_code(&a), hash_code(&a.to_lowercase()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let (x, y) = (new_token(), new_token());
        assert_ne!(x, y);
        assert_eq!(x.len(), 43);
        assert!(same_hash(&hash_token(&x), &hash_token(&x)));
        assert!(!same_hash(&hash_token(&x), &hash_token(&y)));
    }
}
