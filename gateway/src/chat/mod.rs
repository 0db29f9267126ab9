//! Team chat and presence at the gateway: the REST routes, the Socket.io events
//! (`chat_message`, `presence_update` in; `chat_message`, `team_presence` out) and the
//! presence of each joined socket. The team service checks and stores everything; this module
//! only translates.
//!
//! Presence of a socket: joining a team makes its member present ("still here": `away` and
//! `busy` are kept, anything else becomes `online`); while it stays connected the gateway
//! repeats that every [`HEARTBEAT`] for each member joined on it (the team service forgets an
//! entry 90 s after its last update); a `presence_update` sets the status the member's socket
//! repeats from then on; the member's last socket on this gateway disconnecting makes them
//! `offline`.

pub(crate) mod json;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::team::v1 as pb;
use covibe_proto::tonic;
use covibe_types::{ApiError, TeamId, UserId};
use futures::StreamExt;
use serde_json::json;

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::realtime::socket::{
    Ack, Data, Joined, SocketIo, SocketRef, SocketState, acting, invalid, not_joined, refuse,
};
use crate::state::Gateway;
use json::{HistoryQuery, PostMessage, PresenceUpdate, message_view, parse_status, presence_view};

/// How often a joined socket tells the team service its member is still here.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(30);
/// Presence calls made on a socket's behalf give up after this long (they never hold up a
/// disconnect for long).
const PRESENCE_CALL: Duration = Duration::from_secs(5);

// REST

/// Posts to the caller's team chat: the one call behind REST and Socket.io.
async fn post(gw: &Gateway, token: &str, text: String) -> Result<json::ChatMessageView, HttpError> {
    let request = bearer(pb::PostMessageRequest { text }, token);
    let message = gw.team.clone().post_message(request).await?.into_inner();
    Ok(message_view(message))
}

/// `POST /api/chat/message {message}` → 201 `{message}`.
pub(crate) async fn post_message(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<impl IntoResponse, HttpError> {
    let message = post(&gw, &member.token, body.message).await?;
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

/// `chat_message {message}` → ack `{ok, message}`; the team (this socket included) receives
/// it as a `chat_message` event.
pub(crate) async fn on_chat_message(
    socket: SocketRef,
    data: Data<PostMessage>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let Some((joined, body, ack)) = acting(&socket, data, ack, "chat_message needs {message}")
    else {
        return;
    };
    match post(&gw, &joined.token, body.message).await {
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
    match update(&gw, &joined, status).await {
        Ok(presence) => {
            ack.send(&json!({"ok": true, "users": presence_view(presence).users}));
        }
        Err(err) => refuse(ack, err),
    }
}

async fn update(
    gw: &Gateway,
    joined: &Joined,
    status: pb::PresenceStatus,
) -> Result<pb::TeamPresence, ApiError> {
    let request = bearer(
        pb::UpdatePresenceRequest {
            status: status.into(),
        },
        joined.live_token()?,
    );
    let call = async {
        // A burst of joins (a reconnect storm) queues here rather than opening thousands of
        // calls at once, whose buffers the allocator would keep long after.
        let _permit = gw.presence_calls.acquire().await;
        gw.team.clone().update_presence(request).await
    };
    match tokio::time::timeout(PRESENCE_CALL, call).await {
        Ok(Ok(presence)) => Ok(presence.into_inner()),
        Ok(Err(status)) => Err(ApiError::from_status(&status)),
        Err(_) => Err(ApiError::from_status(&tonic::Status::unavailable(
            "the team service did not answer in time",
        ))),
    }
}

/// What this socket says while it stays: its chosen status, else "still here".
async fn refresh(gw: &Gateway, socket: &SocketRef) {
    let (joined, status) = {
        let state = socket.state();
        let Some(joined) = state.joined.clone() else {
            return;
        };
        (
            joined,
            state.presence.unwrap_or(pb::PresenceStatus::Unspecified),
        )
    };
    if let Err(err) = update(gw, &joined, status).await {
        // An expired token ends presence until the client joins again with a fresh one.
        tracing::debug!(sid = socket.id, user_id = %joined.user_id, error = %err.message, "presence refresh failed");
    }
}

/// Called once a socket has joined its team: its member is present, and stays so while the
/// socket is connected.
pub(crate) async fn joined(gw: &Arc<Gateway>, socket: &SocketRef) {
    refresh(gw, socket).await;
}

/// Every [`HEARTBEAT`], refreshes the presence of each member joined on this gateway: one call
/// per member (not per socket), from one task (not one per socket).
pub(crate) async fn refresh_presence(io: SocketIo, gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // Per member, the socket whose token lasts longest speaks for them.
        let mut members: HashMap<(TeamId, UserId), (u64, SocketRef)> = HashMap::new();
        for socket in io.sockets() {
            if let Some(joined) = SocketState::joined(&socket) {
                let until = joined.expires_at_ms();
                let best = members
                    .entry((joined.team_id, joined.user_id))
                    .or_insert_with(|| (until, socket.clone()));
                if best.0 < until {
                    *best = (until, socket);
                }
            }
        }
        futures::stream::iter(members.into_values().map(|(_, socket)| socket))
            .for_each_concurrent(16, |socket| {
                let gw = gw.clone();
                async move { refresh(&gw, &socket).await }
            })
            .await;
    }
}

/// Called when a socket disconnects: its member goes `offline` unless another of their
/// sockets on this gateway is still joined.
pub(crate) async fn disconnected(gw: &Gateway, socket: &SocketRef) {
    let Some(joined) = SocketState::joined(socket) else {
        return;
    };
    if gw.rooms.member_elsewhere(&joined, socket.id) {
        return;
    }
    if let Err(err) = update(gw, &joined, pb::PresenceStatus::Offline).await {
        tracing::debug!(sid = socket.id, user_id = %joined.user_id, error = %err.message, "presence: offline not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::json::status_name;
    use crate::realtime::seen::PresenceSeen;
    use covibe_proto::events::v1 as ev;

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
