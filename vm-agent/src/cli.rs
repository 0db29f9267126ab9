//! The `vm-agent` command line, shared with `covibe vm-agent`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::{AGENT_TOKEN_ENV, DaemonOptions, RunOptions, VM_TOKEN_ENV, daemon, run_until};

/// Runs Claude Code agents on this VM and streams their output to the orchestrator.
#[derive(Debug, clap::Parser)]
#[command(name = "vm-agent", version)]
pub struct Cli {
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CliCommand {
    /// Run one agent command and stream its output until the orchestrator has stored all of it.
    ///
    /// The agent token is read from the COVIBE_AGENT_TOKEN environment variable. Exit codes: 0
    /// when everything was delivered (whatever the agent's own exit code), 2 when the
    /// orchestrator did not store everything within the drain timeout, 3 when it refused the
    /// agent.
    Run(RunArgs),
    /// Dial in to the vm-connector for a `dial_in` VM and run the agents it spawns here.
    ///
    /// The VM token (minted with POST /api/vm/token) is read from the COVIBE_VM_TOKEN
    /// environment variable. Reconnects with backoff; exits 3 when the token is refused.
    Daemon(DaemonArgs),
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The vm-connector's endpoint, e.g. http://vm-connector:50054.
    #[arg(long)]
    pub connector_url: String,
    /// The VM's id, as registered with the `dial_in` strategy.
    #[arg(long)]
    pub vm_id: String,
    /// The agent command template, as for `run`, e.g. "claude -p --input-format stream-json
    /// --output-format stream-json --verbose --permission-prompt-tool stdio".
    #[arg(long, env = "COVIBE_AGENT_COMMAND")]
    pub command: String,
    /// Directory the agents run in [default: the current directory].
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Where each agent's spool and log go, as for `run`.
    #[arg(long, env = "COVIBE_DATA_DIR", default_value = ".covibe")]
    pub spool_dir: PathBuf,
    /// Seconds between heartbeats on the dial-in stream.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
}

impl DaemonArgs {
    pub fn into_options(self, vm_token: String) -> DaemonOptions {
        let mut opts = DaemonOptions::new(
            self.connector_url,
            self.vm_id,
            vm_token,
            self.command,
            self.workdir,
            self.spool_dir,
        );
        opts.heartbeat_interval = Duration::from_secs(self.heartbeat_secs.max(1));
        opts
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The orchestrator's AgentLink endpoint, e.g. http://orchestrator:50051.
    #[arg(long)]
    pub link_url: String,
    /// The agent's id as the orchestrator knows it; also names the log file.
    #[arg(long)]
    pub agent_id: String,
    /// The agent command; the word containing {task} receives the task as one argument (e.g.
    /// "claude -p {task} --output-format stream-json --verbose"), or, with `--input-format
    /// stream-json`, the task is its first message on stdin. Never run through a shell.
    #[arg(long)]
    pub command: String,
    /// The task, given to the command as one argument.
    #[arg(long)]
    pub task: String,
    /// Directory the agent runs in [default: the current directory].
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Unacknowledged output is spooled to <spool-dir>/agent_logs/<agent-id>.spool/ (deleted once
    /// delivered) and all output logged to <spool-dir>/agent_logs/<agent-id>.log.
    #[arg(long, env = "COVIBE_DATA_DIR", default_value = ".covibe")]
    pub spool_dir: PathBuf,
    /// Unacknowledged output kept on disk, at most; the agent's output waits beyond it (bytes,
    /// or with a K, M or G suffix for KiB, MiB, GiB; at least 1M).
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
    /// Size at which the agent log is rotated to <agent-id>.log.1; 0 turns the log off.
    #[arg(long, default_value = "64M", value_parser = parse_bytes)]
    pub log_max_bytes: u64,
    /// Unacknowledged output held in memory, at most; older output is read back from the spool.
    #[arg(long, default_value = "4M", value_parser = parse_bytes)]
    pub window_max_bytes: u64,
    /// Unacknowledged output chunks (lines) held in memory, at most.
    #[arg(long, default_value_t = 4096)]
    pub window_max_chunks: usize,
    /// Seconds to wait after the agent exited for the orchestrator to store everything.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_secs: u64,
    /// W3C trace context of the spawn, so the run joins its trace.
    #[arg(long, env = "TRACEPARENT", hide = true)]
    pub traceparent: Option<String>,
}

impl RunArgs {
    pub fn into_options(self, agent_token: String) -> RunOptions {
        let mut opts = RunOptions::new(
            self.link_url,
            self.agent_id,
            agent_token,
            self.command,
            self.task,
        );
        opts.workdir = self.workdir;
        opts.spool_dir = self.spool_dir;
        opts.spool_max_bytes = self.spool_max_bytes;
        opts.log_max_bytes = self.log_max_bytes;
        opts.window_max_bytes = usize::try_from(self.window_max_bytes).unwrap_or(usize::MAX);
        opts.window_max_chunks = self.window_max_chunks;
        opts.drain_timeout = Duration::from_secs(self.drain_timeout_secs);
        opts.traceparent = self.traceparent.filter(|t| !t.is_empty());
        opts
    }
}

/// A byte count: digits, optionally followed by K, M or G (powers of 1024).
fn parse_bytes(value: &str) -> Result<u64, String> {
    let upper = value.trim().to_ascii_uppercase();
    let (digits, shift) = [("K", 10), ("M", 20), ("G", 30)]
        .into_iter()
        .find_map(|(suffix, shift)| upper.strip_suffix(suffix).map(|digits| (digits, shift)))
        .unwrap_or((upper.as_str(), 0));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{value:?} is not a byte count like 1048576, 512K, 16M or 1G"))
}

/// Runs the parsed command line and returns the process exit code. The caller installs
/// telemetry; a first SIGTERM or Ctrl-C kills the agent and drains, a second one exits at once.
pub async fn run_cli(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        CliCommand::Run(args) => {
            let token = std::env::var(AGENT_TOKEN_ENV)
                .ok()
                .filter(|token| !token.is_empty())
                .with_context(|| format!("{AGENT_TOKEN_ENV} is not set"))?;
            let opts = args.into_options(token);
            tracing::debug!(?opts, "vm-agent options");
            Ok(run_until(opts, covibe_bootstrap::shutdown_signal()).await?)
        }
        CliCommand::Daemon(args) => {
            let token = std::env::var(VM_TOKEN_ENV)
                .ok()
                .filter(|token| !token.is_empty())
                .with_context(|| format!("{VM_TOKEN_ENV} is not set"))?;
            let opts = args.into_options(token);
            Ok(daemon(opts, covibe_bootstrap::shutdown_signal()).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Outer {
        #[command(subcommand)]
        command: OuterCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum OuterCommand {
        VmAgent(Cli),
    }

    #[test]
    fn parses_run_and_embeds_as_a_subcommand() {
        Cli::command().debug_assert();
        let args = [
            "covibe",
            "vm-agent",
            "run",
            "--link-url",
            "http://o:1",
            "--agent-id",
            "a1",
            "--command",
            "claude -p {task}",
            "--task",
            "fix it",
            "--workdir",
            "/w",
            "--drain-timeout-secs",
            "7",
            "--spool-dir",
            "/s",
            "--spool-max-bytes",
            "16M",
            "--window-max-chunks",
            "9",
        ];
        let parsed = Outer::try_parse_from(args).map_err(|err| err.to_string());
        let Ok(Outer {
            command:
                OuterCommand::VmAgent(Cli {
                    command: CliCommand::Run(run),
                    ..
                }),
        }) = parsed
        else {
            panic!("unexpected parse: {parsed:?}");
        };
        let opts = run.into_options("tok".into());
        assert_eq!(
            (
                opts.link_url.as_str(),
                opts.agent_id.as_str(),
                opts.command.as_str(),
                opts.task.as_str()
            ),
            ("http://o:1", "a1", "claude -p {task}", "fix it")
        );
        assert_eq!(opts.workdir, Some(PathBuf::from("/w")));
        assert_eq!(opts.spool_dir, PathBuf::from("/s"));
        assert_eq!(opts.drain_timeout, Duration::from_secs(7));
        assert_eq!(opts.agent_token, "tok");
        assert_eq!(
            (
                opts.spool_max_bytes,
                opts.log_max_bytes,
                opts.window_max_bytes,
                opts.window_max_chunks
            ),
            (16 << 20, 64 << 20, 4 << 20, 9)
        );
    }

    #[test]
    fn byte_counts_take_binary_suffixes() {
        for (value, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512k", 512 << 10),
            ("1G", 1 << 30),
        ] {
            assert_eq!(parse_bytes(value), Ok(bytes), "{value}");
        }
        for value in ["", "M", "1.5M", "-1", "1T", "1KK", "99999999999G"] {
            assert!(parse_bytes(value).is_err(), "{value}");
        }
    }
}
