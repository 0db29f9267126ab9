//! Encoding what the orchestrator publishes on a team's fan-out channel.

use bytes::Bytes;
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;

use crate::model::{Agent, Source, StoredChunk};

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
