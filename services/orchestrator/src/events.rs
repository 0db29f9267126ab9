//! Encoding what the orchestrator publishes on a team's fan-out channel.

use bytes::Bytes;
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;

use crate::convert::{permission_pb, state_pb};
use crate::model::{Agent, Permission, Source, StoredChunk};

pub fn status(agent: &Agent) -> Bytes {
    let event = ev::TeamEvent {
        team_id: agent.team_id.to_string(),
        event: Some(ev::team_event::Event::AgentStatus(ev::AgentStatusChanged {
            agent_id: agent.id.to_string(),
            owner_id: agent.owner_id.to_string(),
            status: agent.status.to_proto().into(),
            exit_code: agent.exit_code,
            task: agent.task.clone(),
            at_ms: covibe_types::now_ms(),
        })),
    };
    Bytes::from(event.encode_to_vec())
}

pub(crate) fn output(agent: Source, chunk: &StoredChunk, event_json: String) -> Bytes {
    let event = ev::TeamEvent {
        team_id: agent.team_id.to_string(),
        event: Some(ev::team_event::Event::AgentOutput(ev::AgentOutput {
            agent_id: agent.id.to_string(),
            owner_id: agent.owner_id.to_string(),
            seq: chunk.seq,
            stream: chunk.stream,
            data: chunk.data.clone(),
            event_json,
        })),
    };
    Bytes::from(event.encode_to_vec())
}

/// `agent_permission`: an agent waits for its owner to allow a tool use.
pub(crate) fn permission(p: &Permission) -> Bytes {
    let event = ev::TeamEvent {
        team_id: p.team_id.to_string(),
        event: Some(ev::team_event::Event::AgentPermission(permission_pb(p))),
    };
    Bytes::from(event.encode_to_vec())
}

/// `agent_permission_resolved`: a waiting request was decided.
pub(crate) fn permission_resolved(p: &Permission) -> Bytes {
    let event = ev::TeamEvent {
        team_id: p.team_id.to_string(),
        event: Some(ev::team_event::Event::AgentPermissionResolved(
            ev::AgentPermissionResolved {
                agent_id: p.agent_id.to_string(),
                owner_id: p.owner_id.to_string(),
                request_id: p.request_id.clone(),
                state: state_pb(p.state).into(),
                decided_by: p.decided_by.clone().unwrap_or_default(),
                at_ms: p.decided_at_ms.unwrap_or_else(covibe_types::now_ms),
            },
        )),
    };
    Bytes::from(event.encode_to_vec())
}
