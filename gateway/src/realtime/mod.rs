//! Socket.io: `join_team` (and the other client events) and the relay of team events from the
//! hot store's fan-out to each team's room.
//!
//! Event handlers are registered in a connect *middleware*: socketioxide sends CONNECT before it
//! runs the connect handler, so handlers registered there can miss a client's first event.
//!
//! `relay` sends the team fan-out to sockets; `resume` replays what a reconnecting client missed.

mod relay;
mod resume;

pub use relay::relay;
pub use resume::Hub;

use std::collections::HashMap;
use std::sync::Arc;

use covibe_bootstrap::bearer;
use covibe_proto::orchestrator::v1 as orch;
use covibe_types::{TeamId, UserId};
use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

use crate::{Gateway, dto};

pub(crate) fn team_room(team: TeamId) -> String {
    format!("t:{team}")
}

pub(crate) fn user_room(user: &str) -> String {
    format!("u:{user}")
}

/// Who a socket joined as. One `Arc`: the relay reads it for every event it sends.
#[derive(Debug, Clone)]
pub(crate) struct Joined(Arc<Member>);

/// What [`Joined`] holds.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) user_id: UserId,
    pub(crate) team_id: TeamId,
    user: Box<str>,
    pub(crate) token: Box<str>,
    /// When `token` expires (ms since the epoch).
    expires_at_ms: u64,
    /// Per agent, the last output seq this socket was sent: a chunk at or below it is never sent
    /// again, whichever path (replay, buffer, live) it comes by. Kept across a re-join.
    delivered: Arc<std::sync::Mutex<Delivered>>,
}

/// Whether an output chunk is the one a socket needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// It is (or the first the socket gets of that agent): recorded as sent.
    Next,
    /// Sent already, by another path: never twice.
    Seen,
    /// Chunks before it never reached this socket (they were lost on the way): sending it would
    /// show the client a hole, so the socket must resync from history instead.
    Gap,
}

/// Per agent id, the last seq sent (agent ids are ours, so a fast hash is fine).
type Delivered = HashMap<Box<str>, u64, foldhash::fast::RandomState>;

impl std::ops::Deref for Joined {
    type Target = Member;

    fn deref(&self) -> &Member {
        &self.0
    }
}

impl Joined {
    pub(crate) fn user_id_str(&self) -> &str {
        &self.user
    }

    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The token to act with, or, once it has expired, an error that says what to do.
    pub(crate) fn live_token(&self) -> Result<&str, covibe_types::ApiError> {
        let now = u64::try_from(covibe_types::now_ms()).unwrap_or(0);
        if now >= self.expires_at_ms {
            return Err(covibe_types::ApiError::unauthenticated(
                "your access token has expired: get a fresh one (POST /api/auth/refresh) and \
                 send join_team again with it",
            ));
        }
        Ok(&self.token)
    }

    /// Records `seq` of `agent` as sent if it is the next one this socket needs.
    pub(crate) fn first_delivery(&self, agent: &str, seq: u64) -> Delivery {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match delivered.get_mut(agent) {
            Some(last) if seq <= *last => Delivery::Seen,
            Some(last) if seq > *last + 1 => Delivery::Gap,
            Some(last) => {
                *last = seq;
                Delivery::Next
            }
            None => {
                delivered.insert(agent.into(), seq);
                Delivery::Next
            }
        }
    }

    /// What the client says it has of `agent` is the truth from here on (`None`: nothing).
    pub(crate) fn reset_delivery(&self, agent: &str, last: Option<u64>) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last {
            Some(last) => {
                delivered.insert(agent.into(), last);
            }
            None => {
                delivered.remove(agent);
            }
        }
    }

    /// Forgets a delivery that did not happen after all (the socket's queue was full).
    pub(crate) fn undo_delivery(&self, agent: &str, seq: u64) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = delivered.get_mut(agent)
            && *last == seq
        {
            *last = seq.saturating_sub(1);
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinTeam {
    team_id: String,
    token: String,
    /// Per agent, the last `seq` the client has: what it missed is replayed before live events.
    #[serde(default)]
    since: HashMap<String, i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpawnEvent {
    task: String,
    #[serde(default)]
    vm_id: Option<String>,
}

/// Initial WebSocket read buffer per connection (engineioxide's default is 4 KiB).
const WS_READ_BUFFER: usize = 1024;
/// Packets queued per socket before it counts as fallen behind.
const SOCKET_QUEUE: usize = 1024;

/// Limits on Socket.io connections.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Connections one gateway accepts at once; past it a connect is refused.
    pub max_sockets: usize,
    /// Largest message a client may send.
    pub max_message_bytes: u64,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_sockets: 50_000,
            max_message_bytes: 256 * 1024,
        }
    }
}

