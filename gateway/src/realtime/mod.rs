//! The Socket.io transport: each socket's state, the dispatch of client events to the
//! features, the rooms of joined sockets, the relay of the team fan-out, and the replay of what
//! a reconnecting client missed.
//!
//! `socket` is what the gateway keeps per socket, `delivery` what a socket has been sent,
//! `join` the `join_team` event, `rooms` which sockets joined which team, `relay` the team
//! fan-out to them, `hub` and `resume` the replay of history, `frames` events encoded once,
//! `holder` this gateway as the holder of its members' presence.

pub(crate) mod delivery;
pub(crate) mod frames;
pub(crate) mod holder;
pub(crate) mod hub;
mod join;
pub(crate) mod relay;
mod resume;
pub(crate) mod rooms;
pub(crate) mod seen;
pub(crate) mod socket;

use std::sync::Arc;

use covibe_socketio::{Event, Handler, Io};
use futures::future::BoxFuture;
use serde_json::json;

use crate::state::Gateway;
use socket::{SocketIo, SocketRef, SocketState, invalid, refuse};

/// Frames queued per socket before it counts as fallen behind, and their bytes.
const SOCKET_QUEUE: usize = 1024;
const SOCKET_QUEUE_BYTES: usize = 4 << 20;

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
        max_sessions_per_address: limits.max_per_address,
        // Connecting to the namespace is the first step of joining: the same deadline.
        connect_timeout: limits.join_timeout,
        ..covibe_socketio::Config::default()
    };
    Io::new(config, Arc::new(Events(gateway)))
}

/// The gateway's side of each socket.
struct Events(Arc<Gateway>);

impl Handler<SocketState> for Events {
    fn connect(&self, socket: &SocketRef) -> Result<(), String> {
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
        close_unless_joined(socket, gw.socket_limits.join_timeout);
        Ok(())
    }

    fn event(&self, socket: SocketRef, event: Event<SocketState>) -> BoxFuture<'static, ()> {
        let gw = self.0.clone();
        Box::pin(async move {
            match event.name.as_str() {
                "join_team" => join::join_team(socket, event.data(), event.ack, gw).await,
                "agent_spawn" => crate::agents::on_spawn(socket, event.data(), event.ack, gw).await,
                "agent_control" => {
                    crate::agents::on_control(socket, event.data(), event.ack, gw).await;
                }
                "agent_permission_answer" => {
                    crate::agents::permissions::on_answer(socket, event.data(), event.ack, gw)
                        .await;
                }
                "chat_message" => {
                    crate::chat::on_chat_message(socket, event.data(), event.ack, gw).await;
                }
                "presence_update" => {
                    crate::chat::on_presence_update(socket, event.data(), event.ack, gw).await;
                }
                "agent_watch" => {
                    crate::chat::on_agent_watch(socket, event.data(), event.ack, gw).await;
                }
                other => {
                    tracing::debug!(event = other, "unknown socket.io event");
                    refuse(
                        event.ack,
                        invalid(
                            "unknown event: join_team, agent_spawn, agent_control, \
                             agent_permission_answer, chat_message, presence_update and \
                             agent_watch are",
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

/// A socket holds a place (and a heartbeat) only to join a team: one that has not joined
/// within `timeout` is told why and closed. The timer holds the socket weakly.
fn close_unless_joined(socket: &SocketRef, timeout: std::time::Duration) {
    let socket = Arc::downgrade(socket);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(socket) = socket.upgrade() else {
            return;
        };
        if socket.connected() && SocketState::joined(&socket).is_none() {
            tracing::debug!(
                sid = socket.id,
                "socket closed: it did not join a team in time"
            );
            let _ = socket.emit(
                "error",
                &json!({"code": "unauthenticated", "message": "join a team (join_team {teamId, token}) within a few seconds of connecting"}),
            );
            socket.disconnect();
        }
    });
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
            // Nothing queued for it goes out any more: the notice, then the disconnect.
            socket.discard_queued();
            let _ = socket.emit("session_ended", &json!({"reason": reason}));
            socket.disconnect();
        }
    }
}
