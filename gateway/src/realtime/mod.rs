//! Socket.io: `join_team` (and the other client events) and the relay of team events from the
//! hot store's fan-out to each team's room.
//!
//! The transport is `covibe-socketio`; this module is what the gateway does with its sockets.
//! `rooms` knows which sockets joined which team, `relay` sends the team fan-out to them, and
//! `resume` replays what a reconnecting client missed.

mod relay;
mod resume;
mod rooms;

pub use relay::relay;

pub use resume::Hub;
pub(crate) use rooms::Rooms;

use std::collections::HashMap;
use std::sync::Arc;

use covibe_bootstrap::bearer;
use covibe_proto::orchestrator::v1 as orch;
use covibe_proto::team::v1 as pb;
use covibe_socketio::{Event, Handler, Io};
use covibe_types::{AgentId, SessionId, TeamId, UserId};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::{Gateway, dto};

/// What the gateway keeps per socket.
#[derive(Debug, Default)]
pub(crate) struct SocketState {
    /// Who it joined as, once it has.
    pub(crate) joined: Option<Joined>,
    /// The presence status it chose (`presence_update`), repeated while it stays.
    pub(crate) presence: Option<pb::PresenceStatus>,
}

pub(crate) type SocketRef = Arc<covibe_socketio::Socket<SocketState>>;
pub(crate) type Ack = covibe_socketio::Ack<SocketState>;
pub(crate) type SocketIo = Io<SocketState>;

impl SocketState {
    pub(crate) fn joined(socket: &SocketRef) -> Option<Joined> {
        socket.state().joined.clone()
    }
}

/// Who a socket joined as. One `Arc`: the relay reads it for every event it sends.
#[derive(Debug, Clone)]
pub(crate) struct Joined(Arc<Member>);

/// What [`Joined`] holds.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) user_id: UserId,
    pub(crate) team_id: TeamId,
    /// The sign-in session its token belongs to: when it ends, the socket is closed.
    pub(crate) session_id: SessionId,
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

/// Per agent, the last seq sent (agent ids are ours, so a fast hash is fine).
type Delivered = HashMap<AgentId, u64, foldhash::fast::RandomState>;

impl std::ops::Deref for Joined {
    type Target = Member;

    fn deref(&self) -> &Member {
        &self.0
    }
}

impl Joined {
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
    pub(crate) fn first_delivery(&self, agent: AgentId, seq: u64) -> Delivery {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match delivered.get_mut(&agent) {
            Some(last) if seq <= *last => Delivery::Seen,
            Some(last) if seq > *last + 1 => Delivery::Gap,
            Some(last) => {
                *last = seq;
                Delivery::Next
            }
            None => {
                delivered.insert(agent, seq);
                Delivery::Next
            }
        }
    }

    /// What the client says it has of `agent` is the truth from here on (`None`: nothing).
    pub(crate) fn reset_delivery(&self, agent: AgentId, last: Option<u64>) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last {
            Some(last) => {
                delivered.insert(agent, last);
            }
            None => {
                delivered.remove(&agent);
            }
        }
    }

    /// Forgets a delivery that did not happen after all (the socket's queue was full).
    pub(crate) fn undo_delivery(&self, agent: AgentId, seq: u64) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = delivered.get_mut(&agent)
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

/// Frames queued per socket before it counts as fallen behind, and their bytes.
const SOCKET_QUEUE: usize = 1024;
const SOCKET_QUEUE_BYTES: usize = 4 << 20;

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

const TOO_MANY_SOCKETS: &str = "the gateway is at its connection limit, try again shortly";

pub fn socket_io(gateway: Arc<Gateway>) -> SocketIo {
    let limits = gateway.socket_limits;
    let config = covibe_socketio::Config {
        max_payload: usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX),
        queue_frames: SOCKET_QUEUE,
        queue_bytes: SOCKET_QUEUE_BYTES,
        // Sessions that never connect to the namespace are dropped by the connect timeout; a
        // margin over the limit lets the refused ones hear why.
        max_sessions: limits.max_sockets.saturating_mul(2).saturating_add(64),
        ..covibe_socketio::Config::default()
    };
    Io::new(config, Arc::new(Events(gateway)))
}

/// The gateway's side of each socket.
struct Events(Arc<Gateway>);

