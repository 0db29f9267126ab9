//! Faults mid-stream: a killed orchestrator, a restarted Redis, a VM link delayed, reset, cut
//! mid-frame and refused.

use std::path::Path;
use std::time::Duration;

use covibe_testkit::{FaultProxy, RedisServer, SioClient, TestDb, redis_url};

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

/// The proxy test's agent: 12,000 lines of 4 KiB (about 48 MiB), one every millisecond or so.
const LINK_LINES: u64 = 12_000;
const LINK_LINE_BYTES: u64 = 4096;
/// The vm-agent's memory window of output not yet sent (`RunOptions::window_max_bytes`): once
/// it is full the vm-agent stops reading the agent's pipes, so the agent waits for the link.
const WINDOW_BYTES: u64 = 4 << 20;
/// The vm-agent's peak RSS bound. Measured: 27.9-28.4 MiB (debug build), most of it the
/// binary's own pages (as in the flood test); 48 MiB of output went through it.
const VM_AGENT_PEAK_MIB: u64 = 48;

/// The vm-agent's link to the orchestrator goes through a proxy that refuses it for six redials
/// while the agent prints, then delays it, resets it and cuts it in the middle of a frame while
/// the backlog is resent. The vm-agent backs off while refused, buffers no more than its window
/// (the agent waits), reconnects each time and resends by seq from what was acknowledged: the
/// viewer gets every line of the 48 MiB exactly once, in order, the database holds them all,
/// and the vm-agent's memory stays under its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_delayed_reset_and_cut_mid_frame_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let proxy = FaultProxy::start().await;
    let link = vec![("COVIBE_LINK_URL".to_owned(), proxy.url())];
    let mut mesh = Mesh::start_with(dir.path(), &db.url, &redis_url(), link).await;
    proxy.set_upstream(&mesh.orchestrator_addr);
    let gw = mesh.gateway.clone();
    let mut viewer = watcher(&gw).await;
    viewer.sio.tally("viewer").await;
    let join = viewer.join.clone();
    viewer.sio.resume_on_resync("viewer", join).await;
    let total = expected_lines(LINK_LINES);
    let agent = viewer
        .spawn(
            &gw,
            &format!("lines={LINK_LINES} line_bytes={LINK_LINE_BYTES} delay_ms=1 print"),
        )
        .await;
    let peak = VmAgentPeak::start(&agent);
    let mut seen = live_count_at_least(&mut viewer.sio, &agent, 50).await;

    // Refused: the vm-agent redials with growing delays while the agent prints on.
    let spool = dir.path().join("agent_logs").join(format!("{agent}.spool"));
    let spooled = dir_bytes(&spool);
    connector_log(&mut mesh);
    proxy.set_refusing(true);
    proxy.reset_all();
    let refused = proxy.stats().refused;
    wait_until("six redials refused and the window filled", || {
        proxy.stats().refused >= refused + 6 && dir_bytes(&spool) >= spooled + WINDOW_BYTES * 3 / 4
    })
    .await;
    let buffered = dir_bytes(&spool) - spooled;
    let during_blackout = live_count(&mut viewer.sio, &agent).await;
    let accepted = proxy.stats().accepted;
    let delays = reconnect_delays(&connector_log(&mut mesh));
    proxy.set_refusing(false);

    // Delayed while the backlog is resent.
    proxy.set_latency(Duration::from_millis(30));
    seen = live_count_at_least(&mut viewer.sio, &agent, during_blackout.max(seen) + 300).await;
    // Reset: every connection torn down at once.
    proxy.reset_all();
    let reconnected = proxy.stats().accepted;
    wait_until("a new connection after the reset", || {
        proxy.stats().accepted > reconnected
    })
    .await;
    seen = live_count_at_least(&mut viewer.sio, &agent, seen + 300).await;
    proxy.set_latency(Duration::ZERO);
    // Cut mid-frame: 53,251 more bytes go through, the end of them inside one of the 4 KiB
    // output messages then on the wire.
    proxy.cut_after(3 * 16_384 + 4_099);
    wait_until("the cut", || proxy.stats().cut == 1).await;
    seen = live_count_at_least(&mut viewer.sio, &agent, seen + 300).await;
    assert!(seen < total, "the faults came before the end of the stream");

    wait_for_status(&viewer.http, &gw, &viewer.token, &agent, "completed").await;
    let peak_kib = peak.stop().await;
    let stats = proxy.stats();
    let tally = tally_complete(&mut viewer.sio, "viewer", &agent, total).await;
    eprintln!(
        "link faults: vm-agent peak RSS {peak_kib} KiB; proxy {stats:?}; \
         reconnect delays while refused (ms) {delays:?}; {buffered} bytes taken in while \
         refused; live {tally:?}"
    );

    // The viewer: every line once, in order, live.
    tally.assert_every_line_once(total, "the viewer");
    // The database: every line.
    let history = viewer.history_from(&gw, &agent, 0).await;
    assert_seqs(&history, 0..total, "the database holds every line");
    let (_, body) = get(
        &viewer.http,
        &format!("{gw}/api/agent/{agent}"),
        &viewer.token,
    )
    .await;
    assert_eq!(body["agent"]["outputSeq"], total, "{body}");
    // The link: refused six times and more, redialled after each fault, cut once.
    assert!(stats.refused >= refused + 6, "{stats:?}");
    assert!(
        stats.accepted >= accepted + 3,
        "reconnected after the refusal, the reset and the cut: {stats:?}"
    );
    assert_eq!(stats.cut, 1, "{stats:?}");
    // Bounded buffering: while refused, the vm-agent took in no more than its window.
    assert!(
        buffered < WINDOW_BYTES + (2 << 20),
        "{buffered} bytes taken in while the link was refused"
    );
    // Backoff: the first redial within 150 ms (100 ms ± 50 %), later ones doubling.
    assert!(
        delays.len() >= 5 && delays[0] <= 150 && delays[4] >= 800,
        "reconnect delays while refused (ms): {delays:?}"
    );
    assert!(peak_kib > 0, "the vm-agent was seen");
    assert!(
        peak_kib < VM_AGENT_PEAK_MIB << 10,
        "vm-agent peak RSS {peak_kib} KiB, bound {VM_AGENT_PEAK_MIB} MiB"
    );
}

