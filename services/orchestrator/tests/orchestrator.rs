//! The agent store over SeaORM, run against SQLite and PostgreSQL alike: agents, the lifecycle
//! (forward only) and output ingest (de-duplicated by sequence number, gap-aware).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use covibe_orchestrator::{Agent, AgentStore, OutputBatch, SeaAgentStore, StoredChunk};
use covibe_testkit::TestDb;
use covibe_types::{AgentId, AgentStatus, TeamId, UserId};

fn agent(team: TeamId, owner: UserId, task: &str, created_at_ms: i64) -> Agent {
    Agent {
        id: AgentId::new(),
        team_id: team,
        owner_id: owner,
        vm_id: "local".to_owned(),
        strategy: "local".to_owned(),
        task: task.to_owned(),
        status: AgentStatus::Pending,
        exit_code: None,
        created_at_ms,
        started_at_ms: None,
        finished_at_ms: None,
        output_seq: 0,
        outcome: None,
    }
}

fn line(seq: u64) -> Bytes {
    Bytes::from(format!("line {seq}\n"))
}

/// Chunks `range`, alternating stdout (1) and stderr (2).
fn chunks(range: std::ops::Range<u64>) -> Vec<StoredChunk> {
    range
        .map(|seq| StoredChunk {
            seq,
            stream: if seq % 2 == 0 { 1 } else { 2 },
            data: line(seq),
            // The event parsed at ingest is stored with the line; odd lines stand for lines
            // stored before events were kept.
            event: if seq.is_multiple_of(2) {
                Bytes::from(format!(r#"{{"kind":"raw","n":{seq}}}"#))
            } else {
                Bytes::new()
            },
        })
        .collect()
}

fn seqs(stored: &[StoredChunk]) -> Vec<u64> {
    stored.iter().map(|c| c.seq).collect()
}

/// One agent's `append_output`: its position afterwards.
async fn append(store: &SeaAgentStore, agent: AgentId, chunks: &[StoredChunk]) -> u64 {
    let mut appended = store
        .append_output(&[OutputBatch { agent, chunks }])
        .await
        .unwrap();
    assert_eq!(appended.len(), 1);
    appended.remove(0)
}

async fn suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaAgentStore::new(conn).await.unwrap();
    let (team, owner) = (TeamId::new(), UserId::new());

    // Agents are stored as given and listed per team, newest first.
    let a = agent(team, owner, "fix the login bug", 1_000);
    let b = agent(team, UserId::new(), "write the changelog", 2_000);
    let c = agent(team, owner, "print a lot", 3_000);
    let stranger = agent(TeamId::new(), UserId::new(), "someone else's", 2_500);
    for (x, hash) in [
        (&a, "hash-a"),
        (&b, "hash-b"),
        (&c, "hash-c"),
        (&stranger, "hash-s"),
    ] {
        store.insert(x, hash).await.unwrap();
    }
    assert_eq!(store.get(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get(AgentId::new()).await.unwrap(), None);
    assert_eq!(
        store.token_hash(b.id).await.unwrap().as_deref(),
        Some("hash-b")
    );
    assert_eq!(store.token_hash(AgentId::new()).await.unwrap(), None);
    let listed: Vec<AgentId> = store
        .list(team)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, vec![c.id, b.id, a.id]);
    assert!(store.list(TeamId::new()).await.unwrap().is_empty());

    // The lifecycle moves forward, stamping times and the exit code.
    let starting = store
        .transition(a.id, AgentStatus::Starting, None, 1_100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(starting.status, AgentStatus::Starting);
    assert_eq!(starting.started_at_ms, None);
    let running = store
        .transition(a.id, AgentStatus::Running, None, 1_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.status, AgentStatus::Running);
    assert_eq!(running.started_at_ms, Some(1_200));
    assert_eq!(running.finished_at_ms, None);
    // Going back is refused and changes nothing.
    assert_eq!(
        store
            .transition(a.id, AgentStatus::Starting, None, 1_250)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get(a.id).await.unwrap(), Some(running.clone()));
    let done = store
        .transition(a.id, AgentStatus::Completed, Some(0), 1_300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, AgentStatus::Completed);
    assert_eq!(done.started_at_ms, Some(1_200));
    assert_eq!(done.finished_at_ms, Some(1_300));
    assert_eq!(done.exit_code, Some(0));
    // An ended agent stays ended.
    assert_eq!(
        store
            .transition(a.id, AgentStatus::Failed, Some(1), 1_400)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get(a.id).await.unwrap(), Some(done));
    assert_eq!(
        store
            .transition(AgentId::new(), AgentStatus::Running, None, 1)
            .await
            .unwrap(),
        None
    );
    // A failure carries its exit code; skipping `starting` is still a step forward.
    store
        .transition(b.id, AgentStatus::Running, None, 2_100)
        .await
        .unwrap()
        .unwrap();
    let failed = store
        .transition(b.id, AgentStatus::Failed, Some(3), 2_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failed.exit_code, failed.finished_at_ms),
        (Some(3), Some(2_200))
    );

    // Output: a resend overlapping what is stored is taken once, and never replaces what is
    // stored (even with other bytes).
    assert_eq!(append(&store, a.id, &chunks(0..10)).await, 10);
    let mut resend = chunks(5..15);
    for chunk in &mut resend[..5] {
        chunk.data = bytes::Bytes::from_static(b"not the first copy");
    }
    assert_eq!(append(&store, a.id, &resend).await, 15);
    assert_eq!(store.get(a.id).await.unwrap().unwrap().output_seq, 15);
    let all = store.output(a.id, 0, 100).await.unwrap();
    assert_eq!(all, chunks(0..15));
    let page = store.output(a.id, 3, 4).await.unwrap();
    assert_eq!(seqs(&page), vec![3, 4, 5, 6]);
    assert_eq!(page, chunks(3..7));
    // An empty batch changes nothing.
    assert_eq!(append(&store, a.id, &[]).await, 15);
    // A batch past the end leaves a gap: the agent's position stays before it.
    assert_eq!(append(&store, a.id, &chunks(17..19)).await, 15);
    assert_eq!(store.get(a.id).await.unwrap().unwrap().output_seq, 15);
    assert_eq!(
        seqs(&store.output(a.id, 0, 15).await.unwrap()),
        (0..15).collect::<Vec<_>>()
    );
    // Filling the gap moves it over the batch; the resend beyond it then moves it on.
    assert_eq!(append(&store, a.id, &chunks(15..17)).await, 17);
    assert_eq!(append(&store, a.id, &chunks(17..19)).await, 19);
    assert_eq!(store.get(a.id).await.unwrap().unwrap().output_seq, 19);

    // Several agents in one transaction, each told its own position; an agent twice in one
    // call (two links racing) is stored once.
    let more = chunks(19..21);
    let other = chunks(0..3);
    let twice = store
        .append_output(&[
            OutputBatch {
                agent: a.id,
                chunks: &more,
            },
            OutputBatch {
                agent: stranger.id,
                chunks: &other,
            },
            OutputBatch {
                agent: a.id,
                chunks: &more,
            },
        ])
        .await
        .unwrap();
    assert_eq!(twice, vec![21, 3, 21]);
    assert_eq!(store.output(a.id, 19, 10).await.unwrap(), more);
    assert_eq!(store.output(stranger.id, 0, 10).await.unwrap(), other);
    // Another agent's output is its own.
    assert!(store.output(b.id, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.get(b.id).await.unwrap().unwrap().output_seq, 0);

    // A large batch in one write, with bytes that are not text, and its resend.
    let big: Vec<StoredChunk> = (0..500u64)
        .map(|seq| StoredChunk {
            seq,
            stream: 1,
            data: Bytes::from(vec![0, 0xff, u8::try_from(seq % 256).unwrap(), b'\n']),
            event: Bytes::new(),
        })
        .collect();
    assert_eq!(append(&store, c.id, &big).await, 500);
    assert_eq!(append(&store, c.id, &big).await, 500);
    assert_eq!(store.output(c.id, 0, 1_000).await.unwrap(), big);
    assert_eq!(store.output(c.id, 495, 100).await.unwrap(), big[495..]);
    assert!(store.output(c.id, 500, 100).await.unwrap().is_empty());
    assert_eq!(store.get(c.id).await.unwrap().unwrap().output_seq, 500);

    // Many agents in one call (more than one statement's worth of rows and of agents), each
    // with its own run, one of them after a gap: each is told its own position.
    let many: Vec<Agent> = (0..70)
        .map(|i| agent(team, owner, "one of many", 4_000 + i))
        .collect();
    for x in &many {
        store.insert(x, "hash-m").await.unwrap();
    }
    let runs: Vec<Vec<StoredChunk>> = (0..70u64)
        .map(|i| {
            if i == 69 {
                chunks(1..3)
            } else {
                chunks(0..i % 5 + 1)
            }
        })
        .collect();
    let batches: Vec<OutputBatch<'_>> = many
        .iter()
        .zip(&runs)
        .map(|(x, run)| OutputBatch {
            agent: x.id,
            chunks: run,
        })
        .collect();
    let positions = store.append_output(&batches).await.unwrap();
    let expected: Vec<u64> = (0..70u64)
        .map(|i| if i == 69 { 0 } else { i % 5 + 1 })
        .collect();
    assert_eq!(positions, expected);
    for (x, run) in many.iter().zip(&runs).take(69) {
        assert_eq!(&store.output(x.id, 0, 10).await.unwrap(), run);
    }
}

#[tokio::test]
async fn agent_store_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn agent_store_on_postgres() {
    suite(TestDb::postgres().await).await;
}

/// A database from before `agent_positions` keeps each agent's position through the migration.
async fn positions_survive_the_migration(db: TestDb) {
    use covibe_orchestrator::store::Migrator;
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;

    let conn = covibe_storage::connect(&db.url).await.unwrap();
    // The schema as it was before the position moved to a table of its own.
    Migrator::up(&conn, Some(4)).await.unwrap();
    let (id, team, owner) = (AgentId::new(), TeamId::new(), UserId::new());
    conn.execute_unprepared(&format!(
        "INSERT INTO agents (id, team_id, owner_id, vm_id, task, status, created_at_ms, \
         output_seq, token_hash) \
         VALUES ('{id}', '{team}', '{owner}', 'local', 'old', 'running', 1, 42, 'hash')"
    ))
    .await
    .unwrap();

    let store = SeaAgentStore::new(conn).await.unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().output_seq, 42);
    assert_eq!(append(&store, id, &chunks(42..45)).await, 45);
    let listed = store.list(team).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|a| (a.id, a.output_seq))
            .collect::<Vec<_>>(),
        vec![(id, 45)]
    );
}

#[tokio::test]
async fn positions_survive_the_migration_on_sqlite() {
    positions_survive_the_migration(TestDb::sqlite()).await;
}

#[tokio::test]
async fn positions_survive_the_migration_on_postgres() {
    positions_survive_the_migration(TestDb::postgres().await).await;
}
