//! The auth service: sessions for members (sign-up through the team service, an invite code,
//! a device code or a recovery code), short-lived access tokens and rotating refresh tokens
//! with reuse detection, and the end of sessions (logout, revocation, removal) everywhere.
//!
//! `domain` holds the rules over the `SessionStore` trait; `store` implements it with
//! SeaORM; `grpc` is the thin adapter for `covibe.auth.v1.AuthService`.

mod convert;
mod domain;
mod error;
mod grpc;
mod model;
pub mod store;

pub use domain::{
    DEVICE_CODE_TTL, RECOVERY_CODE_TTL, REFRESH_GRACE, Sessions, clean_device_name, create_code,
};
pub use error::Error;
pub use grpc::AuthGrpc;
pub use model::{CodeKind, IssuedTokens, RefreshRecord, Session, SignInCode};
pub use store::{SeaSessionStore, SessionStore};
