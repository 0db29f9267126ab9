//! vm-agent: runs an agent command on a member's VM and streams its output to the orchestrator.
//!
//! The agent command runs in its own process group. Its stdout and stderr lines become output
//! chunks with a gap-free sequence number. Each chunk is appended to an on-disk spool (and to a
//! human-readable log) before it is queued for sending over the `AgentLink.Attach` stream, which
//! is redialled with backoff whenever it breaks. Only a bounded window of unacknowledged chunks is
//! held in memory; a resend after a reconnect reads older ones back from the spool, and spool
//! segments are deleted once acknowledged. When the window is full of unsent chunks or the spool
//! reaches its limit, the agent's pipes are no longer read, so memory and disk stay bounded
//! whatever the agent prints.
//!
//! An agent command reading Claude Code's stream-json input (`--input-format stream-json`) gets
//! its task as the first user message on stdin and speaks the control protocol: its tool
//! requests go up the link as `PermissionRequest`s (sent again after a reconnect until
//! answered), the orchestrator's `PermissionAnswer`s come back as `control_response` lines, and
//! input becomes further user messages.

mod agent_log;
mod child;
mod cli;
mod command;
mod control;
mod conversation;
mod daemon;
pub mod job;
mod link;
mod permissions;
mod queue;
mod run;
mod spool;

pub use cli::{Cli, CliCommand, DaemonArgs, RunArgs, run_cli};
pub use command::{AgentCommand, parse_command, split_command};
pub use daemon::{DaemonOptions, daemon};
pub use run::{RunOptions, Started, run, run_reporting, run_until};

/// Exit code when everything was delivered (whatever the agent's own exit code).
pub const EXIT_DELIVERED: i32 = 0;
/// Exit code when the orchestrator did not acknowledge everything within the drain timeout.
pub const EXIT_DRAIN_TIMEOUT: i32 = 2;
/// Exit code when the orchestrator refused the link for good (bad token, unknown agent).
pub const EXIT_REFUSED: i32 = 3;

/// The environment variable carrying the agent token; it is never passed on the command line
/// and is removed from the agent command's environment.
pub const AGENT_TOKEN_ENV: &str = "COVIBE_AGENT_TOKEN";

/// The environment variable carrying the VM token of `vm-agent daemon`; never on the command
/// line either.
pub const VM_TOKEN_ENV: &str = "COVIBE_VM_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid command template: {0}")]
    CommandTemplate(&'static str),
    #[error("invalid agent id {0:?}: use letters, digits, '.', '_' and '-'")]
    AgentId(String),
    #[error("invalid options: {0}")]
    Options(&'static str),
    #[error("link: {0}")]
    Link(#[from] covibe_bootstrap::Error),
    #[error("open spool {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("link task failed: {0}")]
    LinkTask(#[from] tokio::task::JoinError),
}
