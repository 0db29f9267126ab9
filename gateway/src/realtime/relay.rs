//! The relay: every team event from the hot store's fan-out goes to the sockets of the team.
//! Each event is encoded once, as a frame every socket of the team is sent (an output line's
//! owner gets a copy with `canControl: true`, made when first needed). A team's presence
//! snapshots are coalesced over 50 ms: only the newest goes out.
//!
//! A socket whose send queue is full has fallen behind: it stops taking the team's live events, so
//! it costs the others nothing, and once its queue drains it is told to `resync` (rejoin with
//! `since`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_socketio::Frame;
use covibe_storage::{FanoutEvent, Subscription};
use covibe_types::{AgentId, TeamId, UserId};
use serde_json::json;

use super::{Delivery, Joined, SocketRef};
use crate::{Gateway, dto};

/// One event ready to send.
pub(crate) enum Prepared {
    /// `agent_output`: everyone but `owner` gets `viewer`; the owner gets it with
    /// `canControl: true`.
    Output {
        agent_id: String,
        /// `agent_id` and `owner` parsed once, for every socket's delivery record and owner
        /// check.
        agent: AgentId,
        owner: UserId,
        seq: u64,
        viewer: Frame,
        for_owner: OnceLock<Frame>,
    },
    /// Any other team event, the same for every member.
    Team(Frame),
}

impl Prepared {
    /// A team event whose payload is the same for everyone.
    pub(crate) fn team(event: &'static str, payload: &impl serde::Serialize) -> Self {
        Self::Team(Frame::event(event, payload))
    }
    /// An `agent_output` event, from the fan-out or from history; `None` when its agent or
    /// owner is not an id of ours.
    pub(crate) fn output(
        agent_id: String,
        owner: String,
        seq: u64,
        stream: i32,
        data: &[u8],
        event_json: String,
    ) -> Option<Self> {
        let (Ok(agent), Ok(owner_id)) = (agent_id.parse(), owner.parse()) else {
            tracing::warn!(agent_id, owner, "agent output with a malformed id dropped");
            return None;
        };
        let json = dto::event_value(event_json);
        let payload = dto::AgentOutput {
            agent_id: &agent_id,
            owner: &owner,
            seq,
            stream: dto::stream_name(stream),
            data: dto::text_ref(data),
            event: &json,
            can_control: false,
        };
        let viewer = Frame::event("agent_output", &payload);
        Some(Self::Output {
            agent_id,
            agent,
            owner: owner_id,
            seq,
            viewer,
            for_owner: OnceLock::new(),
        })
    }

