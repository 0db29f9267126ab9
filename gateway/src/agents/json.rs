//! The JSON shapes of agents: what a client sends to spawn and control, and how agents, their
//! output and its history look.

use covibe_proto::common::v1 as common;
use covibe_proto::limits::MAX_HISTORY_PAGE_BYTES;
use covibe_proto::orchestrator::v1 as orch;
use covibe_types::AgentStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spawn {
    pub task: String,
    #[serde(default)]
    pub vm_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputQuery {
    #[serde(default)]
    pub from_seq: u64,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlEvent {
    pub agent_id: String,
    pub command: String,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub team_id: String,
    /// The owner's user id.
    pub owner: String,
    pub vm_id: String,
    /// How the vm-agent was started on the VM: `local`, `dial_in` or `ssh_proxy` (absent until
    /// it was).
    pub strategy: Option<String>,
    pub task: String,
    #[schema(value_type = AgentStatusName)]
    pub status: &'static str,
    pub exit_code: Option<i32>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Output chunks stored so far (the next `seq`).
    pub output_seq: u64,
    pub cost_usd: Option<f64>,
    pub turns: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// One `agent_output` Socket.io event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentOutput<'a> {
    pub agent_id: &'a str,
    pub owner: &'a str,
    pub seq: u64,
    pub stream: &'static str,
    pub data: std::borrow::Cow<'a, str>,
    /// The line understood as Claude Code stream-json (`{"kind": "raw"}` when it is not).
    pub event: &'a serde_json::value::RawValue,
    pub can_control: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    pub seq: u64,
    #[schema(value_type = StreamName)]
    pub stream: &'static str,
    pub data: String,
    /// The line as Claude Code stream-json (`{"kind": "raw"}` when it is not).
    #[schema(value_type = Object)]
    pub event: Box<serde_json::value::RawValue>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputPage {
    pub agent_id: String,
    pub chunks: Vec<OutputChunk>,
    pub next_seq: u64,
    /// More output is stored from `nextSeq` on: ask again. A page holds at most `limit` chunks
    /// and 4 MiB of JSON (always at least one chunk), so a short page may still have more.
    pub more: bool,
}

/// `{agent}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentEnvelope {
    pub agent: Agent,
}

/// `{agents}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// `{ok: true}`: the command was passed on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub ok: bool,
}

/// An agent's status, as the API names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // names for the document; the values are written as text
pub enum AgentStatusName {
    Pending,
    Starting,
    Running,
    Completed,
    Failed,
    Killed,
    Lost,
    /// Running, and waiting for its owner to allow or deny a tool use.
    #[serde(rename = "waiting_for_approval")]
    WaitingForApproval,
    Unknown,
}

/// Which of the agent's outputs a line came from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // names for the document; the values are written as text
pub enum StreamName {
    Stdout,
    Stderr,
}

pub fn status_name(raw: i32) -> &'static str {
    common::AgentStatus::try_from(raw)
        .ok()
        .and_then(AgentStatus::from_proto)
        .map_or("unknown", AgentStatus::as_str)
}

pub fn stream_name(raw: i32) -> &'static str {
    match common::OutputStream::try_from(raw) {
        Ok(common::OutputStream::Stderr) => "stderr",
        _ => "stdout",
    }
}

pub fn agent(a: common::Agent) -> Agent {
    Agent {
        status: status_name(a.status),
        id: a.id,
        team_id: a.team_id,
        owner: a.owner_id,
        vm_id: a.vm_id,
        strategy: (!a.strategy.is_empty()).then_some(a.strategy),
        task: a.task,
        exit_code: a.exit_code,
        created_at: a.created_at_ms,
        started_at: a.started_at_ms,
        finished_at: a.finished_at_ms,
        output_seq: a.output_seq,
        cost_usd: a.cost_usd,
        turns: a.num_turns,
        duration_ms: a.duration_ms,
    }
}

