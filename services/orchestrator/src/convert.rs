//! Proto <-> domain: requests refused when a field they need is missing or malformed.

use covibe_proto::common::v1 as common;
use covibe_proto::orchestrator::v1 as pb;
use covibe_proto::vmagent::v1::Command;
use covibe_types::{AgentId, ApiError};

use crate::model::{Agent, Answer, MAX_INPUT_JSON, Permission, PermissionState, Reply};

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
        updated_input_json: p.updated_input_json.clone(),
    }
}

/// The longest message a member may send with a deny.
const MAX_MESSAGE_BYTES: usize = 1024;

/// An owner's answer, whole.
pub(crate) struct AnswerRequest {
    pub agent: AgentId,
    pub request_id: String,
    pub reply: Reply,
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
        let updated_input_json = updated_input(answer, r.updated_input_json)?;
        Ok(Self {
            agent: r
                .agent_id
                .parse()
                .map_err(|_| ApiError::invalid("invalid agent id"))?,
            request_id: r.request_id,
            reply: Reply {
                answer,
                message: r.message,
                updated_input_json,
            },
        })
    }
}

/// An allow's changed input, checked: a JSON object of at most [`MAX_INPUT_JSON`] bytes, and
/// only with an allow (a deny runs nothing). Kept as sent: the agent gets exactly this.
fn updated_input(answer: Answer, json: String) -> Result<String, ApiError> {
    if json.is_empty() {
        return Ok(json);
    }
    if answer == Answer::Deny {
        return Err(ApiError::invalid("a deny cannot change the tool's input"));
    }
    if json.len() > MAX_INPUT_JSON {
        return Err(ApiError::invalid(format!(
            "updated input is longer than {MAX_INPUT_JSON} bytes"
        )));
    }
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(_)) => Ok(json),
        Ok(_) => Err(ApiError::invalid("updated input must be a JSON object")),
        Err(_) => Err(ApiError::invalid("updated input is not valid JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(decision: pb::PermissionDecision, updated: &str) -> pb::AnswerPermissionRequest {
        pb::AnswerPermissionRequest {
            agent_id: AgentId::new().to_string(),
            request_id: "r".to_owned(),
            decision: decision.into(),
            message: String::new(),
            updated_input_json: updated.to_owned(),
        }
    }

    fn refusal(decision: pb::PermissionDecision, updated: &str) -> String {
        match AnswerRequest::try_from(request(decision, updated)) {
            Ok(_) => panic!("{updated:?} was taken"),
            Err(err) => err.message,
        }
    }

    #[test]
    fn a_changed_input_is_an_object_within_bounds_and_only_with_an_allow() {
        use pb::PermissionDecision::{Allow, AllowAlwaysForAgent, Deny};
        let answer = r#"{"questions":[],"answers":{"Which?":"Hi"}}"#;
        for decision in [Allow, AllowAlwaysForAgent] {
            let taken = AnswerRequest::try_from(request(decision, answer)).unwrap();
            assert_eq!(taken.reply.updated_input_json, answer);
        }
        let unchanged = AnswerRequest::try_from(request(Deny, "")).unwrap();
        assert_eq!(unchanged.reply.updated_input_json, "");
        assert_eq!(
            refusal(Deny, answer),
            "a deny cannot change the tool's input"
        );
        assert_eq!(refusal(Allow, "[1]"), "updated input must be a JSON object");
        assert_eq!(refusal(Allow, "{"), "updated input is not valid JSON");
        let huge = format!(r#"{{"command":"{}"}}"#, "a".repeat(MAX_INPUT_JSON));
        assert_eq!(
            refusal(Allow, &huge),
            format!("updated input is longer than {MAX_INPUT_JSON} bytes")
        );
    }
}