impl Handler<SocketState> for Events {
    fn connect(&self, _socket: &SocketRef) -> Result<(), String> {
        let gw = &self.0;
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
            return Err(TOO_MANY_SOCKETS.to_owned());
        }
        Ok(())
    }

    fn event(&self, socket: SocketRef, event: Event<SocketState>) -> BoxFuture<'static, ()> {
        let gw = self.0.clone();
        Box::pin(async move {
            match event.name.as_str() {
                "join_team" => join_team(socket, event.data(), event.ack, gw).await,
                "agent_spawn" => agent_spawn(socket, event.data(), event.ack, gw).await,
                "agent_control" => agent_control(socket, event.data(), event.ack, gw).await,
                "chat_message" => {
                    crate::chat::on_chat_message(socket, event.data(), event.ack, gw).await;
                }
                "presence_update" => {
                    crate::chat::on_presence_update(socket, event.data(), event.ack, gw).await;
                }
                other => {
                    tracing::debug!(event = other, "unknown socket.io event");
                    refuse(
                        event.ack,
                        invalid(
                            "unknown event: join_team, agent_spawn, agent_control, chat_message \
                             and presence_update are",
                        ),
                    );
                }
            }
        })
    }

    fn overloaded(&self, event: Event<SocketState>) {
        refuse(
            event.ack,
            covibe_types::ApiError::new(
                covibe_types::Code::RateLimited,
                "too many requests at once on this socket: wait for their answers before sending more",
            ),
        );
    }

    fn disconnect(&self, socket: SocketRef) -> BoxFuture<'static, ()> {
        let gw = self.0.clone();
        Box::pin(async move {
            gw.open_sockets
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            gw.hub.forget(socket.id);
            if let Some(joined) = SocketState::joined(&socket) {
                gw.rooms.leave(joined.team_id, socket.id);
            }
            crate::chat::disconnected(&gw, &socket).await;
        })
    }
}

/// An event's argument, or why it is not what the event needs.
pub(crate) type Data<T> = Result<T, serde_json::Error>;

/// Refuses an event with the error REST would answer: `{ok: false, error: {code, message}}`.
pub(crate) fn refuse(ack: Ack, err: covibe_types::ApiError) {
    let mut error = json!({"code": err.code.as_str(), "message": err.message});
    if let Some(secs) = err.retry_after_secs {
        error["retryAfter"] = json!(secs);
    }
    ack.send(&json!({"ok": false, "error": error}));
}

/// Refuses an event with a service's answer, hiding what REST hides (transport details).
pub(crate) fn refuse_status(ack: Ack, status: covibe_proto::tonic::Status) {
    refuse(ack, crate::HttpError::from(status).0);
}

pub(crate) fn invalid(message: &str) -> covibe_types::ApiError {
    covibe_types::ApiError::invalid(message)
}

pub(crate) fn not_joined() -> covibe_types::ApiError {
    covibe_types::ApiError::unauthenticated("join a team first (join_team {teamId, token})")
}

async fn join_team(socket: SocketRef, data: Data<JoinTeam>, ack: Ack, gw: Arc<Gateway>) {
    let Ok(request) = data else {
        return refuse(ack, invalid("join_team needs {teamId, token}"));
    };
    let verified =
        gw.verifier
            .verify_expiring(&request.token)
            .and_then(|(principal, expires_at_ms)| {
                Ok((principal.member()?, principal.session()?, expires_at_ms))
            });
    let ((user_id, team_id), session_id, expires_at_ms) = match verified {
        Ok(verified) => verified,
        Err(err) => return refuse(ack, err),
    };
    if request.team_id != team_id.to_string() {
        tracing::warn!(user_id = %user_id, "join_team refused: not a member of the requested team");
        return refuse(
            ack,
            covibe_types::ApiError::forbidden("not a member of this team"),
        );
    }
    let previous = SocketState::joined(&socket);
    // One team per socket: a second join for another team replaces nothing.
    if let Some(previous) = &previous
        && previous.team_id != team_id
    {
        return refuse(ack, invalid("this socket has already joined another team"));
    }
    let joined = Joined(Arc::new(Member {
        user_id,
        team_id,
        session_id,
        token: request.token.into(),
        expires_at_ms,
        delivered: previous
            .map(|previous| previous.delivered.clone())
            .unwrap_or_default(),
    }));
    socket.state().joined = Some(joined.clone());
    gw.rooms.seat(&socket, &joined);
    let resumed = resume::join(&gw, &socket, &joined, request.since).await;
    ack.send(&json!({
        "ok": true,
        "teamId": team_id.to_string(),
        "userId": user_id.to_string(),
        "tokenExpiresAt": expires_at_ms,
        "resumed": resumed,
    }));
    crate::chat::joined(&gw, &socket).await;
}

