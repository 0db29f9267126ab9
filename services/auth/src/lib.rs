//! The auth service: creates sessions for members (sign-up through the team service, or an
//! invite code), issues short-lived access tokens and rotating refresh tokens with reuse
//! detection, and verifies tokens for callers that want a second opinion.
//!
//! `sessions` holds the rules over the `RefreshStore` trait; `store` implements it with SeaORM;
//! `grpc` is the thin adapter for `covibe.auth.v1.AuthService`.

mod grpc;
mod sessions;
pub mod store;

pub use grpc::AuthGrpc;
pub use sessions::{Error, IssuedTokens, Sessions};
pub use store::{RefreshStore, SeaRefreshStore};
