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
