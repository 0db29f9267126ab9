//! Team chat and presence at the gateway: the REST routes, the Socket.io events
//! (`chat_message`, `presence_update`, `agent_watch` in; `chat_message`, `team_presence` out)
//! and, in `presence`, what this gateway tells the team service of the members joined on it.
//! The team service checks and stores everything; this module only translates.
//!
//! A socket's presence: joining a team makes its member present ("still here": `away` and
//! `busy` are kept, anything else becomes `online`); `presence_update` sets the status the
//! socket stands for from then on, `agent_watch` the agent it watches (the agent view open on
//! it); the member's sockets here are merged into this gateway's word on them.

pub(crate) mod json;
mod presence;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::team::v1 as pb;
use covibe_types::{AgentId, ApiError};
use serde_json::json;

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::realtime::socket::{
    Ack, Data, SocketRef, SocketState, acting, invalid, not_joined, refuse,
};
use crate::state::Gateway;
use json::{
    AgentWatch, HistoryQuery, PostMessage, PresenceUpdate, message_view, parse_status,
    presence_view,
};
pub(crate) use presence::{disconnected, joined, refresh_presence};

// REST

/// Posts to the caller's team chat: the one call behind REST and Socket.io.
async fn post(
    gw: &Gateway,
    token: &str,
    body: PostMessage,
) -> Result<json::ChatMessageView, HttpError> {
    let request = bearer(
        pb::PostMessageRequest {
            text: body.message,
            client_id: body.client_id,
        },
        token,
    );
    let message = gw.team.clone().post_message(request).await?.into_inner();
    Ok(message_view(message))
}

/// `POST /api/chat/message {message, clientId?}` → 201 `{message}` (a retry with the same
/// `clientId` gets the message stored the first time).
pub(crate) async fn post_message(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<impl IntoResponse, HttpError> {
    let message = post(&gw, &member.token, body).await?;
    Ok((StatusCode::CREATED, Json(json::MessageEnvelope { message })))
}

/// `GET /api/chat/history?before=&beforeId=&limit=` → `{messages, hasMore}`, oldest first.
pub(crate) async fn history(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, HttpError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let request = pb::ChatHistoryRequest {
        before_ms: query.before,
        limit: query.limit.unwrap_or(0),
        before_id: query.before_id.unwrap_or_default(),
    };
    let page = gw
        .team
        .clone()
        .chat_history(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::ChatHistory {
        messages: page.messages.into_iter().map(message_view).collect(),
        has_more: page.has_more,
    }))
}

/// `GET /api/team/presence` → `{users}`.
pub(crate) async fn presence(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse, HttpError> {
    let presence = gw
        .team
        .clone()
        .get_presence(bearer(pb::GetPresenceRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(presence_view(presence)))
}

// Socket.io

/// `chat_message {message, clientId?}` → ack `{ok, message}`; the team (this socket
/// included) receives it as a `chat_message` event, once per `clientId`.
pub(crate) async fn on_chat_message(
    socket: SocketRef,
    data: Data<PostMessage>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let usage = "chat_message needs {message, clientId?}";
    let Some((joined, body, ack)) = acting(&socket, data, ack, usage) else {
        return;
    };
    match post(&gw, &joined.token, body).await {
        Ok(message) => ack.send(&json!({"ok": true, "message": message})),
        Err(err) => refuse(ack, err.0),
    }
}

/// `presence_update {status}` → ack `{ok, users}`; a change reaches the team as
/// `team_presence`.
pub(crate) async fn on_presence_update(
    socket: SocketRef,
    data: Data<PresenceUpdate>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let Some(joined) = SocketState::joined(&socket) else {
        return refuse(ack, not_joined());
    };
    let Some(status) = data.ok().and_then(|d| parse_status(&d.status)) else {
        return refuse(
            ack,
            invalid("presence_update needs {status: online | away | busy | offline}"),
        );
    };
    socket.state().presence = Some(status);
    match presence::speak_for(&gw, &joined).await {
        Ok(presence) => {
            ack.send(&json!({"ok": true, "users": presence_view(presence).users}));
        }
        Err(err) => refuse(ack, err),
    }
}

/// `agent_watch {agentId: string | null}` → ack `{ok: true}`: the agent this socket watches
/// (the agent view open on it), or none. The team sees it in the member's `watching` (a
/// `team_presence` event when that changes); a socket that disconnects watches nothing.
pub(crate) async fn on_agent_watch(
    socket: SocketRef,
    data: Data<AgentWatch>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let usage = "agent_watch needs {agentId: an agent id, or null}";
    let Some((joined, body, ack)) = acting(&socket, data, ack, usage) else {
        return;
    };
    let watching = match body.agent_id.as_deref().map(str::parse::<AgentId>) {
        None => None,
        Some(Ok(agent)) => Some(agent),
        Some(Err(_)) => return refuse(ack, invalid(usage)),
    };
    socket.state().watching = watching;
    match presence::speak_for(&gw, &joined).await {
        Ok(_) => ack.send(&json!({"ok": true})),
        Err(err) => refuse(ack, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::json::status_name;
    use crate::realtime::seen::PresenceSeen;
    use covibe_proto::events::v1 as ev;
    use covibe_types::TeamId;

    fn snapshot(team: TeamId, version: u64) -> ev::TeamEvent {
        ev::TeamEvent {
            team_id: team.to_string(),
            event: Some(ev::team_event::Event::TeamPresence(pb::TeamPresence {
                team_id: team.to_string(),
                users: Vec::new(),
                version,
            })),
        }
    }

    #[test]
    fn only_newer_presence_snapshots_are_relayed() {
        let seen = PresenceSeen::default();
        let (a, b) = (TeamId::new(), TeamId::new());
        assert!(seen.fresh(a, &snapshot(a, 10)));
        assert!(!seen.fresh(a, &snapshot(a, 9)), "older, published late");
        assert!(!seen.fresh(a, &snapshot(a, 10)), "the same one twice");
        assert!(seen.fresh(a, &snapshot(a, 11)));
        assert!(seen.fresh(b, &snapshot(b, 1)), "teams are independent");
        let chat = ev::TeamEvent {
            team_id: a.to_string(),
            event: Some(ev::team_event::Event::ChatMessage(
                pb::ChatMessage::default(),
            )),
        };
        assert!(seen.fresh(a, &chat));
    }

    #[test]
    fn statuses_round_trip() {
        for name in ["online", "away", "busy", "offline"] {
            let status = parse_status(name).map(i32::from);
            assert_eq!(status.map(status_name), Some(name));
        }
        assert_eq!(parse_status(" AWAY "), Some(pb::PresenceStatus::Away));
        assert!(parse_status("asleep").is_none());
    }
}
