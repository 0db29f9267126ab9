//! Who is calling. Access tokens are short-lived JWTs signed with Ed25519 (algorithm pinned to
//! EdDSA, `kid`, `iss`, `aud`, `exp` and `nbf` all checked). Only the auth service holds the
//! signing key; every other service verifies with the public key and decides for itself.

mod keys;
mod token;

pub use keys::{KeyFiles, load_or_generate, load_verifier};
pub use token::{Principal, Signer, TokenKind, Verifier, bearer_from_metadata};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key material: {0}")]
    Key(String),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}
