//! The `AgentLink` server over a real tonic server on loopback: output stored durably and exactly
//! once across reconnects, refused hellos, bad frames that break only their own stream, final
//! statuses checked against what was stored, and control commands crossing replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "link/approvals.rs"]
mod approvals;

use std::sync::Arc;
use std::time::Duration;

use covibe_bootstrap::{Client, GrpcServer};
use covibe_orchestrator::{Agent, AgentStore, Agents, Limits, LinkService, SeaAgentStore};
use covibe_proto::common::v1::AgentStatus as PbStatus;
use covibe_proto::events::v1::{TeamEvent, team_event};
use covibe_proto::prost::Message;
use covibe_proto::tonic::{self, Streaming};
use covibe_proto::vmagent::v1::agent_link_client::AgentLinkClient;
use covibe_proto::vmagent::v1::server_frame::Frame as Out;
use covibe_proto::vmagent::v1::{
    Ack, AgentFrame, Command, Heartbeat, Hello, Input, Interrupt, Kill, LinkError, Output,
    PermissionAnswer, PermissionRequest, ServerFrame, StatusChange, Welcome, agent_frame::Frame,
    command,
};
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::{FanoutEvent, HotStore, MemoryHotStore, Subscription};
use covibe_testkit::TestDb;
use covibe_types::{AgentId, AgentStatus, ApiError, Code, TeamId, UserId};
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Only a guard against a hang; nothing is asserted about time.
const GUARD: Duration = Duration::from_secs(30);
/// `link::MAX_CHUNK_BYTES`.
const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// The kill grace the replicas are configured with.
const GRACE_MS: u32 = 1_234;

async fn guard<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

fn hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One orchestrator replica: its domain over its own pool, and its link server on loopback.
struct Replica {
    agents: Arc<Agents>,
    store: Arc<dyn AgentStore>,
    client: AgentLinkClient<Client>,
}

async fn replica(db_url: &str, hot: Arc<MemoryHotStore>) -> Replica {
    let conn = covibe_storage::connect(db_url).await.unwrap();
    let store: Arc<dyn AgentStore> = Arc::new(SeaAgentStore::new(conn.clone()).await.unwrap());
    let audit = covibe_storage::AuditLog::new(conn).await.unwrap();
    let connector =
        VmConnectorServiceClient::new(covibe_bootstrap::channel("http://127.0.0.1:9").unwrap());
    let limits = Limits {
        kill_grace_ms: GRACE_MS,
        ..Limits::default()
    };
    let agents = Arc::new(Agents::new(
        store.clone(),
        hot,
        connector,
        "http://127.0.0.1:9".to_owned(),
        limits,
        audit,
    ));
    let link = LinkService::start(agents.clone()).await.unwrap();
    let server = GrpcServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .add_service(link.into_server());
    let url = server.url();
    tokio::spawn(server.serve(std::future::pending()));
    let client = AgentLinkClient::new(covibe_bootstrap::channel(&url).unwrap());
    Replica {
        agents,
        store,
        client,
    }
}

/// Inserts an agent in `status` and returns it with its link token.
async fn new_agent(
    store: &dyn AgentStore,
    team: TeamId,
    owner: UserId,
    status: AgentStatus,
) -> (Agent, String) {
    let agent = Agent {
        id: AgentId::new(),
        team_id: team,
        owner_id: owner,
        vm_id: "local".to_owned(),
        strategy: "local".to_owned(),
        task: "print some lines".to_owned(),
        status,
        exit_code: None,
        created_at_ms: 1_000,
        started_at_ms: None,
        finished_at_ms: None,
        output_seq: 0,
        outcome: None,
    };
    let token = format!("link-token-{}", AgentId::new());
    store.insert(&agent, &hash(&token)).await.unwrap();
    (agent, token)
}

