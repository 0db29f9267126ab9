//! One conformance suite for every `HotStore`: the in-process store and Redis (the machine's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use covibe_storage::{FanoutEvent, HotChunk, HotStore, MemoryHotStore, RedisHotStore};
use covibe_types::{AgentId, TeamId};

fn chunk(seq: u64) -> HotChunk {
    HotChunk {
        seq,
        stream: 1,
        data: Bytes::from(format!("line {seq}")),
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
    for sub in [&mut a, &mut b] {
        for i in 0..50u32 {
            let event = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event, FanoutEvent::Message(Bytes::from(i.to_string())));
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

async fn suite(store: &dyn HotStore) {
    ring_keeps_the_newest_in_order_without_duplicates(store).await;
    fanout_reaches_every_subscriber_in_order(store).await;
    control_reaches_every_subscriber_and_not_the_team_channel(store).await;
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
