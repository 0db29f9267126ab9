//! `vm-agent daemon`: for a VM the vm-connector cannot reach (the `dial_in` strategy). It dials
//! the vm-connector's `Dial` stream with the VM's token, heartbeats, and runs each `Spawn` it
//! receives exactly as `vm-agent run` would, in its own task, answering `SpawnResult` once the
//! agent command started (or failed to), and each `Job` (a preview deploy), answering its
//! `JobResult`. The stream is redialled with jittered backoff whenever
//! it breaks; agents already running carry on over their own `AgentLink` streams.

use std::path::PathBuf;
use std::time::Duration;

use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::tonic;
use covibe_proto::vmconnector::v1::connector_frame::Frame as In;
use covibe_proto::vmconnector::v1::daemon_frame::Frame as Out;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_proto::vmconnector::v1::{
    ConnectorFrame, DaemonFrame, DaemonHeartbeat, DaemonHello, Job, JobResult, Spawn, SpawnResult,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::link::Backoff;
use crate::{EXIT_DELIVERED, EXIT_REFUSED, Error, RunOptions, run_reporting};

const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon needs; each spawn runs with `template`, its link url, agent id, agent token,
/// task and trace context replaced by the spawn's.
#[derive(Clone)]
pub struct DaemonOptions {
    /// The vm-connector's endpoint, e.g. `http://vm-connector:50054`.
    pub connector_url: String,
    pub vm_id: String,
    pub vm_token: String,
    pub heartbeat_interval: Duration,
    pub template: RunOptions,
}

impl DaemonOptions {
    pub fn new(
        connector_url: impl Into<String>,
        vm_id: impl Into<String>,
        vm_token: impl Into<String>,
        command: impl Into<String>,
        workdir: Option<PathBuf>,
        spool_dir: PathBuf,
    ) -> Self {
        let mut template = RunOptions::new("", "", "", command, "");
        template.workdir = workdir;
        template.spool_dir = spool_dir;
        Self {
            connector_url: connector_url.into(),
            vm_id: vm_id.into(),
            vm_token: vm_token.into(),
            heartbeat_interval: Duration::from_secs(10),
            template,
        }
    }
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("connector_url", &self.connector_url)
            .field("vm_id", &self.vm_id)
            .field("vm_token", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("template", &self.template)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("the vm-connector refused this VM: {0}")]
    Refused(String),
    #[error("rpc failed: {:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("the vm-connector said {code}: {message}")]
    Remote { code: String, message: String },
    #[error("stream closed")]
    Closed,
    #[error("no welcome within {WELCOME_TIMEOUT:?}")]
    NoWelcome,
    #[error("the vm-connector went quiet")]
    Silent,
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Self::Refused(status.message().to_owned())
            }
            _ => Self::Status(status),
        }
    }
}

/// Dials in until `shutdown` resolves (then asks the running agents to stop and waits for their
/// output to drain) or the vm-connector refuses the VM's token ([`EXIT_REFUSED`]).
pub async fn daemon(opts: DaemonOptions, shutdown: impl Future<Output = ()>) -> Result<i32, Error> {
    let channel = covibe_bootstrap::channel(&opts.connector_url)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut runs = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut shutdown = std::pin::pin!(shutdown);
    let code = loop {
        let session = session(&opts, channel.clone(), &mut backoff, &mut runs, &stop_rx);
        let delay = tokio::select! {
            () = &mut shutdown => break EXIT_DELIVERED,
            end = session => match end {
                SessionError::Refused(message) => {
                    tracing::error!(message, "the vm-connector refused this VM's token, giving up");
                    break EXIT_REFUSED;
                }
                err => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %err, delay_ms = delay.as_millis(), "dial-in stream lost, reconnecting");
                    delay
                }
            },
        };
        tokio::select! {
            () = &mut shutdown => break EXIT_DELIVERED,
            () = tokio::time::sleep(delay) => {}
        }
    };
    let _ = stop_tx.send(true);
    if !runs.is_empty() {
        tracing::info!(
            running = runs.len(),
            "stopping the running agents and draining their output"
        );
    }
    while runs.join_next().await.is_some() {}
    Ok(code)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

fn frame(frame: Out) -> DaemonFrame {
    DaemonFrame { frame: Some(frame) }
}

fn heartbeat() -> DaemonFrame {
    let sent_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    frame(Out::Heartbeat(DaemonHeartbeat { sent_at_ms }))
}

