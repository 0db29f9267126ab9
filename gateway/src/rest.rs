//! REST routes under `/api`, each a translation into one gRPC call.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth;
use covibe_proto::orchestrator::v1 as orch;
use covibe_proto::team::v1 as team_pb;
use covibe_types::{ApiError, Code, TeamId, UserId};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Gateway;
use crate::account;
use crate::dto;
use crate::error::HttpError;

type Result<T> = std::result::Result<T, HttpError>;
type Shared = State<Arc<Gateway>>;

/// Every route here has a row in `openapi::ROUTES` (the tests check both ways); layers go
/// after the routes, since `layer` wraps only the routes added before it.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.max_body_bytes;
    Router::new()
        .route("/api/team/create", post(create_team))
        .route("/api/team/invite", post(account::create_invite))
        .route("/api/team/invites", get(account::invites))
        .route("/api/team/invite/{id}", delete(account::revoke_invite))
        .route("/api/team", get(get_team))
        .route("/api/team/members/{id}", delete(account::remove_member))
        .route("/api/team/members/{id}/role", put(account::set_role))
        .route(
            "/api/team/members/{id}/recovery-code",
            post(account::recovery_code),
        )
        .route(
            "/api/team/transfer-ownership",
            post(account::transfer_ownership),
        )
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/me", get(account::me))
        .route("/api/auth/device", post(account::create_device_code))
        .route("/api/auth/device/redeem", post(account::redeem_code))
        .route("/api/auth/sessions", get(account::sessions))
        .route("/api/auth/sessions/{id}", delete(account::revoke_session))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/auth/logout-all", post(account::logout_all))
        .route("/api/agent/spawn", post(spawn))
        .route("/api/agent/list", get(list_agents))
        .route("/api/agent/{id}", get(get_agent).delete(kill_agent))
        .route("/api/agent/{id}/output", get(agent_output))
        .route("/api/chat/message", post(crate::chat::post_message))
        .route("/api/chat/history", get(crate::chat::history))
        .route("/api/team/presence", get(crate::chat::presence))
        .route("/api/vm/register", post(crate::vm::register))
        .route("/api/vm/update", axum::routing::put(crate::vm::update))
        .route("/api/vm/token", post(crate::vm::create_token))
        .route("/api/vm/list", get(crate::vm::list))
        .route("/api/webhook/push", post(crate::webhook::push))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(crate::openapi::serve))
        .fallback(crate::static_files::fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

/// A JSON body whose rejections are answered in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(HttpError(json_error(&rejection))),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(Code::PayloadTooLarge, "request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::invalid("expected a JSON body (content-type: application/json)")
        }
        _ => ApiError::invalid(format!("invalid JSON body: {}", rejection.body_text())),
    }
}

/// The member a request's bearer token names.
pub struct Member {
    pub user_id: UserId,
    pub team_id: TeamId,
    pub token: String,
}

/// An optional JSON body: none (or only whitespace) means the defaults.
pub(crate) fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")).into())
}

impl FromRequestParts<Arc<Gateway>> for Member {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Gateway>) -> Result<Self> {
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
        let (user_id, team_id) = state.verifier.verify(token)?.member()?;
        Ok(Self {
            user_id,
            team_id,
            token: token.to_owned(),
        })
    }
}

async fn create_team(
    State(gw): Shared,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<dto::CreateTeam>,
) -> Result<impl IntoResponse> {
    let request = auth::RegisterRequest {
        team_name: body.name,
        email: body.email,
        display_name: body.display_name,
        device_name: account::device_name(body.device_name, &headers),
    };
    let session = gw.auth.clone().register(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(dto::session(session))))
}

async fn login(
    State(gw): Shared,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<dto::Login>,
) -> Result<impl IntoResponse> {
    let request = auth::LoginRequest {
        invite_code: body.invite_code,
        email: body.email,
        display_name: body.display_name,
        device_name: account::device_name(body.device_name, &headers),
    };
    let session = gw.auth.clone().login(request).await?.into_inner();
    Ok(Json(dto::session(session)))
}

async fn refresh(
    State(gw): Shared,
    ApiJson(body): ApiJson<dto::Refresh>,
) -> Result<impl IntoResponse> {
    let pair = gw
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(Json(json!({
        "accessToken": pair.access_token,
        "refreshToken": pair.refresh_token,
        "accessExpiresAt": pair.access_expires_at_ms,
    })))
}

async fn get_team(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let team = gw
        .team
        .clone()
        .get_team(bearer(team_pb::GetTeamRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({
        "team": team.team.map(dto::team),
        "members": team.members.into_iter().map(dto::user).collect::<Vec<_>>(),
    })))
}

async fn spawn(
    State(gw): Shared,
    member: Member,
    ApiJson(body): ApiJson<dto::Spawn>,
) -> Result<impl IntoResponse> {
    tracing::info!(user_id = %member.user_id, team_id = %member.team_id, "spawn requested over rest");
    let request = orch::SpawnAgentRequest {
        task: body.task,
        vm_id: body.vm_id.unwrap_or_default(),
    };
    let agent = gw
        .orchestrator
        .clone()
        .spawn_agent(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(json!({"agent": dto::agent(agent)})),
    ))
}

async fn list_agents(State(gw): Shared, member: Member) -> Result<impl IntoResponse> {
    let list = gw
        .orchestrator
        .clone()
        .list_agents(bearer(orch::ListAgentsRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(
        json!({"agents": list.agents.into_iter().map(dto::agent).collect::<Vec<_>>()}),
    ))
}

async fn get_agent(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let agent = gw
        .orchestrator
        .clone()
        .get_agent(bearer(
            orch::GetAgentRequest { agent_id: id },
            &member.token,
        ))
        .await?;
    Ok(Json(json!({"agent": dto::agent(agent.into_inner())})))
}

async fn kill_agent(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let command = crate::control::command("kill", None).map_err(HttpError)?;
    let request = orch::ControlAgentRequest {
        agent_id: id,
        command: Some(command),
    };
    gw.orchestrator
        .clone()
        .control_agent(bearer(request, &member.token))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"ok": true}))))
}

async fn agent_output(
    State(gw): Shared,
    member: Member,
    Path(id): Path<String>,
    query: std::result::Result<Query<dto::OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let request = orch::GetOutputRequest {
        agent_id: id.clone(),
        from_seq: query.from_seq,
        limit: query.limit.unwrap_or(0),
    };
    let page = gw
        .orchestrator
        .clone()
        .get_output(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(dto::output_page(id, page)))
}

async fn readyz(State(gw): Shared) -> impl IntoResponse {
    if gw.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
