//! Proto <-> domain: requests refused when a field they need is missing or malformed.

use covibe_proto::common::v1 as common;
use covibe_proto::orchestrator::v1 as pb;
use covibe_proto::vmagent::v1::Command;
use covibe_types::{AgentId, ApiError};

use crate::model::Agent;

pub(crate) fn agent_pb(a: &Agent) -> common::Agent {
    common::Agent {
        id: a.id.to_string(),
        team_id: a.team_id.to_string(),
        owner_id: a.owner_id.to_string(),
        vm_id: a.vm_id.clone(),
        strategy: a.strategy.clone(),
        task: a.task.clone(),
        status: a.status.to_proto().into(),
        exit_code: a.exit_code,
        created_at_ms: a.created_at_ms,
        started_at_ms: a.started_at_ms,
        finished_at_ms: a.finished_at_ms,
        output_seq: a.output_seq,
        cost_usd: a.outcome.map(|o| o.cost_usd),
        num_turns: a.outcome.map(|o| o.turns),
        duration_ms: a.outcome.map(|o| o.duration_ms),
    }
}

/// A control request, whole.
pub(crate) struct Control {
    pub agent: AgentId,
    pub command: Command,
}

impl TryFrom<pb::ControlAgentRequest> for Control {
    type Error = ApiError;

    fn try_from(r: pb::ControlAgentRequest) -> Result<Self, ApiError> {
        Ok(Self {
            agent: r
                .agent_id
                .parse()
                .map_err(|_| ApiError::invalid("invalid agent id"))?,
            command: r
                .command
                .ok_or_else(|| ApiError::invalid("a command is required"))?,
        })
    }
}
