//! The team service's domain types.

use std::time::Duration;

use covibe_types::{ApiError, MessageId, TeamId, UserId};

/// A present member's entry lives this long after its last update; clients repeat their status
/// well within it (the gateway every 30 s per socket).
pub const PRESENCE_TTL: Duration = Duration::from_secs(90);
/// An `offline` entry is kept this long, so the team still sees when a member was last there.
pub const OFFLINE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub created_at_ms: i64,
}

/// What a member may do in their team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    // Ordered from least to most: `a > b` reads "a outranks b".
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// Owners and admins manage invites and members.
    pub const fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: UserId,
    pub team_id: TeamId,
    pub email: String,
    pub display_name: String,
    pub created_at_ms: i64,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// What owners and admins list and revoke it by (never the code).
    pub id: String,
    pub created_at_ms: i64,
    pub code_hash: String,
    pub team_id: TeamId,
    pub created_by: UserId,
    pub expires_at_ms: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

impl Invite {
    pub fn usable(&self, now: i64) -> bool {
        !self.revoked && now < self.expires_at_ms && self.uses < self.max_uses
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: MessageId,
    pub team_id: TeamId,
    pub user_id: UserId,
    /// The author's display name when it was posted.
    pub display_name: String,
    pub text: String,
    pub created_at_ms: i64,
}

/// A history cursor: messages strictly before `(at_ms, id)`; without an id, strictly before
/// `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    pub at_ms: i64,
    pub id: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPage {
    /// Oldest first.
    pub messages: Vec<ChatMessage>,
    /// Older messages exist before the first one.
    pub has_more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceStatus {
    Online,
    Away,
    Busy,
    Offline,
}

impl PresenceStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    pub(crate) fn ttl(self) -> Duration {
        match self {
            Self::Offline => OFFLINE_TTL,
            _ => PRESENCE_TTL,
        }
    }
}

impl std::str::FromStr for PresenceStatus {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, ApiError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "online" => Ok(Self::Online),
            "away" => Ok(Self::Away),
            "busy" => Ok(Self::Busy),
            "offline" => Ok(Self::Offline),
            _ => Err(ApiError::invalid(
                "status must be one of online, away, busy, offline",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPresence {
    pub user_id: UserId,
    pub display_name: String,
    pub status: PresenceStatus,
    /// When the member's presence was last updated; 0 when unknown.
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamPresence {
    pub team_id: TeamId,
    /// Every member, in the order they joined.
    pub users: Vec<MemberPresence>,
    /// For a snapshot taken with an update: greater than that of every earlier snapshot of the
    /// team. 0 for a plain read.
    pub version: u64,
}

impl TeamPresence {
    pub fn status_of(&self, user: UserId) -> Option<PresenceStatus> {
        self.users
            .iter()
            .find(|u| u.user_id == user)
            .map(|u| u.status)
    }
}