/// The REST page of history: the orchestrator's page, cut where its JSON would pass
/// [`MAX_HISTORY_PAGE_BYTES`] (escaping can make text longer than its bytes; the first chunk
/// always stays).
pub fn output_page(agent_id: String, page: orch::GetOutputResponse) -> OutputPage {
    // `{"agentId":"…","chunks":[],"nextSeq":…,"more":false}`, at most.
    let mut bytes = 64 + agent_id.len();
    let mut next_seq = page.next_seq;
    let mut more = page.more;
    let mut chunks = Vec::with_capacity(page.chunks.len());
    for c in page.chunks {
        let chunk = OutputChunk {
            seq: c.seq,
            stream: stream_name(c.stream),
            data: text(c.data),
            event: event_value(c.event_json),
        };
        // Its JSON and a comma.
        let size = json_len(&chunk) + 1;
        if !chunks.is_empty() && bytes + size > MAX_HISTORY_PAGE_BYTES {
            next_seq = chunk.seq;
            more = true;
            break;
        }
        bytes += size;
        chunks.push(chunk);
    }
    OutputPage {
        agent_id,
        chunks,
        next_seq,
        more,
    }
}

/// The length of `value` as JSON, without keeping the text.
fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and these shapes always serialize.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// An agent's output bytes as text: valid UTF-8 as it is (no copy), anything else with U+FFFD
/// where it is not (`from_utf8_lossy` alone checks byte by byte, slowly, on the replay path).
pub fn text(data: Vec<u8>) -> String {
    String::from_utf8(data)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

/// [`text`] of borrowed bytes.
pub fn text_ref(data: &[u8]) -> std::borrow::Cow<'_, str> {
    std::str::from_utf8(data).map_or_else(|_| String::from_utf8_lossy(data), Into::into)
}

/// The structured event as the orchestrator wrote it, passed on without re-parsing.
pub fn event_value(json: String) -> Box<serde_json::value::RawValue> {
    use serde_json::value::RawValue;
    RawValue::from_string(json)
        .or_else(|_| RawValue::from_string(r#"{"kind":"raw"}"#.to_owned()))
        .unwrap_or_default()
}

/// A tool use an agent waits on (or that was decided), as `GET /api/agent/permissions` lists
/// it and `agent_permission` sends it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRequest {
    pub agent_id: String,
    /// The agent's own id for the request.
    pub request_id: String,
    /// The agent's owner (the only member who may answer).
    pub owner: String,
    /// `Bash`, `Edit`, `Write`, `WebFetch`, `AskUserQuestion`, an MCP tool...
    pub tool: String,
    /// The tool's input, a JSON object (`{}` when it was over 64 KiB).
    #[schema(value_type = Object)]
    pub input: Box<serde_json::value::RawValue>,
    /// For people: the command, the file and a short diff summary, the question...
    pub summary: String,
    #[schema(value_type = PermissionStateName)]
    pub state: &'static str,
    /// The member who answered, `timeout`, or `ended`; absent while pending.
    pub decided_by: Option<String>,
    /// Why it was denied, as told to the agent.
    pub message: Option<String>,
    pub created_at: i64,
    /// When it is denied unless answered.
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    /// The `tool_use` block of the agent's output this is about.
    pub tool_use_id: Option<String>,
    /// With an allow that changed the input (an answered question): the input the tool ran
    /// with.
    #[schema(value_type = Option<Object>)]
    pub updated_input: Option<Box<serde_json::value::RawValue>>,
}

/// What became of a tool request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // names for the document; the values are written as text
pub enum PermissionStateName {
    Pending,
    Allowed,
    Denied,
    TimedOut,
}

/// The owner's answer to a tool request.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PermissionDecisionName {
    Allow,
    Deny,
    /// Allow, and allow this agent's later uses of the same tool without asking.
    AllowAlwaysForAgent,
}

/// `POST /api/agent/{id}/permissions/{requestId}`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerPermission {
    pub decision: PermissionDecisionName,
    /// With a deny: why, shown to the agent (at most 1 KiB).
    #[serde(default)]
    pub message: Option<String>,
    /// With an allow: the input the tool runs with instead (at most 64 KiB, and not one the
    /// team's policy denies). An `AskUserQuestion` is answered with its input plus
    /// `"answers": {"<question>": "<chosen label>"}`.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>)]
    pub updated_input: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `agent_permission_answer`'s argument.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerPermissionEvent {
    pub agent_id: String,
    pub request_id: String,
    pub decision: PermissionDecisionName,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub updated_input: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `{requests}`: the team's waiting tool requests, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PermissionList {
    pub requests: Vec<PermissionRequest>,
}

