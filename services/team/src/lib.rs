//! The team service: teams, their members and invite codes; the team chat and presence.
//!
//! `domain` holds the rules over the `TeamStore` trait; `policy` the team's tool-use policy
//! (Claude Code permission rules, the team's and each member's); `chat` the chat (durable, in the team
//! store) and `presence` the presence (hot, per member and gateway replica, with a TTL, in the
//! `HotStore`), both published on the team's fan-out channel (`events`); `store` implements the store with SeaORM (on PostgreSQL or
//! SQLite); `grpc` is the thin adapter for `covibe.team.v1.TeamService`.

mod chat;
mod convert;
mod domain;
mod error;
mod events;
mod grpc;
mod model;
mod policy;
mod presence;
pub mod store;

pub use chat::{Chat, MAX_CLIENT_ID, MAX_MESSAGE_CHARS, clean_client_id};
pub use domain::{TeamDomain, normalize_invite_code};
pub use error::Error;
pub use grpc::TeamGrpc;
pub use model::{
    Before, ChatMessage, ChatPage, Invite, Member, MemberPresence, PRESENCE_TTL, PolicyRules,
    PolicyScope, PolicyView, PresenceStatus, PresenceUpdate, Role, Team, TeamPolicy, TeamPresence,
};
pub use policy::{Policies, check_rules};
pub use presence::{DIRECT_HOLDER, MAX_WATCHING};
pub use store::{SeaTeamStore, TeamStore};
