//! The agent lifecycle: `pending → starting → running → completed | failed | killed`, or `lost`;
//! a running agent may be `waiting_for_approval` (of a tool use) and back, by the orchestrator
//! alone (never by [`AgentStatus::can_become`], so a vm-agent's report cannot undo it).

use std::fmt;
use std::str::FromStr;

use covibe_proto::common::v1 as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Pending,
    Starting,
    Running,
    Completed,
    Failed,
    Killed,
    Lost,
    WaitingForApproval,
}

impl AgentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Lost => "lost",
            Self::WaitingForApproval => "waiting_for_approval",
        }
    }

    /// Whether the agent has ended for good.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Killed | Self::Lost
        )
    }
    /// Whether moving from `self` to `next` is a step forward in the lifecycle. `lost` means
    /// "not heard from": an agent whose vm-agent comes back may still run and end normally.
    pub fn can_become(self, next: Self) -> bool {
        const fn rank(s: AgentStatus) -> u8 {
            match s {
                AgentStatus::Pending => 0,
                AgentStatus::Starting => 1,
                AgentStatus::Running | AgentStatus::WaitingForApproval => 2,
                _ => 3,
            }
        }
        match self {
            Self::Lost => matches!(
                next,
                Self::Running | Self::Completed | Self::Failed | Self::Killed
            ),
            _ => !self.is_final() && rank(next) > rank(self),
        }
    }

    pub fn to_proto(self) -> pb::AgentStatus {
        match self {
            Self::Pending => pb::AgentStatus::Pending,
            Self::Starting => pb::AgentStatus::Starting,
            Self::Running => pb::AgentStatus::Running,
            Self::Completed => pb::AgentStatus::Completed,
            Self::Failed => pb::AgentStatus::Failed,
            Self::Killed => pb::AgentStatus::Killed,
            Self::Lost => pb::AgentStatus::Lost,
            Self::WaitingForApproval => pb::AgentStatus::WaitingForApproval,
        }
    }

    pub fn from_proto(status: pb::AgentStatus) -> Option<Self> {
        Some(match status {
            pb::AgentStatus::Unspecified => return None,
            pb::AgentStatus::Pending => Self::Pending,
            pb::AgentStatus::Starting => Self::Starting,
            pb::AgentStatus::Running => Self::Running,
            pb::AgentStatus::Completed => Self::Completed,
            pb::AgentStatus::Failed => Self::Failed,
            pb::AgentStatus::Killed => Self::Killed,
            pb::AgentStatus::Lost => Self::Lost,
            pb::AgentStatus::WaitingForApproval => Self::WaitingForApproval,
        })
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "killed" => Self::Killed,
            "lost" => Self::Lost,
            "waiting_for_approval" => Self::WaitingForApproval,
            _ => return Err(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AgentStatus::*;

    #[test]
    fn lifecycle_only_moves_forward() {
        assert!(Pending.can_become(Starting));
        assert!(Starting.can_become(Completed));
        assert!(Running.can_become(Failed));
        assert!(!Running.can_become(Starting));
        assert!(!Completed.can_become(Failed));
        assert!(!Killed.can_become(Running));
        assert!(Running.can_become(Lost));
        assert!(Lost.can_become(Running) && Lost.can_become(Completed));
        assert!(!Lost.can_become(Starting) && !Lost.can_become(Lost));
        // Waiting for approval and back is the orchestrator's own move, not a step forward.
        assert!(!Running.can_become(WaitingForApproval));
        assert!(!WaitingForApproval.can_become(Running));
        assert!(WaitingForApproval.can_become(Killed) && WaitingForApproval.can_become(Lost));
    }
}
