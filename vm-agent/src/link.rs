//! The `AgentLink.Attach` stream: hello/welcome, output and status out, acks and commands in,
//! redialled with jittered exponential backoff until everything is delivered or the orchestrator
//! refuses the agent for good. Chunks no longer in the outbox's memory window are read back from
//! the spool; acknowledged spool segments are deleted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::tonic;
use covibe_proto::vmagent::v1::agent_link_client::AgentLinkClient;
use covibe_proto::vmagent::v1::{
    AgentFrame, Command, Heartbeat, Hello, LinkError, ServerFrame, agent_frame, server_frame,
};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::permissions::{Pending, Permissions};
use crate::queue::{Cursor, Next, Outbox, Queue};
use crate::spool::{SpoolDir, SpoolReader};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long frames are still read after the orchestrator stopped reading ours.
const LINGER_AFTER_SEND_CLOSED: Duration = Duration::from_secs(2);
/// `LinkError` codes after which retrying cannot help.
const FATAL_CODES: &[&str] = &["unauthenticated", "permission_denied", "not_found"];

#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub(crate) agent_id: String,
    pub(crate) agent_token: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) spool: SpoolDir,
    /// Tool requests waiting for an answer, sent on every session.
    pub(crate) permissions: Permissions,
}

/// Why the link stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEnd {
    /// Every chunk and the final status are stored.
    Delivered,
    /// The orchestrator refused the agent; retrying cannot help.
    Refused,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("orchestrator refused the agent: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("orchestrator error {code}: {message}")]
    Remote { code: String, message: String },
    #[error("rpc failed: {:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("stream closed by the orchestrator")]
    Closed,
    #[error("outgoing stream closed")]
    SendClosed,
    #[error("no welcome within {WELCOME_TIMEOUT:?}")]
    WelcomeTimeout,
    #[error("expected a welcome frame")]
    NoWelcome,
    #[error("reading the spool failed: {0}")]
    Spool(std::io::Error),
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound => Self::Refused {
                code: format!("{:?}", status.code()),
                message: status.message().to_owned(),
            },
            _ => Self::Status(status),
        }
    }
}

impl From<LinkError> for SessionError {
    fn from(error: LinkError) -> Self {
        let LinkError { code, message } = error;
        if FATAL_CODES.contains(&code.as_str()) {
            Self::Refused { code, message }
        } else {
            Self::Remote { code, message }
        }
    }
}

