//! The JSON shapes of sign-in: sessions, their tokens, devices and one-time codes.

use covibe_proto::auth::v1 as auth;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::team::json::{Team, User, team, user};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    pub invite_code: String,
    pub email: String,
    pub display_name: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

#[derive(Debug, Serialize)]
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

pub fn session_json(s: auth::Session) -> serde_json::Value {
    json!({
        "id": s.id,
        "deviceName": s.device_name,
        "createdAt": s.created_at_ms,
        "lastUsedAt": s.last_used_at_ms,
        "current": s.current,
    })
}

pub fn code_json(c: auth::SignInCode) -> serde_json::Value {
    json!({"code": c.code, "expiresAt": c.expires_at_ms, "qrPayload": c.qr_payload})
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemCode {
    pub code: String,
    #[serde(default)]
    pub device_name: Option<String>,
}
