//! The JSON shapes of sign-in: sessions, their tokens, devices and one-time codes.

use covibe_proto::auth::v1 as auth;
use serde::{Deserialize, Serialize};

use crate::team::json::{Team, User, team, user};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    pub invite_code: String,
    pub email: String,
    pub display_name: String,
    #[serde(default)]
    pub device_name: Option<String>,
    /// A random key of the joining client's (16 to 128 letters, digits, `-` or `_`), the same
    /// on every retry of this join: a retry whose first try made the member after all signs
    /// that member in (within 15 minutes) instead of refusing the email as taken.
    #[serde(default)]
    pub join_key: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub team: Option<Team>,
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_code: Option<String>,
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
}

pub fn session(s: auth::SessionResponse) -> Session {
    let tokens = s.tokens.unwrap_or_default();
    Session {
        team: s.team.map(team),
        user: s.user.map(user),
        invite_code: (!s.invite_code.is_empty()).then_some(s.invite_code),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        access_expires_at: tokens.access_expires_at_ms,
    }
}

/// One signed-in device.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub device_name: String,
    pub created_at: i64,
    pub last_used_at: i64,
    /// The session of this request.
    pub current: bool,
}

pub fn session_json(s: auth::Session) -> SessionInfo {
    SessionInfo {
        id: s.id,
        device_name: s.device_name,
        created_at: s.created_at_ms,
        last_used_at: s.last_used_at_ms,
        current: s.current,
    }
}

/// A one-time sign-in code, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInCode {
    pub code: String,
    pub expires_at: i64,
    /// What a client shows as a QR code.
    pub qr_payload: String,
}

pub fn code_json(c: auth::SignInCode) -> SignInCode {
    SignInCode {
        code: c.code,
        expires_at: c.expires_at_ms,
        qr_payload: c.qr_payload,
    }
}

/// A refreshed pair.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
}

/// The caller, their team and this session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub team: Option<Team>,
    pub user: Option<User>,
    pub session: Option<SessionInfo>,
}

/// `{sessions}`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// How many sessions ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub ended: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemCode {
    pub code: String,
    #[serde(default)]
    pub device_name: Option<String>,
}
