//! Tool requests an agent waits on: the team's list, and the owner's answer, over REST and
//! Socket.io alike (`answer` is written once). The orchestrator checks the caller itself (any
//! member reads, only the agent's owner answers).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::orchestrator::v1 as orch;
use serde_json::json;

use super::Result;
use super::json::{self, AnswerPermission, AnswerPermissionEvent, PermissionDecisionName};
use crate::member::Member;
use crate::realtime::frames::Prepared;
use crate::realtime::socket::{Ack, Data, SocketRef, acting, refuse};
use crate::state::Gateway;

/// The team's waiting tool requests, oldest first, as the orchestrator has them.
pub(crate) async fn pending(gw: &Gateway, token: &str) -> Result<Vec<orch::PermissionRequest>> {
    Ok(gw
        .orchestrator
        .clone()
        .list_permissions(bearer(orch::ListPermissionsRequest {}, token))
        .await?
        .into_inner()
        .requests)
}

/// The owner's answer as they sent it.
struct Reply {
    decision: PermissionDecisionName,
    message: Option<String>,
    updated_input: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Answers one of the caller's agents' tool requests.
async fn answer(
    gw: &Gateway,
    token: &str,
    agent_id: String,
    request_id: String,
    reply: Reply,
) -> Result<json::PermissionRequest> {
    let request = orch::AnswerPermissionRequest {
        agent_id,
        request_id,
        decision: json::decision_pb(reply.decision).into(),
        message: reply.message.unwrap_or_default(),
        updated_input_json: reply
            .updated_input
            .map(|input| serde_json::Value::Object(input).to_string())
            .unwrap_or_default(),
    };
    let decided = gw
        .orchestrator
        .clone()
        .answer_permission(bearer(request, token))
        .await?
        .into_inner();
    Ok(json::permission(decided))
}

// REST

/// `GET /api/agent/permissions` → `{requests}`.
pub(crate) async fn list(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse> {
    let requests = pending(&gw, &member.token).await?;
    Ok(Json(json::PermissionList {
        requests: requests.into_iter().map(json::permission).collect(),
    }))
}

/// `POST /api/agent/{id}/permissions/{requestId} {decision, message?, updatedInput?}` →
/// `{request}`.
pub(crate) async fn answer_rest(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path((id, request_id)): Path<(String, String)>,
    crate::http::extract::ApiJson(body): crate::http::extract::ApiJson<AnswerPermission>,
) -> Result<impl IntoResponse> {
    let reply = Reply {
        decision: body.decision,
        message: body.message,
        updated_input: body.updated_input,
    };
    let request = answer(&gw, &member.token, id, request_id, reply).await?;
    Ok(Json(json::PermissionEnvelope { request }))
}

// Socket.io

/// `agent_permission_answer {agentId, requestId, decision: allow | deny |
/// allow_always_for_agent, message?, updatedInput?}` → ack `{ok, request}`.
pub(crate) async fn on_answer(
    socket: SocketRef,
    data: Data<AnswerPermissionEvent>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let usage = "agent_permission_answer needs {agentId, requestId, decision: allow | deny | \
                 allow_always_for_agent, message?, updatedInput?: object}";
    let Some((joined, event, ack)) = acting(&socket, data, ack, usage) else {
        return;
    };
    let reply = Reply {
        decision: event.decision,
        message: event.message,
        updated_input: event.updated_input,
    };
    let result = answer(&gw, &joined.token, event.agent_id, event.request_id, reply).await;
    match result {
        Ok(request) => ack.send(&json!({"ok": true, "request": request})),
        Err(err) => refuse(ack, err.0),
    }
}

/// Sends a socket that just joined (or resumed) the team's waiting tool requests, as
/// `agent_permission` events (`canAnswer` on its member's own agents), so a request asked while
/// it was away is shown. A client keeps one card per `(agentId, requestId)`.
pub(crate) async fn joined(gw: &Gateway, socket: &SocketRef) {
    let Some(joined) = crate::realtime::socket::SocketState::joined(socket) else {
        return;
    };
    let requests = match pending(gw, &joined.token).await {
        Ok(requests) => requests,
        Err(err) => {
            tracing::warn!(sid = socket.id, error = %err.0.message, "could not replay waiting tool requests");
            return;
        }
    };
    for request in requests {
        let Some(prepared) = Prepared::permission(request) else {
            continue;
        };
        if prepared.deliver(socket, &joined).is_err() {
            // Its queue is full: it is told to resync, and gets them again when it rejoins.
            return;
        }
    }
}