/// `{request}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PermissionEnvelope {
    pub request: PermissionRequest,
}

pub fn decision_pb(decision: PermissionDecisionName) -> orch::PermissionDecision {
    match decision {
        PermissionDecisionName::Allow => orch::PermissionDecision::Allow,
        PermissionDecisionName::Deny => orch::PermissionDecision::Deny,
        PermissionDecisionName::AllowAlwaysForAgent => {
            orch::PermissionDecision::AllowAlwaysForAgent
        }
    }
}

pub fn permission_state_name(raw: i32) -> &'static str {
    match orch::PermissionState::try_from(raw) {
        Ok(orch::PermissionState::Pending) => "pending",
        Ok(orch::PermissionState::Allowed) => "allowed",
        Ok(orch::PermissionState::Denied) => "denied",
        Ok(orch::PermissionState::TimedOut) => "timed_out",
        _ => "unknown",
    }
}

pub fn permission(p: orch::PermissionRequest) -> PermissionRequest {
    let input = serde_json::value::RawValue::from_string(p.input_json)
        .ok()
        .filter(|raw| raw.get().trim_start().starts_with('{'))
        .or_else(|| serde_json::value::RawValue::from_string("{}".to_owned()).ok())
        .unwrap_or_default();
    PermissionRequest {
        state: permission_state_name(p.state),
        agent_id: p.agent_id,
        request_id: p.request_id,
        owner: p.owner_id,
        tool: p.tool,
        input,
        summary: p.summary,
        decided_by: (!p.decided_by.is_empty()).then_some(p.decided_by),
        message: (!p.message.is_empty()).then_some(p.message),
        created_at: p.created_at_ms,
        expires_at: p.expires_at_ms,
        decided_at: p.decided_at_ms,
        tool_use_id: (!p.tool_use_id.is_empty()).then_some(p.tool_use_id),
        updated_input: serde_json::value::RawValue::from_string(p.updated_input_json).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_before_its_json_passes_the_byte_bound() {
        // Quotes escape to two bytes each: 300 KiB of them is 600 KiB of JSON per chunk.
        let line = vec![b'"'; 300 * 1024];
        let chunks = (0..20)
            .map(|seq| orch::OutputChunk {
                seq,
                stream: 1,
                data: line.clone(),
                event_json: r#"{"kind":"raw"}"#.to_owned(),
            })
            .collect();
        let page = output_page(
            "a".to_owned(),
            orch::GetOutputResponse {
                chunks,
                next_seq: 20,
                more: false,
            },
        );
        let json = serde_json::to_vec(&page).unwrap_or_default();
        assert!(json.len() <= MAX_HISTORY_PAGE_BYTES, "{} bytes", json.len());
        assert_eq!(page.chunks.len(), 6, "as many as fit");
        assert_eq!((page.next_seq, page.more), (6, true));
        assert!(page.chunks.iter().all(|c| c.data.len() == line.len()));

        // One chunk larger than the bound alone is still sent.
        let one = output_page(
            "a".to_owned(),
            orch::GetOutputResponse {
                chunks: vec![orch::OutputChunk {
                    seq: 3,
                    stream: 1,
                    data: vec![1u8; MAX_HISTORY_PAGE_BYTES],
                    event_json: "{}".to_owned(),
                }],
                next_seq: 4,
                more: false,
            },
        );
        assert_eq!((one.chunks.len(), one.next_seq, one.more), (1, 4, false));
    }

    #[test]
    fn output_text_keeps_valid_utf8_and_marks_the_rest() {
        assert_eq!(text("héllo".as_bytes().to_vec()), "héllo");
        assert_eq!(text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(text_ref(&[b'a', 0xc3]), "a\u{fffd}");
        assert!(matches!(text_ref(b"ok"), std::borrow::Cow::Borrowed("ok")));
    }
}
