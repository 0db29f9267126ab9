//! Events encoded once for every socket they go to, and why a socket must resync.

use std::sync::OnceLock;

use covibe_proto::events::v1 as ev;
use covibe_socketio::Frame;
use covibe_types::{AgentId, UserId};
use serde_json::json;

use crate::agents::json as agents_json;
use crate::chat::json as chat_json;
use crate::realtime::delivery::Delivery;
use crate::realtime::socket::{Joined, SocketRef};

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
    /// An event whose payload differs for one member (`agent_permission`: `canAnswer` for the
    /// agent's owner alone): `for_owner` to `owner`, `viewer` to everyone else.
    PerOwner {
        owner: UserId,
        viewer: Frame,
        for_owner: Frame,
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
        let json = agents_json::event_value(event_json);
        let payload = agents_json::AgentOutput {
            agent_id: &agent_id,
            owner: &owner,
            seq,
            stream: agents_json::stream_name(stream),
            data: agents_json::text_ref(data),
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

    /// An `agent_permission` event: the request, with `canAnswer` true for its agent's owner
    /// only. `None` when the owner is not an id of ours.
    pub(crate) fn permission(
        request: covibe_proto::orchestrator::v1::PermissionRequest,
    ) -> Option<Self> {
        let Ok(owner) = request.owner_id.parse() else {
            tracing::warn!(
                owner = request.owner_id,
                "tool request with a malformed owner dropped"
            );
            return None;
        };
        let view = agents_json::permission(request);
        let frame = |can_answer: bool| {
            let mut payload = serde_json::to_value(&view).unwrap_or_default();
            payload["canAnswer"] = json!(can_answer);
            Frame::event("agent_permission", &payload)
        };
        Some(Self::PerOwner {
            owner,
            viewer: frame(false),
            for_owner: frame(true),
        })
    }

    pub(crate) fn from_event(event: ev::TeamEvent) -> Option<Self> {
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
                    "status": agents_json::status_name(status.status),
                    "exitCode": status.exit_code,
                    "task": status.task,
                    "at": status.at_ms,
                }),
            ),
            ev::team_event::Event::ChatMessage(message) => {
                Self::team("chat_message", &chat_json::message_view(message))
            }
            ev::team_event::Event::TeamPresence(presence) => {
                Self::team("team_presence", &chat_json::presence_view(presence))
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
            ev::team_event::Event::PreviewFailed(failed) => Self::team(
                "preview_failed",
                &json!({
                    "commit": failed.commit,
                    "deploymentId": failed.deployment_id,
                    "reason": failed.reason,
                    "logTail": failed.log_tail,
                    "at": failed.at_ms,
                }),
            ),
            ev::team_event::Event::AgentPermission(request) => return Self::permission(request),
            ev::team_event::Event::AgentPermissionResolved(resolved) => Self::team(
                "agent_permission_resolved",
                &json!({
                    "agentId": resolved.agent_id,
                    "requestId": resolved.request_id,
                    "owner": resolved.owner_id,
                    "decision": agents_json::permission_state_name(resolved.state),
                    "decidedBy": resolved.decided_by,
                    "at": resolved.at_ms,
                }),
            ),
            ev::team_event::Event::PolicyUpdated(policy) => Self::team(
                "policy_updated",
                &json!({"updatedBy": policy.updated_by, "updatedAt": policy.updated_at_ms}),
            ),
        })
    }

    /// About the memory the event holds.
    pub(crate) fn size(&self) -> usize {
        let frame = match self {
            Self::Output { viewer, .. } => viewer.len(),
            Self::PerOwner {
                viewer, for_owner, ..
            } => viewer.len() + for_owner.len(),
            Self::Team(frame) => frame.len(),
        };
        frame + std::mem::size_of::<Self>()
    }

    /// The agent and seq of an output event.
    pub(crate) fn output_seq(&self) -> Option<(&str, u64)> {
        match self {
            Self::Output { agent_id, seq, .. } => Some((agent_id, *seq)),
            Self::PerOwner { .. } | Self::Team(_) => None,
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
    pub(crate) fn queue(&self, socket: &SocketRef, joined: &Joined) -> Result<bool, Resync> {
        match self {
            Self::Output {
                agent,
                seq,
                owner,
                viewer,
                for_owner,
                ..
            } => {
                match joined.delivered.first(*agent, *seq) {
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
                    joined.delivered.undo(*agent, *seq);
                }
                queued.map_err(|_| Resync::SlowConsumer)
            }
            Self::PerOwner {
                owner,
                viewer,
                for_owner,
            } => {
                let frame = if joined.user_id == *owner {
                    for_owner
                } else {
                    viewer
                };
                socket
                    .queue(frame.clone())
                    .map_err(|_| Resync::SlowConsumer)
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
    pub(crate) fn reason(self) -> &'static str {
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
