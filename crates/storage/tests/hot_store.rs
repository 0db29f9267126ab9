//! One conformance suite for every `HotStore`: the in-process store and Redis (the machine's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use covibe_storage::{
    FanoutEvent, HotChunk, HotStore, MemoryHotStore, PresenceEntry, PresenceWrite, RedisHotStore,
};
use covibe_types::{AgentId, TeamId, UserId};

fn chunk(seq: u64) -> HotChunk {
    HotChunk {
        seq,
        stream: 1,
        data: Bytes::from(format!("line {seq}")),
        // Every third chunk without an event, as an older orchestrator wrote them.
        event: if seq.is_multiple_of(3) {
            Bytes::new()
        } else {
            Bytes::from(format!(r#"{{"kind":"raw","n":{seq}}}"#))
        },
    }
}

async fn ring_keeps_the_newest_in_order_without_duplicates(store: &dyn HotStore) {
    let agent = AgentId::new();
    let first: Vec<_> = (0..6).map(chunk).collect();
    store.append(agent, &first).await.unwrap();
    // A resent batch (overlapping) changes nothing.
    store.append(agent, &first[3..]).await.unwrap();
    let got = store.range(agent, 0, 100).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "capacity 5 keeps the newest"
    );
    assert_eq!(got[0].data, Bytes::from("line 1"));

    let later: Vec<_> = (6..9).map(chunk).collect();
    store.append(agent, &later).await.unwrap();
    let got = store.range(agent, 5, 2).await.unwrap();
    assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![5, 6]);
    // Asking from before what is held returns what is held: the caller sees the gap.
    let got = store.range(agent, 0, 100).await.unwrap();
    assert_eq!(got.first().map(|c| c.seq), Some(4));
    assert!(store.range(AgentId::new(), 0, 10).await.unwrap().is_empty());

    // Several agents' rings in one call, each its own.
    let (x, y) = (AgentId::new(), AgentId::new());
    store
        .append_many(&[
            (x, (0..3).map(chunk).collect()),
            (y, vec![]),
            (y, (10..12).map(chunk).collect()),
        ])
        .await
        .unwrap();
    let seqs = |got: Vec<HotChunk>| got.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.range(x, 0, 10).await.unwrap()), vec![0, 1, 2]);
    assert_eq!(seqs(store.range(y, 10, 10).await.unwrap()), vec![10, 11]);
}

async fn fanout_reaches_every_subscriber_in_order(store: &dyn HotStore) {
    let mut a = store.subscribe().await.unwrap();
    let mut b = store.subscribe().await.unwrap();
    let team = TeamId::new();
    for i in 0..50u32 {
        store
            .publish(team, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    // A batch arrives as its events, one by one, in order, empty ones included.
    let batch: Vec<(TeamId, Bytes)> = (50..80u32)
        .map(|i| {
            let event = if i == 60 {
                Bytes::new()
            } else {
                Bytes::from(i.to_string())
            };
            (if i % 2 == 0 { team } else { TeamId::new() }, event)
        })
        .collect();
    store.publish_many(&batch).await.unwrap();
    store.publish_many(&[]).await.unwrap();
    store.publish(team, Bytes::from("80")).await.unwrap();
    for sub in [&mut a, &mut b] {
        for i in 0..=80u32 {
            let i = if i == 60 {
                String::new()
            } else {
                i.to_string()
            };
            let event = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event, FanoutEvent::Message(Bytes::from(i)));
        }
    }
}

async fn control_reaches_every_subscriber_and_not_the_team_channel(store: &dyn HotStore) {
    let mut control = store.subscribe_control().await.unwrap();
    let mut teams = store.subscribe().await.unwrap();
    store.publish_control(Bytes::from("kill")).await.unwrap();
    store
        .publish(TeamId::new(), Bytes::from("team"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), control.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, FanoutEvent::Message(Bytes::from("kill")));
    let got = tokio::time::timeout(Duration::from_secs(10), teams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        FanoutEvent::Message(Bytes::from("team")),
        "commands never reach team channels"
    );
}

async fn next(sub: &mut covibe_storage::Subscription) -> FanoutEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap()
}