/// One `Dial` stream, until it breaks.
async fn session(
    opts: &DaemonOptions,
    channel: covibe_bootstrap::Client,
    backoff: &mut Backoff,
    runs: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> SessionError {
    let (tx, rx) = mpsc::channel(32);
    let hello = DaemonHello {
        vm_id: opts.vm_id.clone(),
        vm_token: opts.vm_token.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: hostname(),
    };
    if tx.send(frame(Out::Hello(hello))).await.is_err() {
        return SessionError::Closed;
    }
    let mut client = VmConnectorServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut inbound = match client.dial(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status.into(),
    };
    match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(ConnectorFrame {
            frame: Some(In::Welcome(_)),
        }))) => {}
        Ok(Ok(Some(ConnectorFrame {
            frame: Some(In::Error(e)),
        }))) => {
            return SessionError::Remote {
                code: e.code,
                message: e.message,
            };
        }
        Ok(Err(status)) => return status.into(),
        Ok(Ok(None)) => return SessionError::Closed,
        _ => return SessionError::NoWelcome,
    }
    backoff.reset();
    tracing::info!(vm_id = opts.vm_id, "dialled in, waiting for spawns");

    let mut ticks = tokio::time::interval(opts.heartbeat_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                while runs.try_join_next().is_some() {}
                if last_heard.elapsed() > opts.heartbeat_interval * 3 {
                    return SessionError::Silent;
                }
                if tx.send(heartbeat()).await.is_err() {
                    return SessionError::Closed;
                }
            }
            message = inbound.message() => {
                last_heard = Instant::now();
                match message {
                    Err(status) => return status.into(),
                    Ok(None) => return SessionError::Closed,
                    Ok(Some(ConnectorFrame { frame })) => match frame {
                        Some(In::Spawn(spawn)) => start(spawn, &opts.template, tx.clone(), runs, stop),
                        Some(In::Job(job)) => run_job(job, &opts.template, tx.clone(), runs),
                        Some(In::Error(e)) => {
                            return SessionError::Remote { code: e.code, message: e.message };
                        }
                        Some(In::Heartbeat(_) | In::Welcome(_)) | None => {}
                    },
                }
            }
        }
    }
}

/// Runs one job (a preview deploy) in its own task, in the daemon's working directory (else the
/// home directory), then checks the app's port on this VM when asked, and answers its result.
fn run_job(
    job: Job,
    template: &RunOptions,
    results: mpsc::Sender<DaemonFrame>,
    runs: &mut JoinSet<()>,
) {
    let dir = template
        .workdir
        .clone()
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    tracing::info!(job_id = job.job_id, "job received");
    runs.spawn(async move {
        let timeout = Duration::from_secs(match job.timeout_secs {
            0 => 600,
            secs => u64::from(secs),
        });
        let outcome = match crate::job::run_script(&job.script, &dir, timeout).await {
            Ok(outcome) => outcome,
            Err(err) => crate::job::JobOutcome {
                exit_code: -1,
                output_tail: format!("the job could not start: {err}"),
            },
        };
        let healthy = match (&job.health, outcome.exit_code) {
            (Some(check), 0) => {
                let port = u16::try_from(check.port).unwrap_or(0);
                let within = Duration::from_secs(match check.timeout_secs {
                    0 => 30,
                    secs => u64::from(secs),
                });
                port != 0 && crate::job::http_healthy("127.0.0.1", port, &check.path, within).await
            }
            _ => false,
        };
        tracing::info!(
            job_id = job.job_id,
            exit_code = outcome.exit_code,
            healthy,
            "job ended"
        );
        let result = JobResult {
            job_id: job.job_id.clone(),
            exit_code: outcome.exit_code,
            output_tail: outcome.output_tail,
            healthy,
        };
        if results.send(frame(Out::JobResult(result))).await.is_err() {
            tracing::warn!(
                job_id = job.job_id,
                "the dial-in stream broke before the job was answered"
            );
        }
    });
}

/// Runs one spawned agent in its own task and answers the spawn once it started.
fn start(
    spawn: Spawn,
    template: &RunOptions,
    results: mpsc::Sender<DaemonFrame>,
    runs: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) {
    let mut opts = template.clone();
    opts.link_url = spawn.link_url;
    opts.agent_id = spawn.agent_id.clone();
    opts.agent_token = spawn.agent_token;
    opts.task = spawn.task;
    opts.traceparent = Some(spawn.traceparent).filter(|t| !t.is_empty());
    let agent_id = spawn.agent_id;
    let mut stop = stop.clone();
    tracing::info!(agent_id, "spawn received");
    runs.spawn(async move {
        let shutdown = async move {
            if stop.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let (started_tx, started_rx) = oneshot::channel();
        let run = tokio::spawn(run_reporting(opts, shutdown, started_tx));
        let started = started_rx
            .await
            .unwrap_or_else(|_| Err("the vm-agent ended before starting the agent".to_owned()));
        let result = match &started {
            Ok(pid) => SpawnResult {
                agent_id: agent_id.clone(),
                ok: true,
                message: format!("started, pid {pid}"),
            },
            Err(message) => SpawnResult {
                agent_id: agent_id.clone(),
                ok: false,
                message: message.clone(),
            },
        };
        if results.send(frame(Out::SpawnResult(result))).await.is_err() {
            tracing::warn!(
                agent_id,
                "the dial-in stream broke before the spawn was answered"
            );
        }
        match run.await {
            Ok(Ok(code)) => tracing::info!(agent_id, code, "agent run ended"),
            Ok(Err(err)) => tracing::warn!(agent_id, error = %err, "agent run failed"),
            Err(err) => tracing::warn!(agent_id, error = %err, "agent run task failed"),
        }
    });
}
