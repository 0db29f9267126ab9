//! Teams: creating one, its members and their roles, its invites, its tool-use policy. The team
//! service checks the caller itself (read all; invites, removal and the team's policy for owners
//! and admins; roles and ownership for the owner; each member their own policy).

pub(crate) mod json;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth;
use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as team_pb;
use covibe_types::ApiError;

use crate::auth::json::code_json;
use crate::http::error::HttpError;
use crate::http::extract::{ApiJson, optional_json};
use crate::member::Member;
use crate::state::Gateway;
use json::{CreateInvite, SetRole, Transfer, invite_json};

type Result<T> = std::result::Result<T, HttpError>;
type Shared = State<Arc<Gateway>>;

pub(crate) async fn create_team(
    State(gw): State<Arc<Gateway>>,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<json::CreateTeam>,
) -> Result<impl IntoResponse> {
    let request = auth::RegisterRequest {
        team_name: body.name,
        email: body.email,
        display_name: body.display_name,
        device_name: crate::auth::device_name(body.device_name, &headers),
    };
    let session = gw.auth.clone().register(request).await?.into_inner();
    Ok((
        StatusCode::CREATED,
        Json(crate::auth::json::session(session)),
    ))
}

pub(crate) async fn get_team(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse> {
    let team = gw
        .team
        .clone()
        .get_team(bearer(team_pb::GetTeamRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::team_view(team)))
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
        Json(json::NewInvite {
            id: invite.invite_id,
            invite_code: invite.invite_code,
            expires_at: invite.expires_at_ms,
            max_uses: invite.max_uses,
        }),
    ))
}

pub(crate) async fn invites(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let list = gw
        .team
        .clone()
        .list_invites(bearer(team_pb::ListInvitesRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::InviteList {
        invites: list.invites.into_iter().map(invite_json).collect(),
    }))
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
    Ok(Json(json::InviteEnvelope {
        invite: invite_json(invite),
    }))
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
    Ok(Json(json::Done { ok: true }))
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
    Ok(Json(json::MemberEnvelope {
        member: json::user(user),
    }))
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
    Ok(Json(json::team_view(team)))
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

/// The team's tool-use rules and the caller's own (any member).
pub(crate) async fn get_policy(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let policy = gw
        .team
        .clone()
        .get_policy(bearer(team_pb::GetPolicyRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::policy_view(policy)))
}

/// Replaces the team's rules (owners and admins; each rule checked by the team service).
pub(crate) async fn put_team_policy(
    State(gw): Shared,
    member: Member,
    ApiJson(body): ApiJson<json::TeamPolicyPut>,
) -> Result<impl IntoResponse> {
    let rules = json::PolicyRules {
        allow: body.allow,
        deny: body.deny,
    };
    put_policy(
        &gw,
        &member,
        team_pb::PolicyScope::Team,
        rules,
        body.if_updated_at,
    )
    .await
}

/// Replaces the caller's own rules for their agents (stricter than the team's, never looser).
pub(crate) async fn put_my_policy(
    State(gw): Shared,
    member: Member,
    ApiJson(body): ApiJson<json::PolicyRules>,
) -> Result<impl IntoResponse> {
    put_policy(&gw, &member, team_pb::PolicyScope::Mine, body, None).await
}

async fn put_policy(
    gw: &Gateway,
    member: &Member,
    scope: team_pb::PolicyScope,
    body: json::PolicyRules,
    if_updated_at_ms: Option<i64>,
) -> Result<Json<json::PolicyView>> {
    let request = team_pb::PutPolicyRequest {
        scope: scope as i32,
        rules: Some(team_pb::PolicyRules {
            allow: body.allow,
            deny: body.deny,
        }),
        if_updated_at_ms,
    };
    let policy = gw
        .team
        .clone()
        .put_policy(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::policy_view(policy)))
}