/// A subscriber that stops reading is bounded in bytes: past its budget (8 MiB) it loses
/// events, marked with a gap where the loss begins and one where events flow again, while a
/// subscriber that keeps reading gets every event.
async fn a_subscriber_that_stops_reading_gets_a_gap(store: &dyn HotStore) {
    const EVENTS: u32 = 160;
    const SIZE: usize = 256 << 10;
    let number = |event: &Bytes| u32::from_be_bytes(event[..4].try_into().unwrap());
    let mut slow = store.subscribe().await.unwrap();
    let mut fast = store.subscribe().await.unwrap();
    // The reading subscriber acknowledges each event, and each is published once the one
    // before it was read: it never falls behind.
    let (read_tx, mut read) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), fast.recv()).await {
                Ok(Some(FanoutEvent::Message(event))) => {
                    if read_tx.send(event).is_err() {
                        return;
                    }
                }
                other => panic!("the reading subscriber got {other:?}"),
            }
        }
    });
    let team = TeamId::new();
    for i in 0..EVENTS {
        let mut event = vec![0u8; SIZE];
        event[..4].copy_from_slice(&i.to_be_bytes());
        store.publish(team, Bytes::from(event)).await.unwrap();
        assert_eq!(number(&read.recv().await.unwrap()), i, "all, in order");
    }
    reader.abort();

    let mut kept = 0;
    while let FanoutEvent::Message(event) = next(&mut slow).await {
        assert_eq!(number(&event), kept, "in order up to the gap");
        kept += 1;
    }
    assert!(
        (16..EVENTS).contains(&kept),
        "about its budget's worth was kept: {kept}"
    );
    // Drained, it gets events again after a second gap (some that were published before it
    // drained may still come first, in order).
    store.publish(team, Bytes::from("again")).await.unwrap();
    assert_eq!(
        next(&mut slow).await,
        FanoutEvent::Gap,
        "where events flow again"
    );
    let mut last = kept;
    loop {
        match next(&mut slow).await {
            FanoutEvent::Message(event) if event == "again" => break,
            FanoutEvent::Message(event) => {
                assert!(number(&event) > last, "still in order");
                last = number(&event);
            }
            FanoutEvent::Gap => panic!("two gaps per episode"),
        }
    }
}

fn write(user: UserId, holder: &str, value: &'static [u8], ttl: Duration) -> PresenceWrite {
    PresenceWrite {
        user,
        holder: holder.to_owned(),
        value: Bytes::from_static(value),
        ttl,
        remove: None,
    }
}

fn entry(user: UserId, holder: &str, value: &'static [u8]) -> PresenceEntry {
    PresenceEntry {
        user,
        holder: holder.to_owned(),
        value: Bytes::from_static(value),
    }
}

fn sorted(mut entries: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
    entries.sort();
    entries
}

async fn live_presence(store: &dyn HotStore, team: TeamId) -> Vec<PresenceEntry> {
    sorted(store.presence(team).await.unwrap().entries)
}

