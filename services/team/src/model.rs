//! The team service's domain types.

use covibe_types::{TeamId, UserId};

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
