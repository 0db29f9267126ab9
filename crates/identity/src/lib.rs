//! Who is calling. Access tokens are short-lived JWTs signed with Ed25519 (algorithm pinned to
//! EdDSA, `kid`, `iss`, `aud`, `exp` and `nbf` all checked), each naming the member's sign-in
//! session. Only the auth service holds the signing key; every other service verifies with the
//! public keys, refuses the sessions that ended (`revocation`), and decides for itself. A
//! service may hold a key of its own, labelled with its name in the verifying file, that signs
//! only its own service tokens (`add_service_key`, `load_service_signer`).

pub mod code;
#[cfg(test)]
mod fuzz;
mod keys;
mod load;
pub mod revocation;
mod token;
pub mod vault;

pub use keys::{KeyFiles, add_service_key, retire, retire_service_key, rotate};
pub use load::{load_or_generate, load_service_signer, load_signer, load_verifier};
pub use revocation::{Ended, Revocations};
pub use token::{Principal, Signer, TokenKind, Verifier, bearer_from_metadata};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} file {path} does not exist: {hint}")]
    Missing {
        path: String,
        what: String,
        /// What creates it.
        hint: String,
    },
    #[error("key material: {0}")]
    Key(String),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}