/// Entries are per member and holder (a gateway replica), each expiring on its own; every
/// call answers what it took away (replaced, removed, or pruned as expired: the last reported
/// by exactly one call), so the team service can tell when a holder's entries vanished.
async fn presence_is_per_member_and_holder_and_expires(store: &dyn HotStore) {
    let (team, other) = (TeamId::new(), TeamId::new());
    let (sarah, miguel, chen) = (UserId::new(), UserId::new(), UserId::new());
    let long = Duration::from_secs(60);
    let empty = store.presence(team).await.unwrap();
    assert!(empty.entries.is_empty() && empty.gone.is_empty());
    assert_eq!(
        empty.version, 0,
        "a read that changes nothing is not versioned"
    );

    store
        .set_presence(team, write(sarah, "gw-a", b"sarah online", long))
        .await
        .unwrap();
    store
        .set_presence(team, write(miguel, "gw-a", b"miguel away", long))
        .await
        .unwrap();
    // The same member through another holder: a second entry.
    let both = store
        .set_presence(team, write(sarah, "gw-b", b"sarah phone", long))
        .await
        .unwrap();
    assert!(both.gone.is_empty(), "{:?}", both.gone);
    // A holder's new entry replaces its old one, which is answered as gone; binary entries
    // come back intact.
    let replaced = store
        .set_presence(team, write(sarah, "gw-a", b"sarah\0busy:\xff", long))
        .await
        .unwrap();
    assert_eq!(replaced.gone, vec![entry(sarah, "gw-a", b"sarah online")]);
    assert!(replaced.version > both.version);
    let want = sorted(vec![
        entry(miguel, "gw-a", b"miguel away"),
        entry(sarah, "gw-a", b"sarah\0busy:\xff"),
        entry(sarah, "gw-b", b"sarah phone"),
    ]);
    assert_eq!(sorted(replaced.entries), want);
    assert_eq!(live_presence(store, team).await, want);

    // Nothing crosses teams.
    assert!(store.presence(other).await.unwrap().entries.is_empty());
    let elsewhere = store
        .set_presence(other, write(chen, "gw-a", b"chen online", long))
        .await
        .unwrap();
    assert_eq!(elsewhere.entries, vec![entry(chen, "gw-a", b"chen online")]);
    assert!(elsewhere.version > replaced.version, "versions only grow");

    // One step sets one holder's entry and removes another's (a device gone: its holder's
    // entry makes way for the member's last-seen one); removing what is not there is nothing.
    let moved = store
        .set_presence(
            team,
            PresenceWrite {
                remove: Some("gw-b".to_owned()),
                ..write(sarah, "seen", b"sarah last seen", long)
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.gone, vec![entry(sarah, "gw-b", b"sarah phone")]);
    let want = sorted(vec![
        entry(miguel, "gw-a", b"miguel away"),
        entry(sarah, "gw-a", b"sarah\0busy:\xff"),
        entry(sarah, "seen", b"sarah last seen"),
    ]);
    assert_eq!(sorted(moved.entries), want);
    let again = store
        .set_presence(
            team,
            PresenceWrite {
                remove: Some("gw-b".to_owned()),
                ..write(sarah, "seen", b"sarah last seen", long)
            },
        )
        .await
        .unwrap();
    assert_eq!(again.gone, vec![entry(sarah, "seen", b"sarah last seen")]);
    assert_eq!(sorted(again.entries), want);

    // Each entry expires on its own; the read that finds it expired prunes it, reports it
    // and is versioned; the next read reports nothing more.
    store
        .set_presence(
            team,
            write(
                miguel,
                "gw-a",
                b"miguel gone soon",
                Duration::from_millis(1),
            ),
        )
        .await
        .unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let read = store.presence(team).await.unwrap();
            if !read.gone.is_empty() {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a 1 ms entry expires");
    assert_eq!(
        pruned.gone,
        vec![entry(miguel, "gw-a", b"miguel gone soon")]
    );
    assert!(pruned.version > again.version);
    let want = sorted(vec![
        entry(sarah, "gw-a", b"sarah\0busy:\xff"),
        entry(sarah, "seen", b"sarah last seen"),
    ]);
    assert_eq!(sorted(pruned.entries), want);
    let quiet = store.presence(team).await.unwrap();
    assert!(quiet.gone.is_empty());
    assert_eq!(quiet.version, 0);
    assert_eq!(sorted(quiet.entries), want);

    // A write prunes too, and answers the expired entries it found; a short entry set first
    // does not shorten a long one set after it.
    let fresh = TeamId::new();
    store
        .set_presence(
            fresh,
            write(chen, "gw-x", b"short", Duration::from_millis(1)),
        )
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = store
                .set_presence(fresh, write(miguel, "gw-a", b"long", long))
                .await
                .unwrap();
            if snapshot
                .gone
                .iter()
                .any(|e| e.user == chen && e.holder == "gw-x")
            {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the short entry expires");
    assert_eq!(found.entries, vec![entry(miguel, "gw-a", b"long")]);
    assert_eq!(
        found.gone.iter().filter(|e| e.user == chen).count(),
        1,
        "reported once"
    );
    assert_eq!(
        live_presence(store, fresh).await,
        vec![entry(miguel, "gw-a", b"long")]
    );
}

/// A range longer than one read (the Redis store reads in parts) comes whole and in order, and
/// never goes past `from + limit`, even where the ring has a gap before it.
async fn long_ranges_are_whole_and_bounded(store: &dyn HotStore) {
    let agent = AgentId::new();
    let held: Vec<_> = (0..1_500).chain(2_000..2_100).map(chunk).collect();
    store.append(agent, &held).await.unwrap();
    let seqs = |got: Vec<HotChunk>| got.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.range(agent, 0, 1_500).await.unwrap()),
        (0..1_500).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(store.range(agent, 123, 1_000).await.unwrap()),
        (123..1_123).collect::<Vec<_>>()
    );
    // Past the gap: only what lies in the range, so the caller sees it is not whole.
    assert_eq!(
        seqs(store.range(agent, 1_400, 300).await.unwrap()),
        (1_400..1_500).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(store.range(agent, 1_400, usize::MAX).await.unwrap()),
        (1_400..1_500).chain(2_000..2_100).collect::<Vec<_>>()
    );
    assert!(store.range(agent, 0, 0).await.unwrap().is_empty());
}

async fn suite(store: &dyn HotStore) {
    ring_keeps_the_newest_in_order_without_duplicates(store).await;
    fanout_reaches_every_subscriber_in_order(store).await;
    control_reaches_every_subscriber_and_not_the_team_channel(store).await;
    presence_is_per_member_and_holder_and_expires(store).await;
    a_subscriber_that_stops_reading_gets_a_gap(store).await;
}

#[tokio::test]
async fn memory_hot_store_conforms() {
    suite(&MemoryHotStore::new(5)).await;
}

#[tokio::test]
async fn redis_hot_store_conforms() {
    let prefix = covibe_testkit::unique_prefix();
    let store = RedisHotStore::connect(&covibe_testkit::redis_url(), &prefix, 5, 60)
        .await
        .unwrap();
    suite(&store).await;
}

#[tokio::test]
async fn long_ranges_on_both_stores() {
    long_ranges_are_whole_and_bounded(&MemoryHotStore::new(4_096)).await;
    let prefix = covibe_testkit::unique_prefix();
    let store = RedisHotStore::connect(&covibe_testkit::redis_url(), &prefix, 4_096, 60)
        .await
        .unwrap();
    long_ranges_are_whole_and_bounded(&store).await;
}

/// A ring lives its TTL after its last write, whatever that write was (a resumed agent's
/// ring, starting anywhere, included), and its byte count with it.
#[tokio::test]
async fn redis_rings_always_have_a_ttl() {
    use fred::prelude::*;
    let prefix = covibe_testkit::unique_prefix();
    let url = covibe_testkit::redis_url();
    let store = RedisHotStore::connect(&url, &prefix, 1024, 60)
        .await
        .unwrap();
    let admin = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    admin.init().await.unwrap();
    let ttl = |key: String| {
        let admin = admin.clone();
        async move { admin.ttl::<i64, _>(key).await.unwrap() }
    };

    // Started mid-way, as a resumed agent's ring is.
    let agent = AgentId::new();
    let (ring, count) = (
        format!("{prefix}out:{agent}"),
        format!("{prefix}out:{agent}:bytes"),
    );
    store
        .append(agent, &[chunk(100), chunk(101)])
        .await
        .unwrap();
    for key in [&ring, &count] {
        let first = ttl(key.clone()).await;
        assert!((1..=60).contains(&first), "{key} has a TTL, got {first}");
    }

    // Every write sets it again.
    admin.expire::<(), _>(&ring, 5, None).await.unwrap();
    store.append(agent, &[chunk(102)]).await.unwrap();
    assert!(ttl(ring.clone()).await > 5, "a write refreshes the TTL");
    assert_eq!(store.range(agent, 100, 100).await.unwrap().len(), 3);
}

/// A chunk as long as the longest output chunk (256 KiB), its bytes telling it apart.
fn long_chunk(seq: u64) -> HotChunk {
    let fill = b'a' + u8::try_from(seq % 26).unwrap();
    HotChunk {
        seq,
        stream: 1,
        data: Bytes::from(vec![fill; 256 * 1024]),
        event: Bytes::from(format!(r#"{{"kind":"raw","n":{seq}}}"#)),
    }
}

/// Long chunks come back whole, and a ring holds at most its bytes (whatever its chunk
/// count): the newest chunks, always at least the newest one.
async fn long_chunks_are_whole_and_bytes_bounded(store: &dyn HotStore, max_bytes: usize) {
    let agent = AgentId::new();
    let sent: Vec<_> = (0..20).map(long_chunk).collect();
    store.append(agent, &sent[..8]).await.unwrap();
    store.append(agent, &sent[8..]).await.unwrap();
    let held = store.range(agent, 0, 100).await.unwrap();
    let bytes: usize = held.iter().map(|c| c.data.len() + c.event.len()).sum();
    assert!(bytes <= max_bytes, "{bytes} bytes held, bound {max_bytes}");
    assert!(held.len() >= 2, "only {} chunks held", held.len());
    let first = held[0].seq;
    assert_eq!(
        held,
        sent[usize::try_from(first).unwrap()..],
        "the newest, whole, in order"
    );

    // A chunk larger than the bound alone is still held, and is then all that is.
    let huge = HotChunk {
        data: Bytes::from(vec![b'z'; max_bytes + 1]),
        ..long_chunk(20)
    };
    store
        .append(agent, std::slice::from_ref(&huge))
        .await
        .unwrap();
    assert_eq!(store.range(agent, 0, 100).await.unwrap(), vec![huge]);
}

#[tokio::test]
async fn long_chunks_on_both_stores() {
    let max = 1 << 20;
    long_chunks_are_whole_and_bytes_bounded(&MemoryHotStore::new(1_000).with_ring_bytes(max), max)
        .await;
    let prefix = covibe_testkit::unique_prefix();
    let store = RedisHotStore::connect(&covibe_testkit::redis_url(), &prefix, 1_000, 60)
        .await
        .unwrap()
        .with_ring_bytes(max);
    long_chunks_are_whole_and_bytes_bounded(&store, max).await;
    // The default bound holds long lines too.
    let store = RedisHotStore::connect(&covibe_testkit::redis_url(), &prefix, 10_000, 60)
        .await
        .unwrap();
    long_chunks_are_whole_and_bytes_bounded(&store, covibe_storage::RING_MAX_BYTES).await;
}

/// The ring of an agent that went silent (it ended) is forgotten after the TTL, as Redis
/// forgets it; another agent's, still written, stays.
#[tokio::test]
async fn the_memory_ring_of_a_silent_agent_is_forgotten() {
    let store = MemoryHotStore::new(100).with_ring_ttl(Duration::from_millis(300));
    let (silent, busy) = (AgentId::new(), AgentId::new());
    store.append(silent, &[chunk(0), chunk(1)]).await.unwrap();
    assert_eq!(store.range(silent, 0, 10).await.unwrap().len(), 2);
    let mut seq = 0;
    // A hang guard, not a speed claim.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !store.range(silent, 0, 10).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        store.append(busy, &[chunk(seq)]).await.unwrap();
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = store.range(busy, 0, 10_000).await.unwrap();
    assert_eq!(
        held.last().map(|c| c.seq),
        Some(seq - 1),
        "the written ring stays"
    );
    // Written again, a forgotten agent starts a new ring.
    store.append(silent, &[chunk(7)]).await.unwrap();
    assert_eq!(store.range(silent, 0, 10).await.unwrap(), vec![chunk(7)]);
}

/// The audit log on both databases: records read back newest first, paged by id, and the
/// database itself refuses to change or delete one.
async fn audit_log_appends_and_refuses_rewrites(url: &str) {
    use covibe_storage::{AuditLog, AuditRecord};
    use sea_orm::ConnectionTrait;
    let db = covibe_storage::connect(url).await.unwrap();
    let log = AuditLog::new(db.clone()).await.unwrap();
    // Opening twice (a second service on the same database) migrates nothing again.
    AuditLog::new(db.clone()).await.unwrap();
    for (i, action) in ["vm.register", "ssh.start", "agent.kill"]
        .iter()
        .enumerate()
    {
        log.record(&AuditRecord {
            team_id: "t".into(),
            actor_id: "u".into(),
            owner_id: "u".into(),
            vm_id: Some("vm-1".into()),
            action: (*action).into(),
            result: if i == 2 { "refused" } else { "ok" }.into(),
            detail: Some("é".repeat(600)),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let all = log.for_vm("vm-1", None, 10).await.unwrap();
    let actions: Vec<_> = all.iter().map(|e| e.record.action.as_str()).collect();
    assert_eq!(actions, ["agent.kill", "ssh.start", "vm.register"]);
    assert_eq!(all[0].record.detail.as_ref().unwrap().chars().count(), 500);
    let older = log.for_vm("vm-1", Some(all[1].id), 10).await.unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].record.action, "vm.register");
    assert!(log.for_vm("vm-2", None, 10).await.unwrap().is_empty());
    for sql in [
        "UPDATE audit_log SET result = 'ok'",
        "DELETE FROM audit_log",
    ] {
        let err = db.execute_unprepared(sql).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(log.for_vm("vm-1", None, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn audit_log_on_sqlite() {
    let db = covibe_testkit::TestDb::sqlite();
    audit_log_appends_and_refuses_rewrites(&db.url).await;
}

#[tokio::test]
async fn audit_log_on_postgres() {
    let db = covibe_testkit::TestDb::postgres().await;
    audit_log_appends_and_refuses_rewrites(&db.url).await;
}

/// A database that cannot be reached is told apart from a statement it refused: the first is
/// answered "unavailable, try again", the second is a bug.
#[tokio::test]
async fn an_unreachable_database_is_unavailable_and_a_bad_statement_is_not() {
    use sea_orm::ConnectionTrait;
    let port = covibe_testkit::free_port();
    let down = covibe_storage::connect(&format!("postgres://postgres@127.0.0.1:{port}/none"))
        .await
        .unwrap_err();
    let covibe_storage::Error::Db(down) = down else {
        panic!("not a database error: {down}");
    };
    assert!(covibe_storage::db_unavailable(&down), "{down}");

    let db = covibe_testkit::TestDb::postgres().await;
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let refused = conn.execute_unprepared("SELEC 1").await.unwrap_err();
    assert!(!covibe_storage::db_unavailable(&refused), "{refused}");
    conn.clone().close().await.unwrap();
    let closed = conn.execute_unprepared("SELECT 1").await.unwrap_err();
    assert!(covibe_storage::db_unavailable(&closed), "{closed}");
}
