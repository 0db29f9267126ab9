//! The auth service's domain types.

use covibe_types::{SessionId, TeamId, UserId};

/// One signed-in device of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub device_name: String,
    pub created_at_ms: i64,
    /// The last sign-in or refresh.
    pub last_used_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// A refresh token, by hash: one link of its session's rotating chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub session: SessionId,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub expires_at_ms: i64,
    /// When it was exchanged for the next one.
    pub used_at_ms: Option<i64>,
    pub revoked: bool,
    /// The next token, sealed with this one (only its holder can open it): a retry within the
    /// grace gets the same pair.
    pub successor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// Made by a signed-in member for a new device of theirs.
    Device,
    /// Made by an owner or admin (or an operator) for a member who has no device left.
    Recovery,
}

impl CodeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Recovery => "recovery",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "device" => Some(Self::Device),
            "recovery" => Some(Self::Recovery),
            _ => None,
        }
    }
}

/// A one-time sign-in code, by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInCode {
    pub code_hash: String,
    pub kind: CodeKind,
    pub user_id: UserId,
    pub team_id: TeamId,
    /// `None` when an operator made it on the server.
    pub created_by: Option<UserId>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What a sign-in or a refresh hands the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at_ms: i64,
    pub session_id: SessionId,
}
