//! The relay: every team event from the hot store's fan-out goes to the sockets of the team.
//! Payloads are serialized once per event and written to each socket as pre-serialized JSON
//! (an output line's owner gets a copy with `canControl: true`, made as it is sent). A team's presence
//! snapshots are coalesced over 50 ms: only the newest goes out.
//!
//! A socket whose send queue is full has fallen behind: it leaves the team's room, so it costs
//! the others nothing, and once its queue drains it is told to `resync` (rejoin with `since`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, Subscription};
use covibe_types::TeamId;
use serde_json::json;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use super::{Delivery, Joined, team_room};
use crate::{Gateway, dto};

/// One event ready to send.
pub(crate) enum Prepared {
    /// `agent_output`: everyone but `owner` gets `viewer`; the owner gets it with
    /// `canControl: true`.
    Output {
        agent_id: String,
        owner: String,
        seq: u64,
        viewer: Box<RawValue>,
    },
    /// Any other team event, the same for every member.
    Team {
        event: &'static str,
        payload: Box<RawValue>,
    },
}

fn raw(value: &impl serde::Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

impl Prepared {
    /// A team event whose payload is the same for everyone.
    pub(crate) fn team(event: &'static str, payload: &impl serde::Serialize) -> Self {
        Self::Team {
            event,
            payload: raw(payload),
        }
    }
    /// An `agent_output` event, from the fan-out or from history.
    pub(crate) fn output(
        agent_id: String,
        owner: String,
        seq: u64,
        stream: i32,
        data: &[u8],
        event_json: String,
    ) -> Self {
        let json = dto::event_value(event_json);
        let payload = dto::AgentOutput {
            agent_id: &agent_id,
            owner: &owner,
            seq,
            stream: dto::stream_name(stream),
            data: String::from_utf8_lossy(data),
            event: &json,
            can_control: false,
        };
        let viewer = raw(&payload);
        Self::Output {
            agent_id,
            owner,
            seq,
            viewer,
        }
    }

    fn from_event(event: ev::TeamEvent) -> Option<Self> {
        Some(match event.event? {
            ev::team_event::Event::AgentOutput(out) => Self::output(
                out.agent_id,
                out.owner_id,
                out.seq,
                out.stream,
                &out.data,
                out.event_json,
            ),
            ev::team_event::Event::AgentStatus(status) => Self::team(
                "agent_status",
                &json!({
                    "agentId": status.agent_id,
                    "owner": status.owner_id,
                    "status": dto::status_name(status.status),
                    "exitCode": status.exit_code,
                    "task": status.task,                    "at": status.at_ms,
                }),
            ),
            ev::team_event::Event::ChatMessage(message) => {
                Self::team("chat_message", &crate::chat::message_view(message))
            }
            ev::team_event::Event::TeamPresence(presence) => {
                Self::team("team_presence", &crate::chat::presence_view(presence))
            }
            ev::team_event::Event::PreviewUpdated(preview) => Self::team(
                "preview_updated",
                &json!({
                    "url": preview.url,
                    "commit": preview.commit,
                    "status": preview.status,
                    "ref": preview.git_ref,
                    "repository": preview.repository,
                    "at": preview.updated_at_ms,
                }),
            ),
        })
    }

    /// About the memory the event holds.
    pub(crate) fn size(&self) -> usize {
        let payload = match self {
            Self::Output { viewer, .. } => viewer.get().len(),
            Self::Team { payload, .. } => payload.get().len(),
        };
        payload + std::mem::size_of::<Self>()
    }

    /// The agent and seq of an output event.
    pub(crate) fn output_seq(&self) -> Option<(&str, u64)> {
        match self {
            Self::Output { agent_id, seq, .. } => Some((agent_id, *seq)),
            Self::Team { .. } => None,
        }
    }

    /// Queues the event on one socket; an error says why the socket must resync instead.
    pub(crate) fn deliver(&self, socket: &SocketRef, joined: &Joined) -> Result<(), Resync> {
        match self {
            Self::Output {
                agent_id,
                seq,
                owner,
                viewer,
            } => {
                match joined.first_delivery(agent_id, *seq) {
                    Delivery::Next => {}
                    Delivery::Seen => return Ok(()), // already sent by another path: never twice
                    Delivery::Gap => return Err(Resync::FanoutGap),
                }
                let sent = if joined.user_id_str() == owner.as_str() {
                    socket.emit("agent_output", &owner_payload(viewer))
                } else {
                    socket.emit("agent_output", viewer)
                };
                if sent.is_err() {
                    joined.undo_delivery(agent_id, *seq);
                }
                sent.map_err(|_| Resync::SlowConsumer)
            }
            Self::Team { event, payload } => socket
                .emit(*event, payload)
                .map_err(|_| Resync::SlowConsumer),
        }
    }
}

/// The owner's copy of an output payload: `canControl` is its last field, so the viewer's
/// payload with that flipped (no second serialization of the line).
fn owner_payload(viewer: &RawValue) -> Box<RawValue> {
    viewer
        .get()
        .strip_suffix(r#""canControl":false}"#)
        .and_then(|head| RawValue::from_string(format!(r#"{head}"canControl":true}}"#)).ok())
        .unwrap_or_else(|| {
            let mut payload: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(viewer.get()).unwrap_or_default();
            payload.insert("canControl".to_owned(), true.into());
            raw(&payload)
        })
}

/// Team presence snapshots are coalesced per team over this long: only the newest goes out
/// (a burst of joins would otherwise send every member one snapshot per join).
const PRESENCE_EVERY: Duration = Duration::from_millis(50);

/// Relays the fan-out to the team rooms until the subscription ends.
pub async fn relay(io: SocketIo, gateway: Arc<Gateway>, mut subscription: Subscription) {
    let mut presence: HashMap<TeamId, Arc<Prepared>> = HashMap::new();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let event = tokio::select! {
            event = subscription.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tick.tick(), if !presence.is_empty() => {
                for (team, snapshot) in presence.drain() {
                    to_team(&io, &gateway, team, &snapshot);
                }
                continue;
            }
        };
        let bytes = match event {
            FanoutEvent::Message(bytes) => bytes,
            FanoutEvent::Gap => {
                // Events were missed (a hot-store outage, or this gateway fell behind the
                // fan-out): every socket leaves the live stream and resyncs from history.
                tracing::warn!("fan-out gap: every socket resyncs from history");
                let mut recovering = gateway.hub.lock();
                recovering.missed(Resync::FanoutGap);
                for socket in io.sockets() {
                    let Some(team) = socket.extensions.get::<Joined>().map(|j| j.team_id) else {
                        continue;
                    };
                    // Sockets out of the live stream already (resuming, or behind) are told
                    // once they are done.
                    let room = team_room(team);
                    if socket.rooms().iter().any(|r| *r == room) {
                        fell_behind(socket, team, Resync::FanoutGap);
                    }
                }
                drop(recovering);
                continue;
            }
        };
        let Ok(event) = ev::TeamEvent::decode(bytes) else {
            tracing::warn!("undecodable team event dropped");
            continue;
        };
        let Ok(team) = event.team_id.parse::<TeamId>() else {
            continue;
        };
        if !gateway.presence_seen.fresh(team, &event) {
            continue;
        }
        let is_presence = matches!(event.event, Some(ev::team_event::Event::TeamPresence(_)));
        let Some(prepared) = Prepared::from_event(event) else {
            continue;
        };
        let prepared = Arc::new(prepared);
        if is_presence {
            presence.insert(team, prepared);
        } else {
            to_team(&io, &gateway, team, &prepared);
        }
    }
    tracing::warn!("fan-out subscription ended");
}

/// Sends one event to the sockets of the team (and buffers it for those resuming).
fn to_team(io: &SocketIo, gateway: &Gateway, team: TeamId, prepared: &Arc<Prepared>) {
    // Under the hub's lock, so a socket finishing its resume is either still buffering this
    // event or already in the room: never both, never neither.
    let mut recovering = gateway.hub.lock();
    recovering.buffer(team, prepared);
    for socket in io.to(team_room(team)).sockets() {
        let Some(joined) = socket.extensions.get::<Joined>() else {
            continue;
        };
        if let Err(why) = prepared.deliver(&socket, &joined) {
            fell_behind(socket, team, why);
        }
    }
    drop(recovering);
}

/// How long a socket may stay unable to take a single message before it is disconnected.
const LAGGING_GIVE_UP: Duration = Duration::from_secs(60);

/// Why a socket is told to `resync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Its own send queue was full (or it is gone).
    SlowConsumer,
    /// This gateway missed fan-out events (a hot-store outage, or it fell behind the fan-out),
    /// or output on its way to this socket was lost.
    FanoutGap,
}

impl Resync {
    fn reason(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::FanoutGap => "fanout_gap",
        }
    }

    /// The `resync` event's payload.
    pub(crate) fn payload(self) -> serde_json::Value {
        json!({"reason": self.reason()})
    }
}

/// Takes a socket that missed live events out of the live stream and, once it can take a
/// message again, tells it to resync (rejoin with `since`).
pub(crate) fn fell_behind(socket: SocketRef, team: TeamId, why: Resync) {
    if !socket.connected() {
        return;
    }
    socket.leave(team_room(team));
    tracing::info!(sid = %socket.id, team_id = %team, reason = why.reason(), "socket missed live events; it will be told to resync");
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LAGGING_GIVE_UP;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            if socket.emit("resync", &why.payload()).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if socket.connected() {
            tracing::warn!(sid = %socket.id, "socket stayed blocked; disconnecting it");
            let _ = socket.disconnect();
        }
    });
}
