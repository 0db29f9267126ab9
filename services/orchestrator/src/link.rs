//! `covibe.vmagent.v1.AgentLink`: one bidirectional stream per running agent. The vm-agent says
//! hello with its agent token and what it has seen acknowledged; we answer where to resume,
//! store each batch of output durably, and only then acknowledge it. At most a bounded number of
//! lines and bytes per link are not yet durable: past that no more frames are read, so a slow database
//! slows the vm-agent down (backpressure through HTTP/2 flow control) instead of growing memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use covibe_proto::common::v1::OutputStream;
use covibe_proto::limits::{FRAME_OVERHEAD_BYTES, MAX_MESSAGE_BYTES, MAX_OUTPUT_CHUNK_BYTES};
use covibe_proto::tonic::{self, Request, Response, Status, Streaming};
use covibe_proto::vmagent::v1::agent_frame::Frame;
use covibe_proto::vmagent::v1::agent_link_server::{AgentLink, AgentLinkServer};
use covibe_proto::vmagent::v1::server_frame::Frame as Out;
use covibe_proto::vmagent::v1::{self as pb, AgentFrame, ServerFrame};
use covibe_types::{AgentId, AgentStatus, ApiError, Code, now_ms};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::domain::{Agents, hash_token};
use crate::ingest::{Ingest, Progress};
use crate::links::Links;
use crate::model::{Agent, Source, StoredChunk};

/// Largest output chunk accepted from a vm-agent.
pub const MAX_CHUNK_BYTES: usize = MAX_OUTPUT_CHUNK_BYTES;
/// Output frames stored in one database write.
const MAX_BATCH: usize = 256;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The deny a tool request gets when it could not be decided (nor stored for its owner).
const TOOL_REQUEST_FAILED: &str = "the request could not be decided, so it was denied; try again";

pub struct LinkService {
    agents: Arc<Agents>,
    links: Arc<Links>,
    ingest: Ingest,
}

impl LinkService {
    /// The link server, listening on the control channel for commands to pass on.
    pub async fn start(agents: Arc<Agents>) -> Result<Self, crate::Error> {
        let links = Arc::new(Links::default());
        links.listen(agents.hot().subscribe_control().await?);
        let ingest = Ingest::start(agents.clone());
        Ok(Self {
            agents,
            links,
            ingest,
        })
    }

