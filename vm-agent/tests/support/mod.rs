//! An in-test orchestrator side of `AgentLink`: stores output de-duplicated, records every
//! connection, and misbehaves on request (drops the stream, acks slowly or never, refuses, sends
//! commands).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use covibe_proto::common::v1::AgentStatus;
use covibe_proto::tonic::{self, Request, Response, Status, Streaming};
use covibe_proto::vmagent::v1::agent_link_server::{AgentLink, AgentLinkServer};
use covibe_proto::vmagent::v1::{
    Ack, AgentFrame, Command, Hello, Kill, LinkError, Output, PermissionAnswer, PermissionRequest,
    ServerFrame, StatusChange, Welcome, agent_frame, command, server_frame,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

pub const FAKE_CLAUDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fake-claude");

/// The command template running the fake agent.
pub fn fake_claude() -> String {
    format!("{FAKE_CLAUDE} -p {{task}} --output-format stream-json --verbose")
}

/// The command template running the fake agent as Claude Code runs for tool approval: the task
/// goes on stdin, so the template does not name it.
pub fn fake_claude_control() -> String {
    format!(
        "{FAKE_CLAUDE} -p --input-format stream-json --output-format stream-json --verbose \
         --permission-prompt-tool stdio"
    )
}

/// How the test orchestrator answers tool requests.
pub type Decide = fn(&PermissionRequest) -> PermissionAnswer;

#[derive(Debug, Default, Clone)]
pub struct Behaviour {
    /// On the first connection, once this many chunks are stored: ack only the first `.1`,
    /// forget the rest (as if never stored) and end the stream.
    pub drop_first: Option<(usize, u64)>,
    /// Commands in the first `Welcome`.
    pub pending: Vec<Command>,
    /// Send `Kill { grace_ms }` once the first chunk is stored.
    pub kill_after_first_output: Option<u32>,
    pub never_ack: bool,
    /// For the given time after each connection starts, ack only at this interval.
    pub slow_acks: Option<(Duration, Duration)>,
    /// Keep only the sequence number, stream and hash of each chunk, not its data.
    pub digest_only: bool,
    /// Answer every `Hello` with this `LinkError` code.
    pub refuse: Option<&'static str>,
    /// Answer each tool request so.
    pub decide: Option<Decide>,
    /// On the first connection, hang up on the first tool request instead of answering it.
    pub hang_up_on_first_request: bool,
    /// Send every answer twice.
    pub answer_twice: bool,
}

#[derive(Debug, Default)]
pub struct Connection {
    pub hello: Hello,
    /// Every output `seq` received on this connection, in arrival order.
    pub seqs: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Record {
    /// De-duplicated output: `stored[i].seq == i` (with empty data when `digest_only`).
    pub stored: Vec<Output>,
    /// Bytes of data in `stored`.
    pub stored_bytes: u64,
    /// A hash of every chunk ever received, by `seq`, even when later forgotten.
    pub hashes: Vec<u64>,
    /// Chunks received again with other contents than the first time.
    pub resend_mismatches: Vec<u64>,
    /// The step numbers of the fake agent's "Working on the task" lines, in stored order.
    pub steps: Vec<u64>,
    /// Sequence numbers that arrived beyond the stored count (gaps).
    pub gaps: Vec<u64>,
    pub statuses: Vec<StatusChange>,
    pub status_stored: bool,
    pub connections: Vec<Connection>,
    /// Every tool request received, with the index of its connection.
    pub requests: Vec<(usize, PermissionRequest)>,
}

impl Record {
    pub fn final_status(&self) -> Option<&StatusChange> {
        self.statuses.last().filter(|s| is_final(s.status))
    }

    pub fn lines(&self) -> Vec<String> {
        self.stored
            .iter()
            .map(|o| String::from_utf8_lossy(&o.data).into_owned())
            .collect()
    }
}

fn is_final(status: i32) -> bool {
    [
        AgentStatus::Completed,
        AgentStatus::Failed,
        AgentStatus::Killed,
    ]
    .map(i32::from)
    .contains(&status)
}

#[derive(Clone)]
struct Link {
    behaviour: Arc<Behaviour>,
    record: Arc<Mutex<Record>>,
}

type Reply = mpsc::Sender<Result<ServerFrame, Status>>;

#[tonic::async_trait]
impl AgentLink for Link {
    type AttachStream = ReceiverStream<Result<ServerFrame, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(self.clone().serve(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn send(tx: &Reply, frame: server_frame::Frame) {
    let _ = tx.send(Ok(ServerFrame { frame: Some(frame) })).await;
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn serve(self, mut inbound: Streaming<AgentFrame>, tx: Reply) {
        let Ok(Some(AgentFrame {
            frame: Some(agent_frame::Frame::Hello(hello)),
        })) = inbound.message().await
        else {
            return;
        };
        if let Some(code) = self.behaviour.refuse {
            let error = LinkError {
                code: code.into(),
                message: "no such agent token".into(),
            };
            return send(&tx, server_frame::Frame::Error(error)).await;
        }
        let (first, resume_from_seq) = {
            let mut record = self.lock();
            record.connections.push(Connection {
                hello,
                seqs: Vec::new(),
            });
            (record.connections.len() == 1, record.stored.len() as u64)
        };
        let pending = if first {
            self.behaviour.pending.clone()
        } else {
            Vec::new()
        };
        send(
            &tx,
            server_frame::Frame::Welcome(Welcome {
                resume_from_seq,
                pending,
            }),
        )
        .await;
        let drop_at = self.behaviour.drop_first.filter(|_| first);
        let slow_until = self
            .behaviour
            .slow_acks
            .map(|(_, slow_for)| Instant::now() + slow_for);
        let tick = self
            .behaviour
            .slow_acks
            .map_or(Duration::from_secs(3600), |(every, _)| every);
        let mut ticks = tokio::time::interval_at(Instant::now() + tick, tick);
        let mut unacked = false;
        loop {
            let ack = tokio::select! {
                message = inbound.message() => {
                    let Ok(Some(frame)) = message else { return };
                    let Some(ack) = self.on_frame(frame, drop_at, &tx).await else { return };
                    unacked |= ack;
                    ack && slow_until.is_none_or(|until| Instant::now() >= until)
                }
                _ = ticks.tick(), if slow_until.is_some() => unacked,
            };
            if ack && !self.behaviour.never_ack {
                let ack = {
                    let record = self.lock();
                    Ack {
                        next_seq: record.stored.len() as u64,
                        status_stored: record.status_stored,
                    }
                };
                unacked = false;
                send(&tx, server_frame::Frame::Ack(ack)).await;
            }
        }
    }

    /// Stores one frame; returns whether to ack, or `None` to hang up.
    async fn on_frame(
        &self,
        frame: AgentFrame,
        drop_at: Option<(usize, u64)>,
        tx: &Reply,
    ) -> Option<bool> {
        match frame.frame {
            Some(agent_frame::Frame::Output(output)) => {
                let stored = self.store(output);
                if let Some((after, acked)) = drop_at
                    && stored >= after
                {
                    {
                        let mut record = self.lock();
                        record.stored.truncate(acked as usize);
                        record.stored_bytes =
                            record.stored.iter().map(|o| o.data.len() as u64).sum();
                        record.steps = record.stored.iter().filter_map(|o| step(&o.data)).collect();
                    }
                    let ack = Ack {
                        next_seq: acked,
                        status_stored: false,
                    };
                    send(tx, server_frame::Frame::Ack(ack)).await;
                    return None;
                }
                if let Some(grace_ms) = self.behaviour.kill_after_first_output
                    && stored == 1
                {
                    let kill = Command {
                        command: Some(command::Command::Kill(Kill { grace_ms })),
                    };
                    send(tx, server_frame::Frame::Command(kill)).await;
                }
                Some(drop_at.is_none())
            }
            Some(agent_frame::Frame::Status(status)) => {
                let mut record = self.lock();
                if is_final(status.status) && status.final_seq == record.stored.len() as u64 {
                    record.status_stored = true;
                }
                record.statuses.push(status);
                Some(true)
            }
            Some(agent_frame::Frame::Permission(request)) => {
                let connection = {
                    let mut record = self.lock();
                    let connection = record.connections.len() - 1;
                    record.requests.push((connection, request.clone()));
                    connection
                };
                if connection == 0 && self.behaviour.hang_up_on_first_request {
                    return None;
                }
                if let Some(decide) = self.behaviour.decide {
                    let answer = Command {
                        command: Some(command::Command::PermissionAnswer(decide(&request))),
                    };
                    let times = if self.behaviour.answer_twice { 2 } else { 1 };
                    for _ in 0..times {
                        send(tx, server_frame::Frame::Command(answer.clone())).await;
                    }
                }
                Some(false)
            }
            _ => Some(false),
        }
    }

    /// Stores a chunk if it is the next one; returns the stored count.
    fn store(&self, mut output: Output) -> usize {
        let mut hasher = DefaultHasher::new();
        (output.stream, &output.data[..]).hash(&mut hasher);
        let hash = hasher.finish();
        let mut record = self.lock();
        if let Some(connection) = record.connections.last_mut() {
            connection.seqs.push(output.seq);
        }
        match record.hashes.get(output.seq as usize) {
            Some(&first) if first != hash => record.resend_mismatches.push(output.seq),
            Some(_) => {}
            None if output.seq == record.hashes.len() as u64 => record.hashes.push(hash),
            None => {}
        }
        let count = record.stored.len() as u64;
        if output.seq == count {
            record.stored_bytes += output.data.len() as u64;
            if let Some(step) = step(&output.data) {
                record.steps.push(step);
            }
            if self.behaviour.digest_only {
                output.data = Default::default();
            }
            record.stored.push(output);
        } else if output.seq > count {
            record.gaps.push(output.seq);
        }
        record.stored.len()
    }
}

/// The step number in a fake agent's "Working on the task, step N of M." line.
fn step(data: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"Working on the task, step ";
    let at = data.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A running test orchestrator on `127.0.0.1:0`.
pub struct TestLink {
    pub url: String,
    record: Arc<Mutex<Record>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestLink {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test link");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let record = Arc::new(Mutex::new(Record::default()));
        let link = Link {
            behaviour: Arc::new(behaviour),
            record: record.clone(),
        };
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(AgentLinkServer::new(link))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            served.expect("test link server");
        });
        Self {
            url,
            record,
            server,
        }
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for TestLink {
    fn drop(&mut self) {
        self.server.abort();
    }
}