/// Keeps the link up until everything is delivered or the agent is refused.
pub(crate) async fn run(
    config: LinkConfig,
    channel: covibe_bootstrap::Client,
    outbox: Outbox,
    commands: mpsc::Sender<Command>,
) -> LinkEnd {
    let mut backoff = Backoff::default();
    let mut spool = config.spool.reader();
    loop {
        let client = AgentLinkClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let session = session(
            client,
            &config,
            &outbox,
            &commands,
            &mut backoff,
            &mut spool,
        );
        match session.await {
            Ok(()) => {
                tracing::info!("orchestrator stored all output and the final status");
                return LinkEnd::Delivered;
            }
            Err(SessionError::Refused { code, message }) => {
                tracing::error!(code, message, "orchestrator refused the agent, giving up");
                return LinkEnd::Refused;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, delay_ms = delay.as_millis(), "link lost, reconnecting");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One `Attach` stream; `Ok` once everything is delivered.
async fn session(
    mut client: AgentLinkClient<covibe_bootstrap::Client>,
    config: &LinkConfig,
    outbox: &Outbox,
    commands: &mpsc::Sender<Command>,
    backoff: &mut Backoff,
    spool: &mut SpoolReader,
) -> Result<(), SessionError> {
    let (tx, rx) = mpsc::channel(32);
    let hello = Hello {
        agent_id: config.agent_id.clone(),
        agent_token: config.agent_token.clone(),
        acked_seq: outbox.acked(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        traceparent: covibe_telemetry::current_traceparent(),
    };
    tx.send(frame(agent_frame::Frame::Hello(hello)))
        .await
        .map_err(|_| SessionError::SendClosed)?;
    let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Err(_) => return Err(SessionError::WelcomeTimeout),
        Ok(message) => match message?.and_then(|frame| frame.frame) {
            Some(server_frame::Frame::Welcome(welcome)) => welcome,
            Some(server_frame::Frame::Error(error)) => return Err(error.into()),
            Some(_) => return Err(SessionError::NoWelcome),
            None => return Err(SessionError::Closed),
        },
    };
    backoff.reset();
    let (cursor, discard) = outbox.resume(welcome.resume_from_seq);
    config.spool.discard(&discard).await;
    tracing::info!(
        resume_from_seq = welcome.resume_from_seq,
        acked = outbox.acked(),
        pending = welcome.pending.len(),
        "attached to the orchestrator"
    );
    for command in welcome.pending {
        forward(commands, command).await;
    }
    tokio::select! {
        result = receive_frames(&mut inbound, outbox, commands, &config.spool) => result,
        err = send_frames(tx, outbox, cursor, config, spool) => {
            // The orchestrator stopped reading; take in the acks it still sent before redialling.
            let receive = receive_frames(&mut inbound, outbox, commands, &config.spool);
            tokio::time::timeout(LINGER_AFTER_SEND_CLOSED, receive)
                .await
                .unwrap_or(Err(err))
        }
    }
}

/// Sends until the stream closes or the spool cannot be read, the only ways it ends: output
/// and statuses in order, and every tool request still waiting for an answer.
async fn send_frames(
    tx: mpsc::Sender<AgentFrame>,
    outbox: &Outbox,
    mut cursor: Cursor,
    config: &LinkConfig,
    spool: &mut SpoolReader,
) -> SessionError {
    let mut queue = outbox.subscribe();
    let mut requests = config.permissions.subscribe();
    // Requests numbered below this one were sent on this session.
    let mut requests_sent = 0;
    let heartbeat_interval = config.heartbeat_interval;
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + heartbeat_interval, heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            _ = heartbeat.tick() => Next::Frame(frame(agent_frame::Frame::Heartbeat(Heartbeat { sent_at_ms: now_ms() }))),
            request = next_request(&mut requests, &mut requests_sent) => {
                tracing::debug!(request_id = %request.request_id, "sending a tool request");
                Next::Frame(frame(agent_frame::Frame::Permission(request)))
            }
            next = next_item(&mut queue, &mut cursor) => next,
        };
        let frame = match next {
            Next::Frame(frame) => frame,
            Next::FromSpool(seq) => match spool.read(seq).await {
                Ok(output) => {
                    cursor.sent_from_spool(seq);
                    frame(agent_frame::Frame::Output(output))
                }
                // Acknowledged meanwhile, and its segment deleted: no longer needed.
                Err(_) if seq < outbox.acked() => {
                    cursor.sent_from_spool(seq);
                    continue;
                }
                Err(err) => {
                    tracing::error!(seq, error = %err, "reading a chunk back from the spool failed");
                    return SessionError::Spool(err);
                }
            },
        };
        let sent = match &frame.frame {
            Some(agent_frame::Frame::Output(output)) => Some(output.seq),
            _ => None,
        };
        if tx.send(frame).await.is_err() {
            return SessionError::SendClosed;
        }
        if let Some(seq) = sent {
            outbox.mark_sent(seq + 1);
        }
    }
}

/// Waits for what to send next. Cancel-safe: the cursor only moves when something is returned.
async fn next_item(queue: &mut watch::Receiver<Queue>, cursor: &mut Cursor) -> Next {
    loop {
        let next = queue.borrow_and_update().next(cursor);
        if let Some(next) = next {
            return next;
        }
        if queue.changed().await.is_err() {
            // The outbox is gone: nothing more will ever be sent.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for a tool request this session has not sent. Cancel-safe like [`next_item`].
async fn next_request(
    pending: &mut watch::Receiver<Pending>,
    sent: &mut u64,
) -> covibe_proto::vmagent::v1::PermissionRequest {
    loop {
        let next = pending.borrow_and_update().next(sent);
        if let Some(next) = next {
            return next;
        }
        if pending.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn receive_frames(
    inbound: &mut tonic::Streaming<ServerFrame>,
    outbox: &Outbox,
    commands: &mpsc::Sender<Command>,
    spool: &SpoolDir,
) -> Result<(), SessionError> {
    loop {
        let Some(message) = inbound.message().await? else {
            return Err(SessionError::Closed);
        };
        match message.frame {
            Some(server_frame::Frame::Ack(ack)) => {
                tracing::trace!(
                    next_seq = ack.next_seq,
                    status_stored = ack.status_stored,
                    "ack"
                );
                let acked = outbox.ack(ack.next_seq, ack.status_stored);
                spool.discard(&acked.discard).await;
                if acked.delivered {
                    return Ok(());
                }
            }
            Some(server_frame::Frame::Command(command)) => forward(commands, command).await,
            Some(server_frame::Frame::Heartbeat(_)) => tracing::trace!("orchestrator heartbeat"),
            Some(server_frame::Frame::Error(error)) => match SessionError::from(error) {
                refused @ SessionError::Refused { .. } => return Err(refused),
                other => tracing::warn!(error = %other, "orchestrator reported a link error"),
            },
            Some(server_frame::Frame::Welcome(_)) => tracing::warn!("unexpected welcome ignored"),
            None => tracing::debug!("empty server frame ignored"),
        }
    }
}

async fn forward(commands: &mpsc::Sender<Command>, command: Command) {
    tracing::debug!(?command, "orchestrator command");
    if commands.send(command).await.is_err() {
        tracing::debug!("agent already exited, command ignored");
    }
}

fn frame(frame: agent_frame::Frame) -> AgentFrame {
    AgentFrame { frame: Some(frame) }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Exponential backoff from 100 ms doubling to 5 s, each delay jittered by ±50 %.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let bases = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
        for base in bases {
            let delay = backoff.next_delay().as_millis();
            assert!(
                (base / 2..=base * 3 / 2).contains(&delay),
                "{delay} ms for base {base} ms"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_START.mul_f64(1.5));
    }

    #[test]
    fn only_hopeless_errors_are_fatal() {
        let error = |code: &str| {
            SessionError::from(LinkError {
                code: code.into(),
                message: String::new(),
            })
        };
        assert!(matches!(
            error("unauthenticated"),
            SessionError::Refused { .. }
        ));
        assert!(matches!(error("not_found"), SessionError::Refused { .. }));
        assert!(matches!(error("unavailable"), SessionError::Remote { .. }));
        assert!(matches!(
            SessionError::from(tonic::Status::permission_denied("no")),
            SessionError::Refused { .. }
        ));
        assert!(matches!(
            SessionError::from(tonic::Status::unavailable("down")),
            SessionError::Status(_)
        ));
    }
}