fn hello(id: impl ToString, token: &str, acked_seq: u64) -> AgentFrame {
    AgentFrame {
        frame: Some(Frame::Hello(Hello {
            agent_id: id.to_string(),
            agent_token: token.to_owned(),
            acked_seq,
            agent_version: "test".to_owned(),
            traceparent: String::new(),
        })),
    }
}

fn line(seq: u64) -> Vec<u8> {
    format!("line {seq}\n").into_bytes()
}

/// Output `seq`, alternating stdout (1) and stderr (2).
fn output(seq: u64) -> AgentFrame {
    output_with(seq, if seq.is_multiple_of(2) { 1 } else { 2 }, line(seq))
}

fn output_with(seq: u64, stream: i32, data: Vec<u8>) -> AgentFrame {
    AgentFrame {
        frame: Some(Frame::Output(Output {
            seq,
            stream,
            data: data.into(),
        })),
    }
}

fn status(status: PbStatus, exit_code: Option<i32>, final_seq: u64) -> AgentFrame {
    AgentFrame {
        frame: Some(Frame::Status(StatusChange {
            status: status.into(),
            exit_code,
            final_seq,
            message: String::new(),
        })),
    }
}

fn heartbeat() -> AgentFrame {
    AgentFrame {
        frame: Some(Frame::Heartbeat(Heartbeat { sent_at_ms: 1 })),
    }
}

/// One client side of `Attach`.
struct Link {
    tx: mpsc::Sender<AgentFrame>,
    rx: Streaming<ServerFrame>,
}