    fn from_event(event: ev::TeamEvent) -> Option<Self> {
        Some(match event.event? {
            ev::team_event::Event::AgentOutput(out) => {
                return Self::output(
                    out.agent_id,
                    out.owner_id,
                    out.seq,
                    out.stream,
                    &out.data,
                    out.event_json,
                );
            }
            ev::team_event::Event::AgentStatus(status) => Self::team(
                "agent_status",
                &json!({
                    "agentId": status.agent_id,
                    "owner": status.owner_id,
                    "status": dto::status_name(status.status),
                    "exitCode": status.exit_code,
                    "task": status.task,
                    "at": status.at_ms,
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
        let frame = match self {
            Self::Output { viewer, .. } => viewer.len(),
            Self::Team(frame) => frame.len(),
        };
        frame + std::mem::size_of::<Self>()
    }

    /// The agent and seq of an output event.
    pub(crate) fn output_seq(&self) -> Option<(&str, u64)> {
        match self {
            Self::Output { agent_id, seq, .. } => Some((agent_id, *seq)),
            Self::Team(_) => None,
        }
    }

    /// Queues the event on one socket and wakes it; an error says why the socket must resync
    /// instead.
    pub(crate) fn deliver(&self, socket: &SocketRef, joined: &Joined) -> Result<(), Resync> {
        if self.queue(socket, joined)? {
            socket.flush();
        }
        Ok(())
    }

    /// Queues the event on one socket without waking it: `true` means it must be flushed.
    fn queue(&self, socket: &SocketRef, joined: &Joined) -> Result<bool, Resync> {
        match self {
            Self::Output {
                agent,
                seq,
                owner,
                viewer,
                for_owner,
                ..
            } => {
                match joined.first_delivery(*agent, *seq) {
                    Delivery::Next => {}
                    Delivery::Seen => return Ok(false), // already sent by another path: never twice
                    Delivery::Gap => return Err(Resync::FanoutGap),
                }
                let queued = if joined.user_id == *owner {
                    socket.queue(for_owner.get_or_init(|| owner_frame(viewer)).clone())
                } else {
                    socket.queue(viewer.clone())
                };
                if queued.is_err() {
                    joined.undo_delivery(*agent, *seq);
                }
                queued.map_err(|_| Resync::SlowConsumer)
            }
            Self::Team(frame) => socket
                .queue(frame.clone())
                .map_err(|_| Resync::SlowConsumer),
        }
    }
}

/// The owner's copy of an output frame: `canControl` is the payload's last field, so the
/// viewer's frame with that flipped (no second serialization of the line).
fn owner_frame(viewer: &Frame) -> Frame {
    let text = viewer.as_str();
    match text.strip_suffix(r#""canControl":false}]"#) {
        Some(head) => Frame::from_text(format!(r#"{head}"canControl":true}}]"#)),
        None => {
            tracing::error!("an agent_output frame without canControl last");
            viewer.clone()
        }
    }
}

/// Team presence snapshots are coalesced per team over this long: only the newest goes out
/// (a burst of joins would otherwise send every member one snapshot per join).
const PRESENCE_EVERY: Duration = Duration::from_millis(50);

/// Relays the fan-out to the team rooms until the subscription ends.
pub async fn relay(gateway: Arc<Gateway>, mut subscription: Subscription) {
    let mut relay = Relay {
        gateway,
        presence: HashMap::new(),
        woken: Vec::new(),
    };
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = subscription.recv() => match event {
                Some(event) => relay.event(event),
                None => break,
            },
            _ = tick.tick(), if !relay.presence.is_empty() => {
                for (team, snapshot) in std::mem::take(&mut relay.presence) {
                    relay.send_to_team(team, &snapshot);
                }
            }
        }
        // What else is there already goes out with it: each socket is woken once for all of
        // it, and writes it in one go.
        while relay.woken.len() < WAKE_AFTER
            && let Some(event) = subscription.try_recv()
        {
            relay.event(event);
        }
        for socket in relay.woken.drain(..) {
            socket.flush();
        }
    }
    tracing::warn!("fan-out subscription ended");
}

/// Sockets queued for before they are woken, at most.
const WAKE_AFTER: usize = 4096;

struct Relay {
    gateway: Arc<Gateway>,
    /// Per team, the newest presence snapshot not sent yet.
    presence: HashMap<TeamId, Arc<Prepared>>,
    /// Sockets with frames queued and their writer not woken yet.
    woken: Vec<SocketRef>,
}

impl Relay {
    fn event(&mut self, event: FanoutEvent) {
        let gateway = &self.gateway;
        let bytes = match event {
            FanoutEvent::Message(bytes) => bytes,
            FanoutEvent::Gap => {
                // Events were missed (a hot-store outage, or this gateway fell behind the
                // fan-out): every socket leaves the live stream and resyncs from history.
                tracing::warn!("fan-out gap: every socket resyncs from history");
                let mut recovering = gateway.hub.lock();
                recovering.missed(Resync::FanoutGap);
                // Sockets out of the live stream already (resuming, or behind) are told once
                // they are done.
                for (socket, team) in gateway.rooms.all_live() {
                    fell_behind(gateway, socket, team, Resync::FanoutGap);
                }
                drop(recovering);
                return;
            }
        };
        let Ok(event) = ev::TeamEvent::decode(bytes) else {
            tracing::warn!("undecodable team event dropped");
            return;
        };
        let Ok(team) = event.team_id.parse::<TeamId>() else {
            return;
        };
        if !gateway.presence_seen.fresh(team, &event) {
            return;
        }
        let is_presence = matches!(event.event, Some(ev::team_event::Event::TeamPresence(_)));
        let Some(prepared) = Prepared::from_event(event) else {
            return;
        };
        let prepared = Arc::new(prepared);
        if is_presence {
            self.presence.insert(team, prepared);
        } else {
            self.send_to_team(team, &prepared);
        }
    }

    /// Queues one event on the live sockets of the team (and buffers it for those resuming).
    fn send_to_team(&mut self, team: TeamId, prepared: &Arc<Prepared>) {
        let gateway = &self.gateway;
        // Under the hub's lock, so a socket finishing its resume is either still buffering this
        // event or already live: never both, never neither.
        let mut recovering = gateway.hub.lock();
        recovering.buffer(team, prepared);
        let mut behind = Vec::new();
        let woken = &mut self.woken;
        gateway.rooms.each_live(team, |seat| {
            match prepared.queue(&seat.socket, &seat.joined) {
                Ok(true) => woken.push(seat.socket.clone()),
                Ok(false) => {}
                Err(why) => behind.push((seat.socket.clone(), why)),
            }
        });
        for (socket, why) in behind {
            fell_behind(gateway, socket, team, why);
        }
        drop(recovering);
    }
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
pub(crate) fn fell_behind(gateway: &Gateway, socket: SocketRef, team: TeamId, why: Resync) {
    if !socket.connected() {
        return;
    }
    gateway.rooms.set_live(team, socket.id, false);
    tracing::info!(sid = socket.id, team_id = %team, reason = why.reason(), "socket missed live events; it will be told to resync");
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LAGGING_GIVE_UP;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            if socket.emit("resync", &why.payload()).is_ok() {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, socket.wait_for_room()).await;
        }
        if socket.connected() {
            tracing::warn!(sid = socket.id, "socket stayed blocked; disconnecting it");
            socket.disconnect();
        }
    });
}
