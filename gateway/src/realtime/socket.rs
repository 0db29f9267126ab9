//! What the gateway keeps per socket: who it joined as (the member, their token and what the
//! socket has been sent), and how a refused event is answered.

use std::sync::Arc;

use covibe_proto::team::v1 as pb;
use covibe_socketio::Io;
use covibe_types::{AgentId, ApiError};
use serde_json::json;

use crate::member::Member;
use crate::realtime::delivery::Deliveries;

/// What the gateway keeps per socket.
#[derive(Debug, Default)]
pub(crate) struct SocketState {
    /// Who it joined as, once it has.
    pub(crate) joined: Option<Joined>,
    /// The presence status it chose (`presence_update`), repeated while it stays.
    pub(crate) presence: Option<pb::PresenceStatus>,
    /// The agent it watches (`agent_watch`): part of its member's presence.
    pub(crate) watching: Option<AgentId>,
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
pub(crate) struct Joined(Arc<Seat>);

/// What [`Joined`] holds.
#[derive(Debug)]
pub(crate) struct Seat {
    pub(crate) member: Member,
    /// When the member's token expires (ms since the epoch).
    pub(crate) expires_at_ms: u64,
    /// What the socket has been sent. Kept across a re-join.
    pub(crate) delivered: Deliveries,
}

impl std::ops::Deref for Joined {
    type Target = Seat;

    fn deref(&self) -> &Seat {
        &self.0
    }
}

impl std::ops::Deref for Seat {
    type Target = Member;

    fn deref(&self) -> &Member {
        &self.member
    }
}

impl Joined {
    pub(crate) fn new(member: Member, expires_at_ms: u64, delivered: Deliveries) -> Self {
        Self(Arc::new(Seat {
            member,
            expires_at_ms,
            delivered,
        }))
    }

    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The token to act with, or, once it has expired, an error that says what to do.
    pub(crate) fn live_token(&self) -> Result<&str, ApiError> {
        let now = u64::try_from(covibe_types::now_ms()).unwrap_or(0);
        if now >= self.expires_at_ms {
            return Err(ApiError::unauthenticated(
                "your access token has expired: get a fresh one (POST /api/auth/refresh) and \
                 send join_team again with it",
            ));
        }
        Ok(&self.member.token)
    }
}

/// Limits and timings of Socket.io connections.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Connections one gateway accepts at once; past it a connect is refused.
    pub max_sockets: usize,
    /// Connections one client address holds at once; past it its handshakes are refused.
    pub max_per_address: usize,
    /// A connection that has not joined a team by then is closed.
    pub join_timeout: std::time::Duration,
    /// Largest message a client may send.
    pub max_message_bytes: u64,
    /// How often the gateway repeats the presence of the members joined on it: a third of the
    /// team service's presence TTL.
    pub presence_heartbeat: std::time::Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_sockets: 50_000,
            max_per_address: 256,
            join_timeout: std::time::Duration::from_secs(10),
            max_message_bytes: 256 * 1024,
            presence_heartbeat: std::time::Duration::from_secs(30),
        }
    }
}

/// An event's argument, or why it is not what the event needs.
pub(crate) type Data<T> = Result<T, serde_json::Error>;

/// Refuses an event with the error REST would answer: `{ok: false, error: {code, message}}`.
pub(crate) fn refuse(ack: Ack, err: ApiError) {
    let mut error = json!({"code": err.code.as_str(), "message": err.message});
    if let Some(secs) = err.retry_after_secs {
        error["retryAfter"] = json!(secs);
    }
    ack.send(&json!({"ok": false, "error": error}));
}

pub(crate) fn invalid(message: &str) -> ApiError {
    ApiError::invalid(message)
}

pub(crate) fn not_joined() -> ApiError {
    ApiError::unauthenticated("join a team first (join_team {teamId, token})")
}

/// The start of every event a member acts with: the socket must have joined, the event's
/// argument must parse (else `usage` is the answer) and the member's token must still be live.
/// `None` when the event was refused (the acknowledgement is sent).
pub(crate) fn acting<T>(
    socket: &SocketRef,
    data: Data<T>,
    ack: Ack,
    usage: &str,
) -> Option<(Joined, T, Ack)> {
    let Some(joined) = SocketState::joined(socket) else {
        refuse(ack, not_joined());
        return None;
    };
    let Ok(data) = data else {
        refuse(ack, invalid(usage));
        return None;
    };
    if let Err(err) = joined.live_token() {
        refuse(ack, err);
        return None;
    }
    Some((joined, data, ack))
}
