//! One agent run: start the command, stream its output over the link while it runs, then drain
//! until the orchestrator has stored everything, then delete the spool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use covibe_proto::common::v1::AgentStatus;
use covibe_proto::vmagent::v1::{Command, Kill, command};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::agent_log::AgentLog;
use crate::child::{self, Task};
use crate::link::{self, LinkConfig, LinkEnd};
use crate::permissions::Permissions;
use crate::queue::{Limits, Outbox};
use crate::spool::SpoolDir;
use crate::{EXIT_DELIVERED, EXIT_DRAIN_TIMEOUT, EXIT_REFUSED, Error, parse_command};

/// Everything one run needs; build with [`RunOptions::new`] and adjust the public fields.
#[derive(Clone)]
pub struct RunOptions {
    /// The orchestrator's `AgentLink` endpoint, e.g. `http://orchestrator:50051`.
    pub link_url: String,
    pub agent_id: String,
    pub agent_token: String,
    /// The command template; see [`parse_command`].
    pub command: String,
    pub task: String,
    /// Where the agent runs; the current directory when `None`.
    pub workdir: Option<PathBuf>,
    /// The spool goes to `<spool_dir>/agent_logs/<agent_id>.spool/` and the human-readable log
    /// to `<spool_dir>/agent_logs/<agent_id>.log`.
    pub spool_dir: PathBuf,
    /// Unacknowledged output kept on disk, at most; the agent's output waits beyond it.
    pub spool_max_bytes: u64,
    /// Size at which the human-readable log is rotated (one old log is kept); 0 disables it.
    pub log_max_bytes: u64,
    /// Unacknowledged output kept in memory, at most (older chunks are read back from disk).
    pub window_max_bytes: usize,
    pub window_max_chunks: usize,
    /// How long to wait, once the agent exited, for the orchestrator to store everything.
    pub drain_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// W3C trace context of the spawn, so the run joins its trace.
    pub traceparent: Option<String>,
}

