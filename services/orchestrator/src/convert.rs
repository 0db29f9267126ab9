//! Proto <-> domain: requests refused when a field they need is missing or malformed.

use covibe_proto::common::v1 as common;
use covibe_proto::orchestrator::v1 as pb;
use covibe_proto::vmagent::v1::Command;
use covibe_types::{AgentId, ApiError};

use crate::model::{Agent, Answer, Permission, PermissionState};

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

pub(crate) fn state_pb(state: PermissionState) -> pb::PermissionState {
    match state {
        PermissionState::Pending => pb::PermissionState::Pending,
        PermissionState::Allowed => pb::PermissionState::Allowed,
        PermissionState::Denied => pb::PermissionState::Denied,
        PermissionState::TimedOut => pb::PermissionState::TimedOut,
    }
}

pub(crate) fn permission_pb(p: &Permission) -> pb::PermissionRequest {
    pb::PermissionRequest {
        agent_id: p.agent_id.to_string(),
        team_id: p.team_id.to_string(),
        owner_id: p.owner_id.to_string(),
        request_id: p.request_id.clone(),
        tool: p.tool.clone(),
        input_json: p.input_json.clone(),
        summary: p.summary.clone(),
        state: state_pb(p.state).into(),
        decided_by: p.decided_by.clone().unwrap_or_default(),
        message: p.message.clone(),
        created_at_ms: p.created_at_ms,
        expires_at_ms: p.expires_at_ms,
        decided_at_ms: p.decided_at_ms,
        tool_use_id: p.tool_use_id.clone(),
    }
}

/// The longest message a member may send with a deny.
const MAX_MESSAGE_BYTES: usize = 1024;

/// An owner's answer, whole.
pub(crate) struct AnswerRequest {
    pub agent: AgentId,
    pub request_id: String,
    pub answer: Answer,
    pub message: String,
}

impl TryFrom<pb::AnswerPermissionRequest> for AnswerRequest {
    type Error = ApiError;

    fn try_from(r: pb::AnswerPermissionRequest) -> Result<Self, ApiError> {
        let answer = match pb::PermissionDecision::try_from(r.decision) {
            Ok(pb::PermissionDecision::Allow) => Answer::Allow,
            Ok(pb::PermissionDecision::Deny) => Answer::Deny,
            Ok(pb::PermissionDecision::AllowAlwaysForAgent) => Answer::AllowAlways,
            _ => {
                return Err(ApiError::invalid(
                    "decision must be allow, deny or allow_always_for_agent",
                ));
            }
        };
        if r.request_id.is_empty() {
            return Err(ApiError::invalid("a request id is required"));
        }
        if r.message.len() > MAX_MESSAGE_BYTES {
            return Err(ApiError::invalid(format!(
                "message is longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        Ok(Self {
            agent: r
                .agent_id
                .parse()
                .map_err(|_| ApiError::invalid("invalid agent id"))?,
            request_id: r.request_id,
            answer,
            message: r.message,
        })
    }
}