/// Opens a stream whose first frames are `first`, and reads the server's first frame. A refusal
/// comes back as the call's status (or as the first response's).
async fn try_attach(
    client: &AgentLinkClient<Client>,
    first: Vec<AgentFrame>,
) -> Result<(Link, Welcome), tonic::Status> {
    let (tx, rx) = mpsc::channel(1024);
    for frame in first {
        tx.send(frame).await.unwrap();
    }
    let mut rx = guard("attach", client.clone().attach(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    match guard("welcome", rx.message()).await? {
        Some(ServerFrame {
            frame: Some(Out::Welcome(welcome)),
        }) => Ok((Link { tx, rx }, welcome)),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

async fn attach(client: &AgentLinkClient<Client>, id: AgentId, token: &str) -> (Link, Welcome) {
    try_attach(client, vec![hello(id, token, 0)]).await.unwrap()
}

impl Link {
    async fn send(&self, frames: impl IntoIterator<Item = AgentFrame>) {
        for frame in frames {
            self.tx.send(frame).await.unwrap();
        }
    }

    /// The next frame; `None` once the server ended the stream.
    async fn next(&mut self) -> Option<Out> {
        guard("server frame", self.rx.message())
            .await
            .unwrap()
            .map(|f| f.frame.expect("a frame with a body"))
    }

    /// Reads acks until one says `next_seq == upto`; they only move forward. Returns the
    /// `next_seq`s seen.
    async fn acks_upto(&mut self, upto: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(Out::Ack(Ack {
                    next_seq,
                    status_stored: false,
                })) => {
                    assert!(next_seq <= upto, "ack {next_seq} beyond {upto}");
                    assert!(seen.last().is_none_or(|&last| next_seq > last));
                    seen.push(next_seq);
                    if next_seq == upto {
                        return seen;
                    }
                }
                other => panic!("expected acks up to {upto}, got {other:?}"),
            }
        }
    }

    /// Reads frames until a `LinkError` (acks before it are allowed, none beyond `stored`), then
    /// expects the server to end the stream.
    async fn link_error(self, stored: u64) -> LinkError {
        self.link_error_after_acks(stored).await.0
    }

    /// As `link_error`, also returning the last `next_seq` acknowledged before the error.
    async fn link_error_after_acks(mut self, stored: u64) -> (LinkError, u64) {
        let mut acked = 0;
        loop {
            match self.next().await {
                Some(Out::Ack(ack)) => {
                    assert!(ack.next_seq <= stored, "ack {ack:?} beyond {stored}");
                    acked = ack.next_seq;
                }
                Some(Out::Error(error)) => {
                    assert_eq!(self.next().await, None, "the stream ends after the error");
                    return (error, acked);
                }
                other => panic!("expected a link error, got {other:?}"),
            }
        }
    }

    async fn command(&mut self) -> Command {
        match self.next().await {
            Some(Out::Command(command)) => command,
            other => panic!("expected a command, got {other:?}"),
        }
    }
}

/// A well-behaved stream that keeps sending.
struct Steady {
    link: Link,
    next: u64,
}

impl Steady {
    async fn more(&mut self) {
        self.link
            .send((self.next..self.next + 10).map(output))
            .await;
        self.next += 10;
        self.link.acks_upto(self.next).await;
    }
}

async fn stored_seqs(store: &dyn AgentStore, id: AgentId) -> Vec<u64> {
    store
        .output(id, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect()
}

async fn status_of(store: &dyn AgentStore, id: AgentId) -> Agent {
    store.get(id).await.unwrap().unwrap()
}

fn kill(grace_ms: u32) -> Command {
    Command {
        command: Some(command::Command::Kill(Kill { grace_ms })),
    }
}

fn input(data: &str) -> Command {
    Command {
        command: Some(command::Command::Input(Input {
            data: data.as_bytes().to_vec(),
        })),
    }
}

/// What the team fan-out said about one agent, up to and including its final status.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    statuses: Vec<i32>,
}

async fn fanout_until_final(events: &mut Subscription, id: AgentId) -> Seen {
    let mut seen = Seen::default();
    loop {
        let event = guard("fan-out event", events.recv()).await.unwrap();
        let FanoutEvent::Message(bytes) = event else {
            panic!("fan-out gap");
        };
        let event = TeamEvent::decode(bytes).unwrap();
        match event.event.unwrap() {
            team_event::Event::AgentOutput(o) if o.agent_id == id.to_string() => {
                assert_eq!(o.data, line(o.seq));
                seen.seqs.push(o.seq);
            }
            team_event::Event::AgentStatus(s) if s.agent_id == id.to_string() => {
                seen.statuses.push(s.status);
                let done = PbStatus::try_from(s.status)
                    .ok()
                    .and_then(AgentStatus::from_proto)
                    .is_some_and(AgentStatus::is_final);
                if done {
                    return seen;
                }
            }
            _ => {}
        }
    }
}

async fn happy_path_and_resume(db: TestDb) {
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let mut events = hot.subscribe().await.unwrap();
    let r = replica(&db.url, hot.clone()).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (agent, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Starting).await;

    // First connection: running, then 100 chunks, each stored before it is acknowledged.
    let (mut link, welcome) = attach(&r.client, agent.id, &token).await;
    assert_eq!(welcome.resume_from_seq, 0);
    assert!(welcome.pending.is_empty());
    link.send([status(PbStatus::Running, None, 0)]).await;
    assert_eq!(
        link.next().await,
        Some(Out::Ack(Ack {
            next_seq: 0,
            status_stored: false
        }))
    );
    link.send((0..50).map(output)).await;
    link.send([heartbeat()]).await;
    link.send((50..100).map(output)).await;
    link.acks_upto(100).await;
    let stored = status_of(r.store.as_ref(), agent.id).await;
    assert_eq!(
        (stored.status, stored.output_seq),
        (AgentStatus::Running, 100)
    );
    drop(link);

    // Reconnect claiming less was acknowledged: the server says where it really is, and the
    // resend overlapping what is stored is taken once.
    let (mut link, welcome) = attach(&r.client, agent.id, &token).await;
    assert_eq!(welcome.resume_from_seq, 100);
    assert!(welcome.pending.is_empty());
    link.send((90..110).map(output)).await;
    link.acks_upto(110).await;
    let chunks = r.store.output(agent.id, 0, 110).await.unwrap();
    assert_eq!(
        chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (0..110).collect::<Vec<_>>()
    );
    for c in &chunks {
        assert_eq!(c.data.as_ref(), line(c.seq));
        assert_eq!(c.stream, if c.seq.is_multiple_of(2) { 1 } else { 2 });
    }
    assert_eq!(stored_seqs(r.store.as_ref(), agent.id).await.len(), 110);

    // The final status, once everything is stored.
    link.send([status(PbStatus::Completed, Some(0), 110)]).await;
    assert_eq!(
        link.next().await,
        Some(Out::Ack(Ack {
            next_seq: 110,
            status_stored: true
        }))
    );
    let done = status_of(r.store.as_ref(), agent.id).await;
    assert_eq!(done.status, AgentStatus::Completed);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.output_seq, 110);
    assert!(done.finished_at_ms.is_some());

    // History reads the same (from the hot buffer this time).
    let page = r.agents.output(team, agent.id, 0, 1_000).await.unwrap();
    assert_eq!(page.next_seq, 110);
    assert_eq!(page.chunks, chunks);

    // The team saw every chunk exactly once, in order, then the statuses.
    let seen = fanout_until_final(&mut events, agent.id).await;
    assert_eq!(seen.seqs, (0..110).collect::<Vec<_>>());
    assert_eq!(
        seen.statuses,
        vec![i32::from(PbStatus::Running), i32::from(PbStatus::Completed)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_and_resume_on_sqlite() {
    happy_path_and_resume(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_and_resume_on_postgres() {
    happy_path_and_resume(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_hellos_store_nothing() {
    let db = TestDb::sqlite();
    let r = replica(&db.url, Arc::new(MemoryHotStore::new(1_000))).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token_a) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Starting).await;
    let (b, token_b) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Starting).await;

    // Each refused hello is followed by frames that must not be taken.
    let after = || {
        vec![
            status(PbStatus::Running, None, 0),
            output(0),
            output(1),
            status(PbStatus::Completed, Some(0), 2),
        ]
    };
    let refused = |first: AgentFrame| {
        let mut frames = vec![first];
        frames.extend(after());
        frames
    };
    let cases = [
        ("unknown agent", refused(hello(AgentId::new(), &token_a, 0))),
        (
            "malformed agent id",
            refused(hello("not-an-id", &token_a, 0)),
        ),
        ("wrong token", refused(hello(a.id, "not-the-token", 0))),
        ("empty token", refused(hello(a.id, "", 0))),
        ("another agent's token", refused(hello(a.id, &token_b, 0))),
        (
            "the hash as the token",
            refused(hello(a.id, &hash(&token_a), 0)),
        ),
    ];
    for (what, frames) in cases {
        match try_attach(&r.client, frames).await {
            Err(refusal) => assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{what}"),
            Ok(_) => panic!("{what}: attached"),
        }
    }
    // The first frame must be a hello; the stream is kept open after it.
    let mut not_hello = vec![output(0)];
    not_hello.extend(after());
    let mut open = Vec::new();
    for (what, frames) in [
        ("output first", not_hello),
        ("status first", after()),
        (
            "heartbeat first",
            vec![heartbeat(), hello(a.id, &token_a, 0)],
        ),
        ("empty frame first", vec![AgentFrame { frame: None }]),
        ("no frame at all", vec![]),
    ] {
        let (tx, rx) = mpsc::channel(16);
        if frames.is_empty() {
            drop(tx); // the client half-closes at once
        } else {
            for frame in frames {
                tx.send(frame).await.unwrap();
            }
            open.push(tx);
        }
        let result = guard("attach", r.client.clone().attach(ReceiverStream::new(rx))).await;
        let refusal = match result {
            Err(refusal) => refusal,
            Ok(response) => match guard("first frame", response.into_inner().message()).await {
                Err(refusal) => refusal,
                Ok(first) => panic!("{what}: answered {first:?}"),
            },
        };
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{what}");
    }
    drop(open);

    // Nothing was stored or changed for either agent.
    for agent in [&a, &b] {
        assert!(stored_seqs(r.store.as_ref(), agent.id).await.is_empty());
        assert_eq!(status_of(r.store.as_ref(), agent.id).await, *agent);
    }
    // The right token still works.
    let (_link, welcome) = attach(&r.client, a.id, &token_a).await;
    assert_eq!(welcome.resume_from_seq, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_break_only_their_own_stream() {
    let db = TestDb::sqlite();
    let r = replica(&db.url, Arc::new(MemoryHotStore::new(1_000))).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token_a) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (b, token_b) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;

    // B's stream stays open on the same server throughout; after each of A's failures it
    // sends ten more chunks and they are acknowledged.
    let (link, welcome) = attach(&r.client, b.id, &token_b).await;
    assert_eq!(welcome.resume_from_seq, 0);
    let mut good = Steady { link, next: 0 };
    good.more().await;

    let invalid = |e: &LinkError| {
        assert_eq!(e.code, "invalid_argument", "{e:?}");
        assert!(!e.message.is_empty());
    };

    // A chunk of exactly the limit is taken; one byte more is refused.
    let (link, _) = attach(&r.client, a.id, &token_a).await;
    link.send([output_with(0, 1, vec![b'x'; MAX_CHUNK_BYTES])])
        .await;
    link.send([output_with(1, 1, vec![b'y'; MAX_CHUNK_BYTES + 1])])
        .await;
    invalid(&link.link_error(1).await);
    let stored = r.store.output(a.id, 0, 100).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.len(), MAX_CHUNK_BYTES);
    good.more().await;

    // A gap: what came before it is stored, nothing at or past it.
    let (link, welcome) = attach(&r.client, a.id, &token_a).await;
    assert_eq!(welcome.resume_from_seq, 1);
    link.send([output(1), output(2), output(5), output(6), output(3)])
        .await;
    invalid(&link.link_error(3).await);
    assert_eq!(stored_seqs(r.store.as_ref(), a.id).await, vec![0, 1, 2]);
    assert_eq!(status_of(r.store.as_ref(), a.id).await.output_seq, 3);
    good.more().await;

    // No valid stream: unspecified, or a value the enum does not have.
    for stream in [0, 3, 7, -1] {
        let (link, welcome) = attach(&r.client, a.id, &token_a).await;
        assert_eq!(welcome.resume_from_seq, 3);
        link.send([output_with(3, stream, line(3))]).await;
        invalid(&link.link_error(3).await);
        good.more().await;
    }

    // A second hello, and a frame with no body.
    // The chunk before the bad frame may or may not be stored, but whatever was acknowledged
    // is, and nothing after the bad frame.
    for bad in [hello(a.id, &token_a, 3), AgentFrame { frame: None }] {
        let (link, welcome) = attach(&r.client, a.id, &token_a).await;
        let from = welcome.resume_from_seq;
        link.send([output(from), bad, output(from + 1)]).await;
        let (error, acked) = link.link_error_after_acks(from + 1).await;
        invalid(&error);
        let stored = status_of(r.store.as_ref(), a.id).await.output_seq;
        assert!((from..=from + 1).contains(&stored) && acked <= stored);
        assert_eq!(
            stored_seqs(r.store.as_ref(), a.id).await,
            (0..stored).collect::<Vec<_>>()
        );
        good.more().await;
    }
    let resume = status_of(r.store.as_ref(), a.id).await.output_seq;

    // An unknown status value.
    let (link, _) = attach(&r.client, a.id, &token_a).await;
    link.send([AgentFrame {
        frame: Some(Frame::Status(StatusChange {
            status: 99,
            exit_code: None,
            final_seq: resume,
            message: String::new(),
        })),
    }])
    .await;
    invalid(&link.link_error(resume).await);
    assert_eq!(
        status_of(r.store.as_ref(), a.id).await.status,
        AgentStatus::Running
    );
    good.more().await;

    // A is not broken for good: a well-behaved reconnect carries on.
    let (mut link, welcome) = attach(&r.client, a.id, &token_a).await;
    assert_eq!(welcome.resume_from_seq, resume);
    link.send((3..resume + 4).map(output)).await;
    link.acks_upto(resume + 4).await;
    assert_eq!(
        stored_seqs(r.store.as_ref(), a.id).await,
        (0..resume + 4).collect::<Vec<_>>()
    );

    // B's output all arrived, once each.
    good.more().await;
    assert_eq!(
        stored_seqs(r.store.as_ref(), b.id).await,
        (0..good.next).collect::<Vec<_>>()
    );
    assert_eq!(
        status_of(r.store.as_ref(), b.id).await.output_seq,
        good.next
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn final_status_must_cover_the_stored_output() {
    let db = TestDb::sqlite();
    let r = replica(&db.url, Arc::new(MemoryHotStore::new(1_000))).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Starting).await;

    let (mut link, _) = attach(&r.client, a.id, &token).await;
    link.send([status(PbStatus::Running, None, 0)]).await;
    link.next().await.unwrap();
    link.send((0..5).map(output)).await;
    link.acks_upto(5).await;

    // Fewer, then more, than were stored: refused, and the agent stays running.
    for (final_seq, exit) in [(3, Some(0)), (9, Some(1)), (0, None)] {
        link.send([status(PbStatus::Completed, exit, final_seq)])
            .await;
        let error = link.link_error(5).await;
        assert_eq!(error.code, "invalid_argument", "{error:?}");
        let agent = status_of(r.store.as_ref(), a.id).await;
        assert_eq!(agent.status, AgentStatus::Running);
        assert_eq!(agent.exit_code, None);
        assert_eq!(agent.finished_at_ms, None);
        assert_eq!(agent.output_seq, 5);
        let (next, welcome) = attach(&r.client, a.id, &token).await;
        assert_eq!(welcome.resume_from_seq, 5);
        link = next;
    }

    // The last chunks and the final status in one burst: the chunks are stored first.
    link.send((5..8).map(output)).await;
    link.send([status(PbStatus::Failed, Some(2), 8)]).await;
    loop {
        match link.next().await {
            Some(Out::Ack(Ack {
                next_seq,
                status_stored: false,
            })) => assert!(next_seq <= 8),
            Some(Out::Ack(ack)) => {
                assert_eq!(
                    ack,
                    Ack {
                        next_seq: 8,
                        status_stored: true
                    }
                );
                break;
            }
            other => panic!("expected acks, got {other:?}"),
        }
    }
    let agent = status_of(r.store.as_ref(), a.id).await;
    assert_eq!(
        (agent.status, agent.exit_code, agent.output_seq),
        (AgentStatus::Failed, Some(2), 8)
    );
}

async fn control_crosses_replicas(db: TestDb) {
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let ra = replica(&db.url, hot.clone()).await;
    let rb = replica(&db.url, hot.clone()).await;
    let (team, owner, teammate) = (TeamId::new(), UserId::new(), UserId::new());
    let (a, token_a) = new_agent(ra.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (away, token_away) = new_agent(ra.store.as_ref(), team, owner, AgentStatus::Running).await;

    // A is attached to replica B; commands are asked of replica A.
    let (mut link, welcome) = attach(&rb.client, a.id, &token_a).await;
    assert!(welcome.pending.is_empty());

    // A teammate may not control it, nor may anyone through another team.
    for command in [input("rm -rf /\n"), kill(0)] {
        let err = ra
            .agents
            .control(teammate, team, a.id, command)
            .await
            .unwrap_err();
        assert_eq!(ApiError::from(err).code, Code::PermissionDenied);
    }
    let err = ra
        .agents
        .control(owner, TeamId::new(), a.id, kill(0))
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(err).code, Code::NotFound);
    assert!(!ra.store.kill_requested(a.id).await.unwrap());

    // The owner's commands arrive in order, and nothing refused arrived before them.
    ra.agents
        .control(owner, team, a.id, input("yes\n"))
        .await
        .unwrap();
    assert_eq!(link.command().await, input("yes\n"));
    let interrupt = Command {
        command: Some(command::Command::Interrupt(Interrupt {})),
    };
    ra.agents
        .control(owner, team, a.id, interrupt.clone())
        .await
        .unwrap();
    assert_eq!(link.command().await, interrupt);
    ra.agents.control(owner, team, a.id, kill(0)).await.unwrap();
    assert_eq!(link.command().await, kill(GRACE_MS));
    assert!(ra.store.kill_requested(a.id).await.unwrap());
    // The link still carries output after the commands.
    link.send((0..3).map(output)).await;
    link.acks_upto(3).await;

    // A kill asked for while the vm-agent is away is in the welcome when it comes back.
    ra.agents
        .control(owner, team, away.id, kill(0))
        .await
        .unwrap();
    let (_away_link, welcome) = attach(&rb.client, away.id, &token_away).await;
    assert_eq!(welcome.pending, vec![kill(GRACE_MS)]);
    assert_eq!(
        status_of(rb.store.as_ref(), away.id).await.status,
        AgentStatus::Running
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn control_crosses_replicas_on_sqlite() {
    control_crosses_replicas(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_crosses_replicas_on_postgres() {
    control_crosses_replicas(TestDb::postgres().await).await;
}

/// An agent whose vm-agent stays silent past the limit is marked `lost` (once, whichever
/// replica sweeps); one that is attached is not; and a lost agent whose vm-agent comes back
/// keeps its output and can still end normally.
#[tokio::test]
async fn silent_agents_are_marked_lost_and_can_come_back() {
    let db = TestDb::sqlite();
    let replica = replica(&db.url, Arc::new(MemoryHotStore::new(1000))).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (silent, token) =
        new_agent(replica.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (heard, heard_token) =
        new_agent(replica.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (done, _) = new_agent(replica.store.as_ref(), team, owner, AgentStatus::Completed).await;
    let (_heard_link, _) = attach(&replica.client, heard.id, &heard_token).await;

    // Created long ago (created_at_ms = 1000) and never heard from: lost. The attached one is not.
    assert_eq!(replica.agents.mark_lost().await.unwrap(), 1);
    assert_eq!(replica.agents.mark_lost().await.unwrap(), 0, "marked once");
    assert_eq!(
        status_of(replica.store.as_ref(), silent.id).await.status,
        AgentStatus::Lost
    );
    assert_eq!(
        status_of(replica.store.as_ref(), heard.id).await.status,
        AgentStatus::Running
    );
    assert_eq!(
        status_of(replica.store.as_ref(), done.id).await.status,
        AgentStatus::Completed
    );

    // The vm-agent comes back with its output and its end.
    let (mut link, welcome) = attach(&replica.client, silent.id, &token).await;
    assert_eq!(welcome.resume_from_seq, 0);
    link.send((0..3).map(output)).await;
    link.acks_upto(3).await;
    link.send([status(PbStatus::Completed, Some(0), 3)]).await;
    let stored = stored_seqs(replica.store.as_ref(), silent.id).await;
    assert_eq!(stored, vec![0, 1, 2]);
    loop {
        if let Some(Out::Ack(Ack {
            status_stored: true,
            ..
        })) = link.next().await
        {
            break;
        }
    }
    assert_eq!(
        status_of(replica.store.as_ref(), silent.id).await.status,
        AgentStatus::Completed
    );
}