/// socketioxide keeps each socket's request head for the socket's whole life, and hyper parses
/// a head as slices of the connection's read buffer: a few hundred bytes of headers would keep
/// that whole buffer (8-16 KiB) alive for every idle socket. Socket.io requests get a head of
/// their own (copied headers and URI; the extensions, which carry the upgrade, are kept).
pub async fn detach_request_head(request: axum::extract::Request) -> axum::extract::Request {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        if let Ok(mut copy) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    axum::extract::Request::from_parts(parts, body)
}

/// Why a connection was refused.
#[derive(Debug)]
struct TooManySockets;

impl std::fmt::Display for TooManySockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway is at its connection limit, try again shortly")
    }
}

pub fn socket_layer(gateway: Arc<Gateway>) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(SOCKET_QUEUE)
        // Clients send small events; a larger one grows the buffer while it is read.
        .ws_read_buffer_size(WS_READ_BUFFER)
        .max_payload(gateway.socket_limits.max_message_bytes)
        .with_state(gateway)
        .build_layer();
    io.ns("/", (async |_socket: SocketRef| {}).with(register_handlers));
    (layer, io)
}

async fn register_handlers(
    socket: SocketRef,
    State(gw): State<Arc<Gateway>>,
) -> Result<(), TooManySockets> {
    let open = gw
        .open_sockets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if open >= gw.socket_limits.max_sockets {
        gw.open_sockets
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            open,
            "socket.io connection refused: connection limit reached"
        );
        return Err(TooManySockets);
    }
    socket.on_disconnect(async |socket: SocketRef, State(gw): State<Arc<Gateway>>| {
        gw.open_sockets
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        gw.hub.forget(socket.id);
        crate::chat::disconnected(&gw, &socket).await;
    });
    socket.on("join_team", join_team);
    socket.on("agent_spawn", agent_spawn);
    socket.on("agent_control", agent_control);
    socket.on("chat_message", crate::chat::on_chat_message);
    socket.on("presence_update", crate::chat::on_presence_update);
    Ok(())
}

fn refuse(ack: AckSender, message: &str) {
    let _ = ack.send(&json!({"ok": false, "error": message}));
}

async fn join_team(
    socket: SocketRef,
    TryData(data): TryData<JoinTeam>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Ok(request) = data else {
        return refuse(ack, "join_team needs {teamId, token}");
    };
    let verified = gw
        .verifier
        .verify_expiring(&request.token)
        .and_then(|(principal, expires_at_ms)| Ok((principal.member()?, expires_at_ms)));
    let ((user_id, team_id), expires_at_ms) = match verified {
        Ok(verified) => verified,
        Err(err) => return refuse(ack, &err.message),
    };
    if request.team_id != team_id.to_string() {
        tracing::warn!(user_id = %user_id, "join_team refused: not a member of the requested team");
        return refuse(ack, "not a member of this team");
    }
    // One team per socket: a second join for another team replaces nothing.
    if let Some(previous) = socket.extensions.get::<Joined>()
        && previous.team_id != team_id
    {
        return refuse(ack, "this socket has already joined another team");
    }
    let joined = Joined(Arc::new(Member {
        user_id,
        team_id,
        user: user_id.to_string().into(),
        token: request.token.into(),
        expires_at_ms,
        delivered: socket
            .extensions
            .get::<Joined>()
            .map(|previous| previous.delivered.clone())
            .unwrap_or_default(),
    }));
    socket.extensions.insert(joined.clone());
    let resumed = resume::join(&gw, &socket, &joined, request.since).await;
    let _ = ack.send(&json!({
        "ok": true,
        "teamId": team_id.to_string(),
        "userId": user_id.to_string(),
        "tokenExpiresAt": expires_at_ms,
        "resumed": resumed,
    }));
    crate::chat::joined(&gw, &socket).await;
}