async fn agent_spawn(socket: SocketRef, data: Data<SpawnEvent>, ack: Ack, gw: Arc<Gateway>) {
    let Some(joined) = SocketState::joined(&socket) else {
        return refuse(ack, not_joined());
    };
    let Ok(spawn) = data else {
        return refuse(ack, invalid("agent_spawn needs {task, vmId?}"));
    };
    let token = match joined.live_token() {
        Ok(token) => token,
        Err(err) => return refuse(ack, err),
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
            ack.send(&json!({"ok": true, "agent": dto::agent(agent.into_inner())}));
        }
        Err(status) => refuse_status(ack, status),
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

async fn agent_control(socket: SocketRef, data: Data<ControlEvent>, ack: Ack, gw: Arc<Gateway>) {
    let Some(joined) = SocketState::joined(&socket) else {
        return refuse(ack, not_joined());
    };
    let Ok(control) = data else {
        return refuse(
            ack,
            invalid("agent_control needs {agentId, command: kill | interrupt | input, data?}"),
        );
    };
    let token = match joined.live_token() {
        Ok(token) => token,
        Err(err) => return refuse(ack, err),
    };
    let command = match crate::control::command(&control.command, control.data) {
        Ok(command) => command,
        Err(err) => return refuse(ack, err),
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
            ack.send(&json!({"ok": true}));
        }
        Err(status) => refuse_status(ack, status),
    }
}

/// Closes the sockets of sessions that end (logout, revocation, a replayed refresh token, a
/// member removed), on this gateway, as soon as it hears of it: each is told why
/// (`session_ended {reason}`) and disconnected, and receives nothing more.
pub async fn close_ended_sessions(gw: Arc<Gateway>) {
    let revocations = gw.verifier.revocations().clone();
    let mut ended = revocations.subscribe();
    loop {
        let reason = match ended.recv().await {
            Ok(ended) => ended.reason.clone(),
            // Missed some: every seat is checked against the mirror all the same.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "revoked".to_owned(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let closing = gw
            .rooms
            .seated_where(|joined| revocations.is_revoked(joined.session_id, joined.user_id));
        for socket in closing {
            if let Some(joined) = SocketState::joined(&socket) {
                gw.rooms.leave(joined.team_id, socket.id);
                tracing::info!(user_id = %joined.user_id, session_id = %joined.session_id, %reason, "closing the socket of an ended session");
            }
            // A full queue cannot take the notice; the disconnect still ends it.
            let _ = socket.emit("session_ended", &json!({"reason": reason}));
            socket.disconnect();
        }
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
            session_id: SessionId::new(),
            token: "t".into(),
            expires_at_ms: u64::MAX,
            delivered: Arc::default(),
        }))
    }

    #[test]
    fn a_socket_gets_each_chunk_once_and_never_past_a_hole() {
        let socket = joined();
        let (a, b) = (AgentId::new(), AgentId::new());
        // The first chunk of an agent a socket sees may be any (it joined mid-stream).
        assert_eq!(socket.first_delivery(a, 7), Delivery::Next);
        assert_eq!(socket.first_delivery(a, 8), Delivery::Next);
        assert_eq!(socket.first_delivery(a, 8), Delivery::Seen);
        assert_eq!(socket.first_delivery(a, 3), Delivery::Seen);
        // 9 was lost on the way: 10 is not sent (the socket resyncs from history instead).
        assert_eq!(socket.first_delivery(a, 10), Delivery::Gap);
        assert_eq!(socket.first_delivery(a, 9), Delivery::Next);
        assert_eq!(socket.first_delivery(a, 10), Delivery::Next);
        // A queue-full undo makes the chunk due again.
        socket.undo_delivery(a, 10);
        assert_eq!(socket.first_delivery(a, 10), Delivery::Next);
        // What a resuming client says it has is the truth from there on.
        socket.reset_delivery(a, Some(4));
        assert_eq!(socket.first_delivery(a, 6), Delivery::Gap);
        assert_eq!(socket.first_delivery(a, 5), Delivery::Next);
        socket.reset_delivery(a, None);
        assert_eq!(socket.first_delivery(a, 42), Delivery::Next);
        assert_eq!(socket.first_delivery(b, 0), Delivery::Next);
    }
}
