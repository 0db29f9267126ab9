//! The team service's domain types.

use std::time::Duration;

use covibe_types::{AgentId, ApiError, MessageId, TeamId, UserId};

/// A holder's entry of a present member lives this long after its last update unless
/// configured otherwise; holders repeat it well within it (a gateway every third of it).
pub const PRESENCE_TTL: Duration = Duration::from_secs(90);
/// A member's last-seen entry (written when a holder's last device of theirs goes) is kept
/// this long, so the team still sees when they were last there.
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
    /// The id its client chose, so a retry is stored once.
    pub client_id: Option<String>,
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

    /// Which status a member's devices that disagree show: `busy` over `online` over `away`
    /// (over `offline`, which is no device at all).
    pub(crate) const fn rank(self) -> u8 {
        match self {
            Self::Busy => 3,
            Self::Online => 2,
            Self::Away => 1,
            Self::Offline => 0,
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
    /// The agents the member watches, sorted, without duplicates.
    pub watching: Vec<AgentId>,
}

/// One holder's word on a member's presence (`UpdatePresence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// `None` is "still here": the holder's `away` or `busy` is kept, else `online`.
    pub status: Option<PresenceStatus>,
    /// Who holds the entry (a gateway replica's instance id).
    pub holder: String,
    /// The agents the member watches through this holder.
    pub watching: Vec<AgentId>,
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

/// One scope's tool-use rules as stored: each rule's text as `covibe_policy::Rule` writes it,
/// which parses back to the same rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Whose rules a change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope {
    /// The team's, for every agent of the team (owners and admins set them).
    Team,
    /// The caller's own, for their agents only.
    Mine,
}

/// The team's rules and when and by whom they were last set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamPolicy {
    pub rules: PolicyRules,
    /// 0 when never set.
    pub updated_at_ms: i64,
    pub updated_by: Option<UserId>,
}

/// What a member (or the orchestrator, for a member's agent) reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyView {
    pub team: TeamPolicy,
    /// The member's own rules.
    pub mine: PolicyRules,
    /// The member is an owner or admin.
    pub can_edit_team: bool,
}
