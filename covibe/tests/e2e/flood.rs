//! An agent floods its output: over 100 MiB printed as fast as the pipes take it, through the
//! multi-process mesh. Every viewer still gets every line exactly once, in order, the database
//! holds them all, and no process's memory comes near what flowed through it (bounded queues,
//! backpressure down to the vm-agent and the agent's pipes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use covibe_testkit::{RedisServer, SioClient, Tally, TestDb};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::support::*;

/// The fake agent's padded lines: 105,000 lines of 1 KiB, 107.3 MB (102.4 MiB) of `data`
/// (newlines aside), printed with no delay.
const LINES: u64 = 105_000;
const LINE_BYTES: u64 = 1024;
/// What each viewer must receive at least: 100 MiB of output.
const AT_LEAST_BYTES: u64 = 100 << 20;

/// Per process: a bound on its peak resident memory (`VmHWM`) while the flood goes through,
/// and on how much that peak grew over its peak before the flood (the vm-agent starts with the
/// agent: no "before"), in MiB.
///
/// Measured on a 2-core machine (debug build; idle, and with both cores kept busy by other
/// work), before -> during: gateway 43 -> 50-58, orchestrator 45 -> 58-63, vm-agent 27,
/// vm-connector 44 -> 47 (it started the vm-agent), auth 35, team 37 and preview 34 unchanged
/// (they see none of the output). Some 30-37 MiB of each is the binary's own mapped pages.
/// Holding the output would add over 100 MiB: holding a third of it breaks the growth bounds,
/// holding half breaks every peak bound.
///
/// The queues on the way (the link's undurable output, the gateway's per-socket send queue, the
/// hot rings) are bounded in bytes as well as chunks, so longer lines stay within them too
/// (`long_lines_arrive_whole_live_in_history_and_on_resume` sends 200 KiB lines).
const BOUNDS_MIB: &[(&str, u64, Option<u64>)] = &[
    ("gateway", 80, Some(32)),
    ("orchestrator", 88, Some(32)),
    ("vm-agent", 48, None),
    ("vm-connector", 72, Some(16)),
    ("auth", 72, Some(16)),
    ("team", 72, Some(16)),
    ("preview", 72, Some(16)),
];

/// Redis keeps the last 10,000 chunks of each agent hot (`limits.ring_buffer_chunks`), about
/// 10 MiB of 1 KiB lines: its `used_memory_peak` was 16 MiB.
const REDIS_PEAK_MIB: u64 = 48;

