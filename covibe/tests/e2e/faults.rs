//! Faults mid-stream: a killed orchestrator, a restarted Redis.

use covibe_testkit::{RedisServer, TestDb};

use crate::support::*;

/// The orchestrator is killed (SIGKILL) while an agent prints thousands of lines, then started
/// again: the vm-agent resends what was not acknowledged, the database ends with every line, and
/// a viewer that asks from its last seq has every line exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let mut mesh = start_multi_process(dir.path(), &db.url).await;
    let gw = mesh.gateway.clone();
    let mut viewer = watcher(&gw).await;
    let lines = 3000;
    let total = expected_lines(lines);
    let agent = viewer
        .spawn(&gw, &format!("lines={lines} delay_ms=1 print a lot"))
        .await;

    let mut live = Vec::new();
    viewer.live_until(&agent, &mut live, 300).await;
    let extra = mesh.kill("orchestrator").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    mesh.launch("orchestrator", extra).await;

    wait_for_status(&viewer.http, &gw, &viewer.token, &agent, "completed").await;
    viewer.drain_live(&agent, &mut live);
    let from = first_missing(&live);
    let history = viewer.history_from(&gw, &agent, from).await;
    assert_exactly_once(&live, &history, from, total);
    assert_eq!(
        viewer.history_from(&gw, &agent, 0).await.len() as u64,
        total,
        "the database holds every line"
    );
}

/// Redis (no persistence) is killed and started again while an agent prints: the full output is
/// still served (from the database), viewers are told to resync, and once they rejoin (as a real
/// client does) the stream goes on with nothing missing and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let mut redis = RedisServer::start().await;
    let mesh = Mesh::start(dir.path(), &db.url, &redis.url()).await;
    let gw = mesh.gateway.clone();
    let mut viewer = watcher(&gw).await;
    let lines = 3000;
    let total = expected_lines(lines);
    let agent = viewer
        .spawn(&gw, &format!("lines={lines} delay_ms=1 print a lot"))
        .await;

    let join = viewer.join.clone();
    viewer.sio.resume_on_resync("viewer", join).await;

    let mut live = Vec::new();
    viewer.live_until(&agent, &mut live, 300).await;
    redis.restart().await;
    // The viewer is told it may have missed events, rejoins, and keeps receiving new ones.
    let resync = viewer.sio.next_event("viewer", "resync").await;
    assert_eq!(resync["reason"], "fanout_gap", "{resync}");
    let before = live.len();
    // The status is published after the last line, so once it arrives live, so has the output.
    loop {
        let data = await_event(&mut viewer.sio, "viewer", &agent, |_, _| true).await;
        match data["seq"].as_u64() {
            Some(seq) => live.push(seq),
            None if data["status"] == "completed" => break,
            None => {}
        }
    }
    assert!(
        live.len() > before,
        "live output continues after the restart"
    );
    assert_eq!(
        live.last().copied(),
        Some(total - 1),
        "the stream reaches its end live"
    );

    assert_seqs(
        &live,
        0..total,
        "every line once, in order, across the rejoin",
    );
    let history = viewer.history_from(&gw, &agent, 0).await;
    assert_seqs(&history, 0..total, "served in full from the database");
}
