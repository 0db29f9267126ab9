//! Accounts: the caller and their sessions (`/api/auth/...`), sign-in with a device or
//! recovery code, and what owners and admins do to their team (invites, members, roles).
//! Each route is one call to the auth or team service, which checks the caller itself.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth;
use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as team_pb;
use covibe_types::ApiError;
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::dto;
use crate::error::HttpError;
use crate::rest::{ApiJson, Member, optional_json};

type Result<T> = std::result::Result<T, HttpError>;
type Shared = State<Arc<Gateway>>;

/// What the sessions list calls a device that did not name itself: its browser and system,
/// from the `User-Agent`.
pub(crate) fn device_name(given: Option<String>, headers: &HeaderMap) -> String {
    if let Some(name) = given.filter(|n| !n.trim().is_empty()) {
        return name;
    }
    let agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .into_iter()
    .find(|(needle, _)| agent.contains(needle))
    .map(|(_, name)| name);
    let system = [
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Android", "Android"),
        ("Mac OS X", "macOS"),
        ("Windows", "Windows"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(needle, _)| agent.contains(needle))
    .map(|(_, name)| name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(one), None) | (None, Some(one)) => one.to_owned(),
        (None, None) => "a device".to_owned(),
    }
}

/// A role's JSON name.
pub(crate) fn role(raw: i32) -> &'static str {
    match common::Role::try_from(raw) {
        Ok(common::Role::Owner) => "owner",
        Ok(common::Role::Admin) => "admin",
        _ => "member",
    }
}

fn session_json(s: auth::Session) -> serde_json::Value {
    json!({
        "id": s.id,
        "deviceName": s.device_name,
        "createdAt": s.created_at_ms,
        "lastUsedAt": s.last_used_at_ms,
        "current": s.current,
    })
}

fn code_json(c: auth::SignInCode) -> serde_json::Value {
    json!({"code": c.code, "expiresAt": c.expires_at_ms, "qrPayload": c.qr_payload})
}

fn invite_json(i: team_pb::Invite) -> serde_json::Value {
    json!({
        "id": i.id,
        "createdBy": i.created_by,
        "createdAt": i.created_at_ms,
        "expiresAt": i.expires_at_ms,
        "maxUses": i.max_uses,
        "uses": i.uses,
        "revoked": i.revoked,
        "usable": i.usable,
    })
}

pub(crate) async fn me(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let me = gw
        .auth
        .clone()
        .me(bearer(auth::MeRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({
        "team": me.team.map(dto::team),
        "user": me.user.map(dto::user),
        "session": me.session.map(session_json),
    })))
}

pub(crate) async fn create_device_code(
    State(gw): Shared,
    member: Member,
) -> Result<impl IntoResponse> {
    let code = gw
        .auth
        .clone()
        .create_device_code(bearer(auth::CreateDeviceCodeRequest {}, &member.token))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(code_json(code))))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RedeemCode {
    code: String,
    #[serde(default)]
    device_name: Option<String>,
}

pub(crate) async fn redeem_code(
    State(gw): Shared,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RedeemCode>,
) -> Result<impl IntoResponse> {
    let request = auth::RedeemSignInCodeRequest {
        code: body.code,
        device_name: device_name(body.device_name, &headers),
    };
    let session = gw
        .auth
        .clone()
        .redeem_sign_in_code(request)
        .await?
        .into_inner();
    Ok(Json(dto::session(session)))
}

pub(crate) async fn sessions(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let list = gw
        .auth
        .clone()
        .list_sessions(bearer(auth::ListSessionsRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({
        "sessions": list.sessions.into_iter().map(session_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn revoke_session(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let ended = gw
        .auth
        .clone()
        .revoke_session(bearer(
            auth::RevokeSessionRequest { session_id: id },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({"ended": ended.ended})))
}

pub(crate) async fn logout(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let ended = gw
        .auth
        .clone()
        .logout(bearer(auth::LogoutRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({"ended": ended.ended})))
}

pub(crate) async fn logout_all(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let ended = gw
        .auth
        .clone()
        .logout_all(bearer(auth::LogoutRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({"ended": ended.ended})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateInvite {
    #[serde(default)]
    max_uses: u32,
    #[serde(default)]
    expires_in_hours: u32,
    /// The older spelling, in seconds.
    #[serde(default)]
    ttl_seconds: u32,
}

pub(crate) async fn create_invite(
    State(gw): Shared,
    member: Member,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let body: CreateInvite = optional_json(&body)?;
    let ttl_seconds = match body.expires_in_hours {
        0 => body.ttl_seconds,
        hours => hours.saturating_mul(3600),
    };
    let request = bearer(
        team_pb::CreateInviteRequest {
            max_uses: body.max_uses,
            ttl_seconds,
        },
        &member.token,
    );
    let invite = gw.team.clone().create_invite(request).await?.into_inner();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": invite.invite_id,
            "inviteCode": invite.invite_code,
            "expiresAt": invite.expires_at_ms,
            "maxUses": invite.max_uses,
        })),
    ))
}

pub(crate) async fn invites(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let list = gw
        .team
        .clone()
        .list_invites(bearer(team_pb::ListInvitesRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({
        "invites": list.invites.into_iter().map(invite_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn revoke_invite(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let invite = gw
        .team
        .clone()
        .revoke_invite(bearer(
            team_pb::RevokeInviteRequest { invite_id: id },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({"invite": invite_json(invite)})))
}

pub(crate) async fn remove_member(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    gw.team
        .clone()
        .remove_member(bearer(
            team_pb::RemoveMemberRequest { user_id: id },
            &member.token,
        ))
        .await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SetRole {
    role: String,
}

pub(crate) async fn set_role(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<impl IntoResponse> {
    let role = match body.role.as_str() {
        "admin" => common::Role::Admin,
        "member" => common::Role::Member,
        "owner" => {
            return Err(ApiError::invalid(
                "ownership moves with POST /api/team/transfer-ownership",
            )
            .into());
        }
        _ => return Err(ApiError::invalid("role must be admin or member").into()),
    };
    let user = gw
        .team
        .clone()
        .set_member_role(bearer(
            team_pb::SetMemberRoleRequest {
                user_id: id,
                role: role as i32,
            },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({"member": dto::user(user)})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Transfer {
    user_id: String,
}

pub(crate) async fn transfer_ownership(
    State(gw): Shared,
    member: Member,
    ApiJson(body): ApiJson<Transfer>,
) -> Result<impl IntoResponse> {
    let team = gw
        .team
        .clone()
        .transfer_ownership(bearer(
            team_pb::TransferOwnershipRequest {
                user_id: body.user_id,
            },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({
        "team": team.team.map(dto::team),
        "members": team.members.into_iter().map(dto::user).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn recovery_code(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let code = gw
        .auth
        .clone()
        .create_recovery_code(bearer(
            auth::CreateRecoveryCodeRequest { user_id: id },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(code_json(code))))
}