async fn agent_spawn(
    socket: SocketRef,
    TryData(data): TryData<SpawnEvent>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Some(joined) = socket.extensions.get::<Joined>() else {
        return refuse(ack, "join a team first");
    };
    let Ok(spawn) = data else {
        return refuse(ack, "agent_spawn needs {task, vmId?}");
    };
    let token = match joined.live_token() {
        Ok(token) => token,
        Err(err) => return refuse(ack, &err.message),
    };
    tracing::info!(user_id = %joined.user_id, team_id = %joined.team_id, "spawn requested over socket.io");
    let request = orch::SpawnAgentRequest {
        task: spawn.task,
        vm_id: spawn.vm_id.unwrap_or_default(),
    };
    match gw
        .orchestrator
        .clone()
        .spawn_agent(bearer(request, token))
        .await
    {
        Ok(agent) => {
            let _ = ack.send(&json!({"ok": true, "agent": dto::agent(agent.into_inner())}));
        }
        Err(status) => refuse(ack, &covibe_types::ApiError::from_status(&status).message),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ControlEvent {
    agent_id: String,
    command: String,
    #[serde(default)]
    data: Option<String>,
}

async fn agent_control(
    socket: SocketRef,
    TryData(data): TryData<ControlEvent>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Some(joined) = socket.extensions.get::<Joined>() else {
        return refuse(ack, "join a team first");
    };
    let Ok(control) = data else {
        return refuse(
            ack,
            "agent_control needs {agentId, command: kill | interrupt | input, data?}",
        );
    };
    let token = match joined.live_token() {
        Ok(token) => token,
        Err(err) => return refuse(ack, &err.message),
    };
    let command = match crate::control::command(&control.command, control.data) {
        Ok(command) => command,
        Err(err) => return refuse(ack, &err.message),
    };
    let request = orch::ControlAgentRequest {
        agent_id: control.agent_id,
        command: Some(command),
    };
    match gw
        .orchestrator
        .clone()
        .control_agent(bearer(request, token))
        .await
    {
        Ok(_) => {
            let _ = ack.send(&json!({"ok": true}));
        }
        Err(status) => refuse(ack, &covibe_types::ApiError::from_status(&status).message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined() -> Joined {
        let user_id = UserId::new();
        Joined(Arc::new(Member {
            user_id,
            team_id: TeamId::new(),
            user: user_id.to_string().into(),
            token: "t".into(),
            expires_at_ms: u64::MAX,
            delivered: Arc::default(),
        }))
    }

    #[test]
    fn a_socket_gets_each_chunk_once_and_never_past_a_hole() {
        let socket = joined();
        // The first chunk of an agent a socket sees may be any (it joined mid-stream).
        assert_eq!(socket.first_delivery("a", 7), Delivery::Next);
        assert_eq!(socket.first_delivery("a", 8), Delivery::Next);
        assert_eq!(socket.first_delivery("a", 8), Delivery::Seen);
        assert_eq!(socket.first_delivery("a", 3), Delivery::Seen);
        // 9 was lost on the way: 10 is not sent (the socket resyncs from history instead).
        assert_eq!(socket.first_delivery("a", 10), Delivery::Gap);
        assert_eq!(socket.first_delivery("a", 9), Delivery::Next);
        assert_eq!(socket.first_delivery("a", 10), Delivery::Next);
        // A queue-full undo makes the chunk due again.
        socket.undo_delivery("a", 10);
        assert_eq!(socket.first_delivery("a", 10), Delivery::Next);
        // What a resuming client says it has is the truth from there on.
        socket.reset_delivery("a", Some(4));
        assert_eq!(socket.first_delivery("a", 6), Delivery::Gap);
        assert_eq!(socket.first_delivery("a", 5), Delivery::Next);
        socket.reset_delivery("a", None);
        assert_eq!(socket.first_delivery("a", 42), Delivery::Next);
        assert_eq!(socket.first_delivery("b", 0), Delivery::Next);
    }
}
