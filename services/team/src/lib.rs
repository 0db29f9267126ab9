//! The team service: teams, their members and invite codes.
//!
//! `domain` holds the rules over the `TeamStore` trait; `store` implements it with SeaORM (on
//! PostgreSQL or SQLite); `grpc` is the thin adapter for `covibe.team.v1.TeamService`.

mod domain;
mod error;
mod grpc;
pub mod store;

pub use domain::{Invite, Member, Team, TeamDomain, normalize_invite_code};
pub use error::Error;
pub use grpc::TeamGrpc;
pub use store::{SeaTeamStore, TeamStore};