impl RunOptions {
    pub fn new(
        link_url: impl Into<String>,
        agent_id: impl Into<String>,
        agent_token: impl Into<String>,
        command: impl Into<String>,
        task: impl Into<String>,
    ) -> Self {
        Self {
            link_url: link_url.into(),
            agent_id: agent_id.into(),
            agent_token: agent_token.into(),
            command: command.into(),
            task: task.into(),
            workdir: None,
            spool_dir: PathBuf::from(".covibe"),
            spool_max_bytes: 1 << 30,
            log_max_bytes: 64 << 20,
            window_max_bytes: 4 << 20,
            window_max_chunks: 4096,
            drain_timeout: Duration::from_secs(120),
            heartbeat_interval: Duration::from_secs(10),
            traceparent: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("link_url", &self.link_url)
            .field("agent_id", &self.agent_id)
            .field("agent_token", &"<redacted>")
            .field("command", &self.command)
            .field("task", &self.task)
            .field("workdir", &self.workdir)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("log_max_bytes", &self.log_max_bytes)
            .field("window_max_bytes", &self.window_max_bytes)
            .field("window_max_chunks", &self.window_max_chunks)
            .field("drain_timeout", &self.drain_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

/// Runs the agent to the end and returns the vm-agent's exit code: [`EXIT_DELIVERED`],
/// [`EXIT_DRAIN_TIMEOUT`] or [`EXIT_REFUSED`].
pub async fn run(opts: RunOptions) -> Result<i32, Error> {
    run_until(opts, std::future::pending()).await
}

/// Like [`run`], and when `shutdown` resolves the agent is killed (as on a `Kill` command) and
/// its output drained as usual.
pub async fn run_until(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<i32, Error> {
    let span = tracing::info_span!("vm_agent", agent_id = %opts.agent_id);
    if let Some(traceparent) = &opts.traceparent {
        covibe_telemetry::set_parent_from_traceparent(&span, traceparent);
    }
    run_inner(opts, shutdown, &mut None).instrument(span).await
}

/// What [`run_reporting`] reports once the agent command started (its pid) or could not start.
pub type Started = Result<i32, String>;

/// Like [`run_until`], and tells `started` as soon as the agent command started or failed to
/// (`vm-agent daemon` answers its spawn command then).
pub async fn run_reporting(
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
    started: tokio::sync::oneshot::Sender<Started>,
) -> Result<i32, Error> {
    let span = tracing::info_span!("vm_agent", agent_id = %opts.agent_id);
    if let Some(traceparent) = &opts.traceparent {
        covibe_telemetry::set_parent_from_traceparent(&span, traceparent);
    }
    let mut started = Some(started);
    let result = run_inner(opts, shutdown, &mut started)
        .instrument(span)
        .await;
    if let (Some(tx), Err(err)) = (started.take(), &result) {
        let _ = tx.send(Err(err.to_string()));
    }
    result
}

async fn run_inner(
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
    started: &mut Option<tokio::sync::oneshot::Sender<Started>>,
) -> Result<i32, Error> {
    validate_agent_id(&opts.agent_id)?;
    let limits = limits(&opts)?;
    let command = parse_command(&opts.command, &opts.task)?;
    let argv = command.argv;
    let channel = covibe_bootstrap::channel(&opts.link_url)?;
    let spool = SpoolDir::new(&opts.spool_dir, &opts.agent_id);
    let writer = spool.create(segment_bytes(opts.spool_max_bytes)).await?;
    let log = AgentLog::open(&opts.spool_dir, &opts.agent_id, opts.log_max_bytes).await?;
    let outbox = Outbox::new(limits);
    let (commands_tx, mut commands_rx) = mpsc::channel(64);
    let permissions = Permissions::new();
    let task = if command.control {
        Task::Conversation(&opts.task, permissions.clone())
    } else {
        Task::InCommand
    };

    let agent = child::spawn(
        &argv,
        opts.workdir.as_deref(),
        task,
        outbox.clone(),
        writer,
        log,
    );
    if let Some(tx) = started.take() {
        let _ = tx.send(match &agent {
            Ok(agent) => Ok(agent.pid()),
            Err(err) => Err(format!("starting {} failed: {err}", argv[0])),
        });
    }
    if agent.is_ok() {
        outbox.set_status(AgentStatus::Running);
    }
    let config = LinkConfig {
        agent_id: opts.agent_id.clone(),
        agent_token: opts.agent_token.clone(),
        heartbeat_interval: opts.heartbeat_interval,
        spool: spool.clone(),
        permissions: permissions.clone(),
    };
    let mut link = tokio::spawn(
        link::run(config, channel, outbox.clone(), commands_tx.clone()).in_current_span(),
    );
    let mut link_end = None;

    let (final_status, agent) = match agent {
        Err(err) => {
            tracing::error!(program = argv[0], error = %err, "starting the agent failed");
            (
                child::failed(format!("starting {} failed: {err}", argv[0])),
                None,
            )
        }
        Ok(mut agent) => {
            tracing::info!(pid = agent.pid(), command = ?argv, "agent started");
            let exit = {
                let supervise = agent.supervise(&mut commands_rx);
                let mut supervise = std::pin::pin!(supervise);
                let mut shutdown = std::pin::pin!(shutdown);
                let mut shutdown_seen = false;
                loop {
                    tokio::select! {
                        exit = &mut supervise => break exit,
                        () = &mut shutdown, if !shutdown_seen => {
                            shutdown_seen = true;
                            tracing::info!("shutdown requested, killing the agent");
                            kill(&commands_tx);
                        }
                        end = &mut link, if link_end.is_none() => {
                            let end = end?;
                            if end == LinkEnd::Refused {
                                outbox.abandon();
                                kill(&commands_tx);
                            }
                            link_end = Some(end);
                        }
                    }
                }
            };
            (exit.status_change(), Some(agent))
        }
    };
    if link_end == Some(LinkEnd::Refused) {
        spool.remove().await;
        return Ok(EXIT_REFUSED);
    }

    let drained = tokio::time::timeout(opts.drain_timeout, async {
        if let Some(agent) = agent {
            agent.collect_output(&outbox).await;
        }
        // Nobody is left to act on an answer.
        permissions.clear();
        outbox.finish(final_status);
        match link_end {
            Some(end) => Ok(end),
            None => (&mut link).await,
        }
    })
    .await;
    match drained {
        Ok(Ok(LinkEnd::Delivered)) => {
            spool.remove().await;
            Ok(EXIT_DELIVERED)
        }
        Ok(Ok(LinkEnd::Refused)) => {
            spool.remove().await;
            Ok(EXIT_REFUSED)
        }
        Ok(Err(err)) => Err(err.into()),
        Err(_) => {
            link.abort();
            let progress = outbox.progress();
            tracing::error!(
                drain_timeout_secs = opts.drain_timeout.as_secs(),
                produced = progress.produced,
                acked = progress.acked,
                unacked = progress.produced - progress.acked,
                held_bytes = progress.held_bytes,
                spool_bytes = progress.spool_bytes,
                spool = %spool.path().display(),
                status_stored = progress.status_stored,
                "orchestrator did not store all output in time, giving up"
            );
            Ok(EXIT_DRAIN_TIMEOUT)
        }
    }
}

/// Asks the supervisor to kill the agent with the default grace.
fn kill(commands: &mpsc::Sender<Command>) {
    let command = Command {
        command: Some(command::Command::Kill(Kill { grace_ms: 0 })),
    };
    if let Err(err) = commands.try_send(command) {
        tracing::warn!(error = %err, "could not ask for the agent to be killed");
    }
}

/// Smallest `spool_max_bytes`: room for a few segments of the smallest size.
const MIN_SPOOL_BYTES: u64 = 1 << 20;

fn limits(opts: &RunOptions) -> Result<Limits, Error> {
    if opts.spool_max_bytes < MIN_SPOOL_BYTES {
        return Err(Error::Options("the spool limit must be at least 1 MiB"));
    }
    if opts.window_max_bytes == 0 || opts.window_max_chunks == 0 {
        return Err(Error::Options(
            "the memory window must hold at least one chunk",
        ));
    }
    Ok(Limits {
        max_chunks: opts.window_max_chunks,
        max_bytes: opts.window_max_bytes,
        max_spool_bytes: opts.spool_max_bytes,
    })
}

/// Spool segments are an eighth of the spool limit, so that with everything acknowledged but the
/// segment being written the spool is well under its limit; between 128 KiB and 64 MiB.
fn segment_bytes(spool_max_bytes: u64) -> u64 {
    (spool_max_bytes / 8).clamp(128 << 10, 64 << 20)
}

/// The agent id names the log file, so it must be a plain file name.
fn validate_agent_id(id: &str) -> Result<(), Error> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 128 || id.starts_with('.') || !id.chars().all(plain) {
        return Err(Error::AgentId(id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_plain_file_names() {
        for id in [
            "a",
            "agent-01HZ.x_y",
            "0198c2a4-7b1e-7cc0-9d5e-3f2a1b4c5d6e",
        ] {
            assert!(validate_agent_id(id).is_ok(), "{id}");
        }
        for id in ["", ".", "..", "../x", "a/b", "a b", ".hidden"] {
            assert!(
                matches!(validate_agent_id(id), Err(Error::AgentId(_))),
                "{id}"
            );
        }
        let debug = format!(
            "{:?}",
            RunOptions::new("http://x", "a", "s3cret-token", "c {task}", "t")
        );
        assert!(!debug.contains("s3cret-token"));

        let mut opts = RunOptions::new("http://x", "a", "t", "c {task}", "t");
        assert_eq!(limits(&opts).map(|l| l.max_spool_bytes).ok(), Some(1 << 30));
        assert_eq!(segment_bytes(opts.spool_max_bytes), 64 << 20);
        assert_eq!(segment_bytes(16 << 20), 2 << 20);
        assert_eq!(segment_bytes(MIN_SPOOL_BYTES), 128 << 10);
        opts.spool_max_bytes = MIN_SPOOL_BYTES - 1;
        assert!(matches!(limits(&opts), Err(Error::Options(_))));
        opts.spool_max_bytes = MIN_SPOOL_BYTES;
        opts.window_max_chunks = 0;
        assert!(matches!(limits(&opts), Err(Error::Options(_))));
    }
}