/// The viewers: the agent's owner and two other members, each a Socket.io client in its own
/// Node process (as on three phones), joined before the agent starts.
const VIEWERS: [&str; 3] = ["sarah", "miguel", "chen"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_reach_every_viewer_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    // A Redis of its own: the services' key prefix is fixed, and the flood's fan-out must not
    // reach another test's gateways.
    let redis = RedisServer::start().await;
    let mesh = Mesh::start(dir.path(), &db.url, &redis.url()).await;
    let gw = mesh.gateway.clone();
    let http = reqwest::Client::new();

    let (status, sarah) = create_team(&http, &gw, "Flood", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let team = sarah["team"]["id"].as_str().unwrap().to_owned();
    let mut tokens = vec![sarah["accessToken"].as_str().unwrap().to_owned()];
    for name in &VIEWERS[1..] {
        let (status, member) = post(
            &http,
            &format!("{gw}/api/auth/login"),
            None,
            json!({"inviteCode": sarah["inviteCode"], "email": format!("{name}@example.com"), "displayName": name}),
        )
        .await;
        assert_eq!(status, 200, "{member}");
        tokens.push(member["accessToken"].as_str().unwrap().to_owned());
    }
    let mut viewers = Vec::new();
    for (name, token) in VIEWERS.into_iter().zip(tokens.iter().cloned()) {
        let mut sio = SioClient::start().await;
        sio.connect(name, &gw).await;
        // The driver counts the output instead of shipping 100 MiB per viewer to this process.
        sio.tally(name).await;
        join(&mut sio, name, json!({"teamId": team, "token": token})).await;
        viewers.push(Viewer {
            name,
            token,
            sio,
            resyncs: Vec::new(),
            completed_live: false,
        });
    }

    let servers: Vec<(String, u32)> = mesh
        .procs
        .iter()
        .map(|(name, _, proc)| (name.clone(), proc.child.id().unwrap()))
        .collect();
    let before: BTreeMap<String, u64> = servers
        .iter()
        .map(|(name, pid)| (name.clone(), peak_rss_kib(*pid).unwrap()))
        .collect();

    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&tokens[0]),
        json!({"task": format!("lines={LINES} line_bytes={LINE_BYTES} flood")}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    let total = expected_lines(LINES);
    let sampler = Sampler::start(servers, agent.clone());

    for viewer in &mut viewers {
        viewer.read_to_the_end(&team, &agent, total).await;
    }
    wait_for_status(&http, &gw, &tokens[0], &agent, "completed").await;
    let peaks = sampler.stop().await;
    let redis_peak = redis_used_memory_peak(redis.port).await;

    // Every viewer: every line exactly once, in order, and the same bytes as the others.
    let mut bytes = None;
    for viewer in &mut viewers {
        let tally = viewer.sio.tally_of(viewer.name, &agent).await;
        let want = Tally {
            count: total,
            first_seq: Some(0),
            last_seq: Some(total - 1),
            bytes: tally.bytes,
            anomalies: 0,
            first_anomaly: Value::Null,
        };
        assert_eq!(tally, want, "{}: every line once, in order", viewer.name);
        assert!(
            tally.bytes >= AT_LEAST_BYTES,
            "{}: only {} bytes",
            viewer.name,
            tally.bytes
        );
        assert_eq!(
            *bytes.get_or_insert(tally.bytes),
            tally.bytes,
            "{}: the same bytes as the others",
            viewer.name
        );
        // The final status reaches a viewer live, unless it was out of the room to resync.
        viewer.take_events(&agent);
        while !viewer.completed_live && viewer.resyncs.is_empty() {
            let data = viewer.sio.next_event(viewer.name, "agent_status").await;
            viewer.completed_live =
                data["agentId"] == agent.as_str() && data["status"] == "completed";
        }
    }
    let bytes = bytes.unwrap();

    // The agent completed, and the database holds every line with the same bytes.
    let (_, body) = get(&http, &format!("{gw}/api/agent/{agent}"), &tokens[0]).await;
    assert_eq!(body["agent"]["status"], "completed", "{body}");
    assert_eq!(body["agent"]["outputSeq"], total, "{body}");
    let (_, page) = get(
        &http,
        &format!(
            "{gw}/api/agent/{agent}/output?fromSeq={}&limit=10",
            total - 1
        ),
        &tokens[0],
    )
    .await;
    assert_eq!(page["chunks"][0]["seq"], total - 1, "{page}");
    assert_eq!(page["chunks"][0]["event"]["kind"], "result", "{page}");
    assert_eq!(
        stored_output(&db.url, &agent).await,
        (total, 0, total - 1, bytes),
        "lines, first and last seq, and bytes stored"
    );

    let resyncs: Vec<(&str, &[String])> =
        viewers.iter().map(|v| (v.name, &v.resyncs[..])).collect();
    eprintln!(
        "flood: {bytes} bytes in {total} lines to each viewer; resyncs {resyncs:?}; \
         peak RSS KiB before {before:?}, during {peaks:?}; redis used_memory_peak {redis_peak} B"
    );
    for (name, peak_mib, growth_mib) in BOUNDS_MIB {
        let peak = *peaks
            .get(*name)
            .unwrap_or_else(|| panic!("{name} was never seen in /proc"));
        let before = before.get(*name).copied();
        assert!(
            peak < peak_mib << 10,
            "{name}: peak RSS {peak} KiB (before the flood {before:?}), bound {peak_mib} MiB"
        );
        if let (Some(growth_mib), Some(before)) = (growth_mib, before) {
            assert!(
                peak.saturating_sub(before) < growth_mib << 10,
                "{name}: peak RSS grew from {before} to {peak} KiB, bound {growth_mib} MiB"
            );
        }
    }
    assert!(
        redis_peak < REDIS_PEAK_MIB << 20,
        "redis used_memory_peak {redis_peak} B, bound {REDIS_PEAK_MIB} MiB"
    );
}

struct Viewer {
    name: &'static str,
    token: String,
    sio: SioClient,
    /// The reasons of the resyncs it was told to do.
    resyncs: Vec<String>,
    completed_live: bool,
}

impl Viewer {
    /// Reads until the driver has counted the last line. A viewer that falls behind is told to
    /// resync; it rejoins from its last seq, as a real client does, and the count goes on.
    async fn read_to_the_end(&mut self, team: &str, agent: &str, total: u64) {
        // A hang guard, not a speed claim: 3,000 looks, 100 ms apart.
        for _ in 0..3000 {
            let tally = self.sio.tally_of(self.name, agent).await;
            if tally.last_seq == Some(total - 1) || tally.anomalies > 0 {
                return;
            }
            if self.take_events(agent) {
                // Count again: what came before the resync is counted by now.
                let tally = self.sio.tally_of(self.name, agent).await;
                let last = tally.last_seq.map_or(-1, |s| i64::try_from(s).unwrap());
                let ack = self
                    .sio
                    .emit_ack(
                        self.name,
                        "join_team",
                        json!({"teamId": team, "token": self.token, "since": {agent: last}}),
                    )
                    .await;
                assert_eq!(ack["ok"], true, "{}: {ack}", self.name);
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never got the last line", self.name);
    }

    /// Takes the events received so far (the output is counted, not among them), noting a
    /// `completed` status and the resyncs; true if there was a resync.
    fn take_events(&mut self, agent: &str) -> bool {
        let mut resync = false;
        for (event, data) in self.sio.drain_events(self.name) {
            match event.as_str() {
                "resync" => {
                    self.resyncs
                        .push(data["reason"].as_str().unwrap_or_default().to_owned());
                    resync = true;
                }
                "agent_status" if data["agentId"] == agent && data["status"] == "completed" => {
                    self.completed_live = true;
                }
                _ => {}
            }
        }
        resync
    }
}

/// The stored output of `agent`, read from the database itself: lines, first and last seq,
/// bytes.
async fn stored_output(url: &str, agent: &str) -> (u64, u64, u64, u64) {
    let conn = Database::connect(url).await.unwrap();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT count(*)::bigint, min(seq)::bigint, max(seq)::bigint, \
             sum(octet_length(data))::bigint FROM agent_output WHERE agent_id = $1",
            [agent.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    let at = |i: usize| u64::try_from(row.try_get_by_index::<i64>(i).unwrap()).unwrap();
    let stored = (at(0), at(1), at(2), at(3));
    conn.close().await.unwrap();
    stored
}

/// Redis's `used_memory_peak`, in bytes, asked over RESP (`INFO memory`).
async fn redis_used_memory_peak(port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(b"INFO memory\r\n").await.unwrap();
    // One bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((head, body)) = text.split_once("\r\n") {
            let len: usize = head.trim_start_matches('$').parse().unwrap();
            if body.len() >= len {
                return body
                    .lines()
                    .find_map(|l| l.strip_prefix("used_memory_peak:"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
            }
        }
    }
}

/// Samples the peak RSS of the mesh's processes and of the agent's vm-agent every 50 ms.
struct Sampler {
    peaks: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(servers: Vec<(String, u32)>, agent: String) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut vm_agent = None;
            loop {
                {
                    let mut peaks = shared.lock().unwrap();
                    for (name, pid) in &servers {
                        record(&mut peaks, name, *pid);
                    }
                    // The vm-agent exits when the agent is done: its peak is the last one read.
                    vm_agent = vm_agent.or_else(|| vm_agent_pid(&agent));
                    if let Some(pid) = vm_agent {
                        record(&mut peaks, "vm-agent", pid);
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { peaks, stop, task }
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.peaks.lock().unwrap().clone()
    }
}

/// Keeps the highest `VmHWM` read of `name` (nothing once the process is gone).
fn record(peaks: &mut BTreeMap<String, u64>, name: &str, pid: u32) {
    if let Some(kib) = peak_rss_kib(pid) {
        let peak = peaks.entry(name.to_owned()).or_insert(0);
        *peak = (*peak).max(kib);
    }
}

/// Long lines: 1,000 lines of 200 KiB each (200 MiB of output), under the longest chunk.
const LONG_LINES: u64 = 1_000;
const LONG_LINE_BYTES: u64 = 200 * 1024;

/// Each line arrives whole (one `agent_output` per line, every byte) live on a socket, through
/// REST history pages none of which passes the byte bound, and on a Socket.io resume from the
/// start; the three agree byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_arrive_whole_live_in_history_and_on_resume() {
    use covibe_proto::limits::MAX_HISTORY_PAGE_BYTES;
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (_standalone, gw) = start_standalone(dir.path()).await;
    let http = reqwest::Client::new();
    let (status, me) = create_team(&http, &gw, "Long", "long@example.com", "Long").await;
    assert_eq!(status, 201, "{me}");
    let team = me["team"]["id"].as_str().unwrap().to_owned();
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let joining = json!({"teamId": team, "token": token});

    let mut live = Viewer {
        name: "live",
        token: token.clone(),
        sio: SioClient::start().await,
        resyncs: Vec::new(),
        completed_live: false,
    };
    live.sio.connect("live", &gw).await;
    live.sio.tally("live").await;
    join(&mut live.sio, "live", joining.clone()).await;

    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&token),
        json!({"task": format!("lines={LONG_LINES} line_bytes={LONG_LINE_BYTES} long")}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    let total = expected_lines(LONG_LINES);
    live.read_to_the_end(&team, &agent, total).await;
    wait_for_status(&http, &gw, &token, &agent, "completed").await;

    // History, page by page: each page's JSON within the bound, every line whole.
    let (mut next, mut pages, mut lengths) = (0u64, 0u32, Vec::new());
    loop {
        let response = http
            .get(format!(
                "{gw}/api/agent/{agent}/output?fromSeq={next}&limit=5000"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() <= MAX_HISTORY_PAGE_BYTES,
            "a page of {} bytes from seq {next}",
            body.len()
        );
        let page: Value = serde_json::from_slice(&body).unwrap();
        let chunks = page["chunks"].as_array().unwrap();
        for chunk in chunks {
            assert_eq!(chunk["seq"], lengths.len() as u64, "gap-free history");
            lengths.push(chunk["data"].as_str().unwrap().len() as u64);
        }
        pages += 1;
        next = page["nextSeq"].as_u64().unwrap();
        assert_eq!(next, lengths.len() as u64, "pages follow each other");
        if !page["more"].as_bool().unwrap() {
            break;
        }
        assert!(
            !chunks.is_empty(),
            "a page with more to come is never empty"
        );
    }
    assert_eq!(lengths.len() as u64, total, "every line in history");
    // Padded to about 200 KiB: one chunk each, not cut into pieces.
    let long = lengths
        .iter()
        .filter(|l| **l >= LONG_LINE_BYTES - 1024)
        .count() as u64;
    assert_eq!(long, LONG_LINES, "every long line whole in history");
    let history_bytes: u64 = lengths.iter().sum();
    assert!(
        pages > 40,
        "{pages} pages: 200 MiB needs at least 50 of 4 MiB"
    );

    // Live: every line once, in order, the same bytes.
    let tally = live.sio.tally_of("live", &agent).await;
    tally.assert_every_line_once(total, "live");
    assert_eq!(tally.bytes, history_bytes, "live: every byte");

    // A socket that resumes from the start gets it all again.
    let mut late = SioClient::start().await;
    late.connect("late", &gw).await;
    late.tally("late").await;
    let mut resume = joining.clone();
    resume["since"] = json!({ agent.as_str(): -1 });
    // 200 MB are replayed before the join's acknowledgement: the test waits for the lines
    // rather than for the acknowledgement (the driver gives one a minute).
    late.send_raw(
        json!({"op": "emit", "client": "late", "ref": 0, "event": "join_team",
        "data": resume, "noAck": true}),
    )
    .await;
    let tally = tally_complete(&mut late, "late", &agent, total).await;
    tally.assert_every_line_once(total, "resume");
    assert_eq!(tally.bytes, history_bytes, "resume: every byte");
    eprintln!(
        "long lines: {history_bytes} bytes in {total} lines, {pages} history pages, {:?} resyncs live; {:.1} s",
        live.resyncs,
        started.elapsed().as_secs_f64()
    );
}
