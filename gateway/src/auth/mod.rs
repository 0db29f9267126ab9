//! Signing in and sessions: invite sign-in, refresh, device and recovery codes, the caller's
//! sessions and logging out. The auth service checks the caller itself.

pub(crate) mod json;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth;

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::state::Gateway;
use json::{RedeemCode, code_json, session_json};

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

pub(crate) async fn login(
    State(gw): State<Arc<Gateway>>,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<json::Login>,
) -> Result<impl IntoResponse> {
    let request = auth::LoginRequest {
        invite_code: body.invite_code,
        email: body.email,
        display_name: body.display_name,
        device_name: crate::auth::device_name(body.device_name, &headers),
        join_key: body.join_key.unwrap_or_default(),
    };
    let session = gw.auth.clone().login(request).await?.into_inner();
    Ok(Json(json::session(session)))
}

pub(crate) async fn refresh(
    State(gw): State<Arc<Gateway>>,
    ApiJson(body): ApiJson<json::Refresh>,
) -> Result<impl IntoResponse> {
    let pair = gw
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(Json(json::TokenPair {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        access_expires_at: pair.access_expires_at_ms,
    }))
}

pub(crate) async fn me(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let me = gw
        .auth
        .clone()
        .me(bearer(auth::MeRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::Me {
        team: me.team.map(crate::team::json::team),
        user: me.user.map(crate::team::json::user),
        session: me.session.map(session_json),
    }))
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
    Ok(Json(json::session(session)))
}

pub(crate) async fn sessions(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let list = gw
        .auth
        .clone()
        .list_sessions(bearer(auth::ListSessionsRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::SessionList {
        sessions: list.sessions.into_iter().map(session_json).collect(),
    }))
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
    Ok(Json(json::Ended { ended: ended.ended }))
}

pub(crate) async fn logout(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let ended = gw
        .auth
        .clone()
        .logout(bearer(auth::LogoutRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::Ended { ended: ended.ended }))
}

pub(crate) async fn logout_all(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let ended = gw
        .auth
        .clone()
        .logout_all(bearer(auth::LogoutRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::Ended { ended: ended.ended }))
}
