//! The team service: teams, their members and invite codes; the team chat and presence.
//!
//! `domain` holds the rules over the `TeamStore` trait; `chat` the chat (durable, in the team
//! store) and presence (hot, with a TTL, in the `HotStore`), both published on the team's
//! fan-out channel (`events`); `store` implements the store with SeaORM (on PostgreSQL or
//! SQLite); `grpc` is the thin adapter for `covibe.team.v1.TeamService`.

mod chat;
mod convert;
mod domain;
mod error;
mod events;
mod grpc;
mod model;
pub mod store;

pub use chat::{Chat, MAX_MESSAGE_CHARS};
pub use domain::{TeamDomain, normalize_invite_code};
pub use error::Error;
pub use grpc::TeamGrpc;
pub use model::{
    Before, ChatMessage, ChatPage, Invite, Member, MemberPresence, PRESENCE_TTL, PresenceStatus,
    Role, Team, TeamPresence,
};
pub use store::{SeaTeamStore, TeamStore};
