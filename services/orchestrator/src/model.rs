//! The orchestrator's domain types.

use bytes::Bytes;
use covibe_types::{AgentId, AgentStatus, TeamId, UserId};

use crate::stream_json::Outcome;

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub team_id: TeamId,
    pub owner_id: UserId,
    pub vm_id: String,
    /// How the vm-agent was started (`local`, `dial_in`, `ssh_proxy`); empty until it was.
    pub strategy: String,
    pub task: String,
    pub status: AgentStatus,
    pub exit_code: Option<i32>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Output chunks stored so far; the next expected sequence number.
    pub output_seq: u64,
    /// Cost, turns and duration from the agent's final stream-json result, once printed.
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_task_bytes: usize,
    /// Chunks in one page of history, at most.
    pub max_page: u64,
    /// Bytes in one page of history, at most (always at least one chunk).
    pub max_page_bytes: usize,
    /// How long a killed agent gets between SIGTERM and SIGKILL.
    pub kill_grace_ms: u32,
    /// Agents one member may have pending, starting or running at once.
    pub max_running_agents: u32,
    /// Spawns one member may make per minute.
    pub spawns_per_minute: u32,
    /// An agent whose vm-agent is silent this long is marked `lost`.
    pub lost_after_ms: i64,
    /// How long a tool use asked of the agent's owner waits for an answer before it is denied.
    pub approval_timeout_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_task_bytes: 16 * 1024,
            max_page: 5_000,
            max_page_bytes: covibe_proto::limits::MAX_HISTORY_PAGE_BYTES,
            kill_grace_ms: 5_000,
            max_running_agents: 5,
            spawns_per_minute: 10,
            lost_after_ms: 120_000,
            approval_timeout_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPage {
    pub chunks: Vec<StoredChunk>,
    pub next_seq: u64,
    /// More output is stored past the page.
    pub more: bool,
}

/// One agent's chunks in a multi-agent `append_output`.
#[derive(Debug, Clone, Copy)]
pub struct OutputBatch<'a> {
    pub agent: AgentId,
    pub chunks: &'a [StoredChunk],
}

/// One stored output chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub seq: u64,
    pub stream: i32,
    pub data: Bytes,
    /// The line understood as Claude Code stream-json (our event JSON), parsed once at ingest;
    /// empty until then, and for lines stored by an older version.
    pub event: Bytes,
}

/// Whose output a batch is, as the fan-out needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    pub id: AgentId,
    pub team_id: TeamId,
    pub owner_id: UserId,
}

/// What became of a tool use asked of an agent's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionState {
    Pending,
    Allowed,
    Denied,
    TimedOut,
}

impl PermissionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "timed_out" => Self::TimedOut,
            _ => return None,
        })
    }
}

/// A tool use an agent asked permission for, stored once the policy left it to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub agent_id: AgentId,
    pub team_id: TeamId,
    pub owner_id: UserId,
    pub request_id: String,
    pub tool: String,
    pub tool_use_id: String,
    /// The tool's input as JSON, at most [`MAX_INPUT_JSON`] bytes (`{}` when it was longer).
    pub input_json: String,
    pub summary: String,
    /// The directory the agent works in, which the policy's path rules are read from (`.` when
    /// its vm-agent did not say).
    pub project_dir: String,
    pub state: PermissionState,
    /// A member's id, `timeout` or `ended`; `None` while pending.
    pub decided_by: Option<String>,
    /// The deny's message as told to the agent.
    pub message: String,
    /// With an allow: the input the tool runs with instead, a JSON object (an answered
    /// question); empty when unchanged.
    pub updated_input_json: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

/// The largest tool input kept with a waiting request.
pub const MAX_INPUT_JSON: usize = 64 * 1024;

/// The owner's answer to a waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allow,
    Deny,
    /// Allow, and allow the agent's later uses of the same tool without asking.
    AllowAlways,
}

/// The owner's answer with what it carries: a deny's message, an allow's changed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub answer: Answer,
    /// With a deny: why (a default one when blank).
    pub message: String,
    /// With an allow: the tool's input to run with instead, a JSON object of at most
    /// [`MAX_INPUT_JSON`] bytes; empty when unchanged.
    pub updated_input_json: String,
}

impl Reply {
    /// An answer carrying nothing else.
    pub fn plain(answer: Answer) -> Self {
        Self {
            answer,
            message: String::new(),
            updated_input_json: String::new(),
        }
    }
}

/// The team's rules and the agent owner's own, as the team service keeps them (unparsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub team_allow: Vec<String>,
    pub team_deny: Vec<String>,
    pub mine_allow: Vec<String>,
    pub mine_deny: Vec<String>,
}
