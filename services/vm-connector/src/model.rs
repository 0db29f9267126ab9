//! The vm-connector's domain types.

use covibe_types::{TeamId, UserId, VmId};

/// How the connector reaches a VM to start vm-agents on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// This machine: vm-agent runs as a child process of the connector.
    Local,
    /// The VM dials in: its `vm-agent daemon` holds a stream the connector sends spawns down.
    DialIn,
}

impl Strategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::DialIn => "dial_in",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "dial_in" => Some(Self::DialIn),
            _ => None,
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: VmId,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub name: String,
    pub strategy: Strategy,
    pub last_seen_ms: i64,
}

/// What starting a vm-agent for an agent takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartAgent {
    pub agent_id: String,
    /// The member the agent is for: only their own VMs.
    pub user_id: String,
    pub team_id: String,
    /// Empty means the member's default VM.
    pub vm_id: String,
    pub task: String,
    pub agent_token: String,
    pub link_url: String,
}