/// Bytes in the files of `dir` (0 when it is gone).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Waits (a hang guard, not a speed claim: 3,000 looks, 50 ms apart) until `done`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// The lines the vm-connector (and the vm-agents it started) printed since the last call.
fn connector_log(mesh: &mut Mesh) -> Vec<String> {
    let (_, _, proc) = mesh
        .procs
        .iter_mut()
        .find(|(name, _, _)| name == "vm-connector")
        .unwrap();
    proc.drain()
}

/// The `delay_ms` of each "link lost, reconnecting" the vm-agent logged, in order.
fn reconnect_delays(log: &[String]) -> Vec<u64> {
    log.iter()
        .filter(|line| line.contains("link lost, reconnecting"))
        .filter_map(|line| {
            let plain = strip_ansi(line);
            let at = plain.find("delay_ms=")? + "delay_ms=".len();
            let digits: String = plain[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// `line` without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn live_count(sio: &mut SioClient, agent: &str) -> u64 {
    sio.tally_of("viewer", agent).await.count
}

/// Waits until the viewer has counted `at_least` lines of `agent` live; returns the count.
async fn live_count_at_least(sio: &mut SioClient, agent: &str, at_least: u64) -> u64 {
    // A hang guard, not a speed claim: 3,000 looks, 100 ms apart.
    for _ in 0..3000 {
        let count = live_count(sio, agent).await;
        if count >= at_least {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the viewer never counted {at_least} lines of {agent}");
}
