//! The vm-connector's domain types.

use covibe_types::{TeamId, UserId, VmId};

/// How the connector reaches a VM to start vm-agents on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// This machine: vm-agent runs as a child process of the connector.
    Local,
    /// The VM dials in: its `vm-agent daemon` holds a stream the connector sends spawns down.
    DialIn,
    /// The connector logs in over SSH with the member's credential and starts the vm-agent.
    SshProxy,
}

impl Strategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::DialIn => "dial_in",
            Self::SshProxy => "ssh_proxy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "dial_in" => Some(Self::DialIn),
            "ssh_proxy" => Some(Self::SshProxy),
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
    /// Used when a spawn names no VM.
    pub is_default: bool,
    /// Where the connector logs in (`ssh_proxy`); empty otherwise.
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Where agents work on the VM; empty means the login's home directory.
    pub project_dir: String,
    /// The pinned host key, `TYPE BASE64` as in `known_hosts`; empty until first contact.
    pub host_key: String,
    /// A different key the VM presented, refused until the owner accepts it.
    pub pending_host_key: String,
    pub last_error: String,
    pub last_error_ms: i64,
}

impl Vm {
    /// A new VM of `strategy` with nothing else set.
    pub fn new(user_id: UserId, team_id: TeamId, name: String, strategy: Strategy) -> Self {
        Self {
            id: VmId::new(),
            user_id,
            team_id,
            name,
            strategy,
            last_seen_ms: 0,
            is_default: false,
            host: String::new(),
            port: 0,
            username: String::new(),
            project_dir: String::new(),
            host_key: String::new(),
            pending_host_key: String::new(),
            last_error: String::new(),
            last_error_ms: 0,
        }
    }
}

/// A grant to run jobs on a VM for its team (stored by the hash of its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGrant {
    pub grant_hash: String,
    pub vm_id: VmId,
    pub team_id: TeamId,
    pub user_id: UserId,
    pub purpose: String,
}

pub use covibe_vm_agent::job::{JOB_TAIL_BYTES, JobOutcome, read_tail};

/// What kind of secret an `ssh_proxy` VM logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Key,
    Password,
}

impl CredentialKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "password" => Some(Self::Password),
            _ => None,
        }
    }
}

/// A VM's credential as stored: sealed, never plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub vm_id: VmId,
    pub team_id: TeamId,
    pub user_id: UserId,
    pub kind: CredentialKind,
    pub key_version: u32,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("vm_id", &self.vm_id)
            .field("kind", &self.kind)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
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