    pub fn into_server(self) -> AgentLinkServer<Self> {
        AgentLinkServer::new(self)
            .max_decoding_message_size(MAX_CHUNK_BYTES + FRAME_OVERHEAD_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The output bytes a received frame carries.
fn frame_bytes(item: &Result<AgentFrame, Status>) -> usize {
    match item {
        Ok(AgentFrame {
            frame: Some(Frame::Output(output)),
        }) => output.data.len(),
        _ => 0,
    }
}

fn frame(out: Out) -> Result<ServerFrame, Status> {
    Ok(ServerFrame { frame: Some(out) })
}

fn link_error(code: Code, message: &str) -> Result<ServerFrame, Status> {
    frame(Out::Error(pb::LinkError {
        code: code.as_str().to_owned(),
        message: message.to_owned(),
    }))
}

use covibe_identity::code::same_hash as same;

#[tonic::async_trait]
impl AgentLink for LinkService {
    type AttachStream = ReceiverStream<Result<ServerFrame, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentFrame {
                frame: Some(Frame::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => return Err(ApiError::invalid("the first frame must be hello").into()),
        };
        let refused = || {
            Status::from(ApiError::unauthenticated(
                "unknown agent or wrong agent token",
            ))
        };
        let id: AgentId = hello.agent_id.parse().map_err(|_| refused())?;
        let store = self.agents.store();
        let expected = store
            .token_hash(id)
            .await
            .map_err(|e| Status::from(ApiError::internal(e)))?;
        if !expected.is_some_and(|hash| same(&hash, &hash_token(&hello.agent_token))) {
            tracing::warn!(agent_id = %id, "vm-agent refused: bad agent token");
            return Err(refused());
        }
        let agent = store
            .get(id)
            .await
            .map_err(|e| Status::from(ApiError::internal(e)))?
            .ok_or_else(refused)?;
        let span = tracing::info_span!("agent_link", agent_id = %id, team_id = %agent.team_id);
        covibe_telemetry::set_parent_from_traceparent(&span, &hello.traceparent);
        span.in_scope(|| {
            tracing::info!(resume_from = agent.output_seq, acked = hello.acked_seq, version = %hello.agent_version, "vm-agent attached");
        });

        let (tx, rx) = mpsc::channel(64);
        let mut pending = Vec::new();
        // A kill asked for while the vm-agent was away is applied at once.
        let kill_requested = store
            .kill_requested(id)
            .await
            .map_err(|e| Status::from(ApiError::internal(e)))?;
        if !agent.status.is_final() && kill_requested {
            let kill = pb::Kill {
                grace_ms: self.agents.kill_grace_ms(),
            };
            pending.push(pb::Command {
                command: Some(pb::command::Command::Kill(kill)),
            });
        }
        let welcome = pb::Welcome {
            resume_from_seq: agent.output_seq,
            pending,
        };
        tx.send(frame(Out::Welcome(welcome)))
            .await
            .map_err(|_| Status::cancelled("link closed"))?;

        if let Err(err) = store.touch(id, now_ms()).await {
            tracing::warn!(agent_id = %id, error = %err, "could not record the attach");
        }
        self.links.attach(id, tx.clone());
        let links = self.links.clone();
        let session = Session {
            agents: self.agents.clone(),
            ingest: self.ingest.clone(),
            submitted: agent.output_seq,
            handed: VecDeque::new(),
            not_durable_bytes: 0,
            acked: agent.output_seq,
            progress: Arc::new(Progress::new(agent.output_seq)),
            ack_timer: Box::pin(tokio::time::sleep(ACK_DELAY)),
            ack_armed: false,
            agent,
            tx: tx.clone(),
        };
        tokio::spawn(
            async move {
                session.run(inbound).await;
                links.detach(id, &tx);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One link: reads the vm-agent's frames, hands output over to ingest, and acknowledges what
/// is durable, in order. One task does it all (no hand-off per frame).
struct Session {
    agents: Arc<Agents>,
    ingest: Ingest,
    /// `output_seq` is what is durable as far as this link has looked.
    agent: Agent,
    /// The seq after the last chunk handed over to ingest (maybe not yet durable).
    submitted: u64,
    /// Batches handed over and not known durable, oldest first: the seq after each, and its
    /// bytes; and their bytes in all.
    handed: VecDeque<(u64, usize)>,
    not_durable_bytes: usize,
    /// What of the output handed over is durable, kept up to date by ingest.
    progress: Arc<Progress>,
    tx: mpsc::Sender<Result<ServerFrame, Status>>,
    /// The `next_seq` last acknowledged to the vm-agent (`agent.output_seq` may be ahead: an
    /// acknowledgement waits a moment so one carries several batches).
    acked: u64,
    /// When output handed over and not yet acknowledged is looked at next, if `ack_armed`.
    ack_timer: Pin<Box<tokio::time::Sleep>>,
    ack_armed: bool,
}

/// Lines handed over and not yet durable, at most; past it the link reads no more frames until
/// some are durable (backpressure down to the vm-agent). Above what makes the storing task stop
/// lingering (`ingest::STORE`), so that one fast agent alone never waits out the linger.
const MAX_NOT_DURABLE: u64 = 512;
/// Bytes of output handed over and not yet durable, at most (the same backpressure, for long
/// lines); frames read in one go stop there too.
const MAX_NOT_DURABLE_BYTES: usize = 4 << 20;
/// How long output handed over may wait to be acknowledged, so that one acknowledgement
/// carries several batches (one write to the vm-agent instead of one per line when lines
/// trickle in)...
const ACK_DELAY: Duration = Duration::from_secs(1);
/// ...unless this many durable chunks wait: then at once (the vm-agent's spool is freed by
/// acks).
const ACK_AT_CHUNKS: u64 = 64;

impl Session {
    async fn run(mut self, mut inbound: Streaming<AgentFrame>) {
        let mut batch: Vec<StoredChunk> = Vec::with_capacity(MAX_BATCH);
        loop {
            let not_durable = self.submitted.saturating_sub(self.agent.output_seq);
            let held_back =
                not_durable >= MAX_NOT_DURABLE || self.not_durable_bytes >= MAX_NOT_DURABLE_BYTES;
            // Woken by ingest only when the link waits for it: held back, or with enough
            // durable output waiting to be acknowledged at once.
            let waits = held_back || self.submitted >= self.acked + ACK_AT_CHUNKS;
            let first = tokio::select! {
                biased;
                () = self.progress.changed(), if waits => {
                    if !self.look(false).await {
                        return;
                    }
                    continue;
                }
                () = &mut self.ack_timer, if self.ack_armed => {
                    self.ack_armed = false;
                    if !self.look(true).await {
                        return;
                    }
                    continue;
                }
                first = inbound.next(), if !held_back => first,
            };
            let Some(first) = first else { break };
            // Take whatever else has arrived already, up to a batch, and hand it over at once.
            let mut pending_bytes = frame_bytes(&first);
            let mut pending = vec![first];
            let mut ended = false;
            while pending.len() < MAX_BATCH
                && self.not_durable_bytes + pending_bytes < MAX_NOT_DURABLE_BYTES
            {
                match inbound.next().now_or_never() {
                    Some(Some(next)) => {
                        pending_bytes += frame_bytes(&next);
                        pending.push(next);
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            for item in pending {
                let frame = match item {
                    Ok(AgentFrame { frame: Some(frame) }) => frame,
                    Ok(AgentFrame { frame: None }) => {
                        let _ = self.flush(&mut batch).await;
                        return self.fail(Code::InvalidArgument, "empty frame").await;
                    }
                    Err(status) => {
                        let _ = self.flush(&mut batch).await;
                        if matches!(
                            status.code(),
                            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                        ) {
                            // A frame over the decoding limit: say why, or the sender would resend it forever.
                            return self.fail(Code::InvalidArgument, "frame too large").await;
                        }
                        tracing::info!(error = %status, "vm-agent stream ended");
                        return;
                    }
                };
                match frame {
                    Frame::Output(output) => {
                        if let Err(message) = self.accept(output, &mut batch) {
                            let _ = self.flush(&mut batch).await;
                            return self.fail(Code::InvalidArgument, message).await;
                        }
                    }
                    Frame::Status(change) => {
                        if !self.settle(&mut batch).await {
                            return;
                        }
                        if !self.status(change).await {
                            return;
                        }
                    }
                    Frame::Heartbeat(_) => {
                        if let Err(err) = self.agents.store().touch(self.agent.id, now_ms()).await {
                            tracing::warn!(error = %err, "could not record a heartbeat");
                        }
                    }
                    Frame::Permission(request) => {
                        if !self.answer_permission(request).await {
                            return;
                        }
                    }
                    Frame::Hello(_) => {
                        let _ = self.flush(&mut batch).await;
                        return self
                            .fail(Code::InvalidArgument, "hello may only be the first frame")
                            .await;
                    }
                }
            }
            if !self.flush(&mut batch).await || ended {
                break;
            }
        }
        // What was handed over is acknowledged if it becomes durable while the stream closes.
        let _ = self.handed_over_settled().await;
        tracing::info!("vm-agent detached");
    }

    /// Takes note of what is durable and acknowledges it: at once when [`ACK_AT_CHUNKS`] wait
    /// or `due` (the acknowledgement delay is over), else within [`ACK_DELAY`]. `false` when
    /// some output could not be stored (the vm-agent has been told to resend it) or the link is
    /// gone.
    async fn look(&mut self, due: bool) -> bool {
        if self.progress.failed() {
            tracing::error!("could not store output; the vm-agent will resend it");
            self.ask_for_resend().await;
            return false;
        }
        self.agent.output_seq = self.agent.output_seq.max(self.progress.durable());
        while let Some((end, bytes)) = self.handed.front().copied()
            && end <= self.agent.output_seq
        {
            self.handed.pop_front();
            self.not_durable_bytes -= bytes;
        }
        let waiting = self.agent.output_seq.saturating_sub(self.acked);
        if waiting > 0 && (due || waiting >= ACK_AT_CHUNKS) && !self.ack_all(false).await {
            return false;
        }
        self.arm_ack_timer();
        true
    }

    /// Looks again within [`ACK_DELAY`] while output handed over is not acknowledged.
    fn arm_ack_timer(&mut self) {
        if self.submitted > self.acked && !self.ack_armed {
            self.ack_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + ACK_DELAY);
            self.ack_armed = true;
        }
    }

    /// Acknowledges everything durable now (and, with `status_stored`, the status just
    /// stored); `false` when the link is gone.
    async fn ack_all(&mut self, status_stored: bool) -> bool {
        self.acked = self.agent.output_seq;
        let ack = pb::Ack {
            next_seq: self.acked,
            status_stored,
        };
        self.tx.send(frame(Out::Ack(ack))).await.is_ok()
    }

    /// Tells the vm-agent its output could not be stored: it reconnects and resends what was
    /// not acknowledged.
    async fn ask_for_resend(&self) {
        let _ = self
            .tx
            .send(link_error(
                Code::Unavailable,
                "output could not be stored, reconnect and resend",
            ))
            .await;
    }

    /// Checks one output frame and adds it to the batch if it is the next one expected.
    fn accept(
        &mut self,
        output: pb::Output,
        batch: &mut Vec<StoredChunk>,
    ) -> Result<(), &'static str> {
        if output.data.len() > MAX_CHUNK_BYTES {
            return Err("output chunk too large");
        }
        let stream = match OutputStream::try_from(output.stream) {
            Ok(OutputStream::Stdout | OutputStream::Stderr) => output.stream,
            _ => return Err("output chunk has no valid stream"),
        };
        let next = self.submitted + batch.len() as u64;
        if output.seq < next {
            return Ok(()); // already handed over: a resend after a reconnect
        }
        if self.agent.status.is_final() && self.agent.status != AgentStatus::Lost {
            return Err("the agent has ended; no more output is accepted");
        }
        if output.seq > next {
            return Err("output sequence has a gap");
        }
        batch.push(StoredChunk {
            seq: output.seq,
            stream,
            data: output.data,
            event: bytes::Bytes::new(),
        });
        Ok(())
    }

    /// Hands the batch over to ingest (it is acknowledged once durable). `false` when the link
    /// must close.
    async fn flush(&mut self, batch: &mut Vec<StoredChunk>) -> bool {
        let Some(last) = batch.last().map(|c| c.seq) else {
            return true;
        };
        let bytes: usize = batch.iter().map(|c| c.data.len()).sum();
        let source = Source {
            id: self.agent.id,
            team_id: self.agent.team_id,
            owner_id: self.agent.owner_id,
        };
        match self
            .ingest
            .write(source, std::mem::take(batch), &self.progress)
            .await
        {
            Ok(()) => {
                self.submitted = last + 1;
                self.handed.push_back((self.submitted, bytes));
                self.not_durable_bytes += bytes;
                // Arms the acknowledgement timer; a failure of an earlier batch is noticed here
                // at the latest.
                self.look(false).await
            }
            Err(err) => {
                tracing::error!(error = %err, "could not hand output over; the vm-agent will resend it");
                self.ask_for_resend().await;
                false
            }
        }
    }

    /// Hands the batch over and waits until everything handed over is durable (and
    /// acknowledged). `false` when the link must close.
    async fn settle(&mut self, batch: &mut Vec<StoredChunk>) -> bool {
        self.flush(batch).await && self.handed_over_settled().await
    }

    async fn status(&mut self, change: pb::StatusChange) -> bool {
        let Some(status) = covibe_proto::common::v1::AgentStatus::try_from(change.status)
            .ok()
            .and_then(AgentStatus::from_proto)
        else {
            self.fail(Code::InvalidArgument, "unknown agent status")
                .await;
            return false;
        };
        if status.is_final() && change.final_seq != self.agent.output_seq {
            tracing::warn!(
                final_seq = change.final_seq,
                stored = self.agent.output_seq,
                "final status before all output"
            );
            self.fail(
                Code::InvalidArgument,
                "final status sent before all output was acknowledged",
            )
            .await;
            return false;
        }
        match self
            .agents
            .transition(self.agent.id, status, change.exit_code)
            .await
        {
            Ok(updated) => {
                if let Some(updated) = updated {
                    self.agent.status = updated.status;
                }
                self.ack_all(status.is_final()).await
            }
            Err(err) => {
                tracing::error!(error = %err, "could not store a status change");
                let _ = self
                    .tx
                    .send(link_error(
                        Code::Unavailable,
                        "status could not be stored, reconnect",
                    ))
                    .await;
                false
            }
        }
    }

    /// Waits until everything handed over is durable, and acknowledges it; `false` if some of
    /// it could not be stored (the vm-agent has been told to resend) or the link is gone.
    async fn handed_over_settled(&mut self) -> bool {
        loop {
            if !self.look(false).await {
                return false;
            }
            if self.agent.output_seq >= self.submitted {
                return self.agent.output_seq <= self.acked || self.ack_all(false).await;
            }
            // A change since the look was noted by ingest: this returns at once then.
            self.progress.changed().await;
        }
    }

    /// A tool request: decided by the team's policy and answered at once, or left waiting for
    /// the agent's owner (whose answer reaches the link through the control channel). Decided
    /// aside, so that output keeps flowing while the policy is read. `false` when the link is
    /// gone.
    async fn answer_permission(&self, request: pb::PermissionRequest) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        let (agents, agent, tx) = (self.agents.clone(), self.agent.clone(), self.tx.clone());
        tokio::spawn(
            async move {
                let request_id = request.request_id.clone();
                let answer = match agents.ask_permission(&agent, request).await {
                    Ok(Some(answer)) => answer,
                    Ok(None) => return,
                    Err(err) => {
                        // Never allowed unrecorded: denied, and the agent goes on.
                        tracing::error!(request_id = %request_id, error = %err, "could not decide a tool request; denying it");
                        pb::PermissionAnswer {
                            request_id,
                            allow: false,
                            updated_input_json: String::new(),
                            message: TOOL_REQUEST_FAILED.to_owned(),
                        }
                    }
                };
                let command = pb::Command {
                    command: Some(pb::command::Command::PermissionAnswer(answer)),
                };
                let _ = tx.send(frame(Out::Command(command))).await;
            }
            .in_current_span(),
        );
        true
    }

    /// Closes the link with an error, after acknowledging whatever was handed over and is
    /// durable (so the vm-agent does not resend it).
    async fn fail(&mut self, code: Code, message: &str) {
        let _ = self.handed_over_settled().await;
        tracing::warn!(code = %code, message, "closing the vm-agent link");
        let _ = self.tx.send(link_error(code, message)).await;
    }
}
