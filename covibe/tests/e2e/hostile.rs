//! Clients that misuse Socket.io on purpose (RELIABILITY row 22): one posts pings over
//! long-polling and never reads the answers, one opens sockets and never joins a team, one
//! address opens thousands. Each is refused or closed, the gateway's memory stays bounded, and
//! a member on their phone keeps receiving all the while.

use serde_json::{Value, json};

use crate::support::*;

/// The gateway's peak resident memory (`VmHWM`) through all of it, in MiB: it was 42-44 on a
/// 2-core machine (debug build), of which some 30 are the binary's own mapped pages.
const GATEWAY_PEAK_MIB: u64 = 72;

/// What these tests lower so they run in seconds (and what they raise so that the tests' own
/// REST calls, all from 127.0.0.1, are not what gets refused).
const HOSTILE_LIMITS: &[(&str, &str)] = &[
    ("COVIBE_LIMITS__TRUST_FORWARDED_FOR", "true"),
    ("COVIBE_LIMITS__MAX_SOCKETS_PER_ADDRESS", "64"),
    ("COVIBE_LIMITS__SOCKET_JOIN_TIMEOUT_MS", "1500"),
    ("COVIBE_LIMITS__RATE_PER_IP_PER_SEC", "100000"),
    ("COVIBE_LIMITS__BURST_PER_IP", "100000"),
];

/// A raw long-polling client, speaking for the address `from` (the proxy's `X-Forwarded-For`).
struct Polling {
    http: reqwest::Client,
    url: String,
    from: &'static str,
}

impl Polling {
    /// A handshake: the session, or the refusal's status and body.
    async fn open(gw: &str, from: &'static str) -> Result<Polling, (u16, Value)> {
        let http = reqwest::Client::new();
        let response = http
            .get(format!("{gw}/socket.io/?EIO=4&transport=polling"))
            .header("x-forwarded-for", from)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status != 200 {
            return Err((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        let open: Value = serde_json::from_str(text.strip_prefix('0').unwrap()).unwrap();
        let url = format!(
            "{gw}/socket.io/?EIO=4&transport=polling&sid={}",
            open["sid"].as_str().unwrap()
        );
        Ok(Polling { http, url, from })
    }

    /// Posts packets (0x1e between them); the answer's status.
    async fn post(&self, packets: &[String]) -> u16 {
        self.http
            .post(&self.url)
            .header("x-forwarded-for", self.from)
            .body(packets.join("\u{1e}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Whether the gateway still knows the session (a `noop` is accepted).
    async fn alive(&self) -> bool {
        self.post(&["6".to_owned()]).await == 200
    }
}

/// The member's socket still gets what happens in the team: an agent's output to the end.
async fn still_receiving(watcher: &mut Watcher, gw: &str) {
    let agent = watcher.spawn(gw, "still here").await;
    await_event(&mut watcher.sio, "viewer", &agent, is_completed).await;
}

fn gateway_peak_mib(mesh: &Mesh) -> u64 {
    let (_, _, gateway) = mesh.procs.iter().find(|(n, _, _)| n == "gateway").unwrap();
    peak_rss_kib(gateway.child.id().unwrap()).unwrap() / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_socket_clients_are_bounded_and_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let db = covibe_testkit::TestDb::postgres().await;
    let redis = covibe_testkit::RedisServer::start().await;
    let env = HOSTILE_LIMITS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mesh = Mesh::start_with(dir.path(), &db.url, &redis.url(), env).await;
    let gw = mesh.gateway.clone();
    let mut watcher = watcher(&gw).await;
    still_receiving(&mut watcher, &gw).await;

    // 1. Pings posted and never read: the pongs fill the session's own bounded queue (4 MiB),
    //    and the session is closed.
    let pinger = Polling::open(&gw, "10.66.0.1").await.unwrap();
    assert_eq!(pinger.post(&["40".to_owned()]).await, 200);
    let pings = vec![format!("2{}", "p".repeat(2048)); 100];
    let mut posts = 0;
    while posts < 1000 && pinger.post(&pings).await == 200 {
        posts += 1;
    }
    assert!(
        posts >= 10,
        "closed after {posts} posts: before its queue was full"
    );
    // Its end comes from the session's own task, a moment after its queue is full.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while pinger.alive().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client posting pings it never reads was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    still_receiving(&mut watcher, &gw).await;

    // 2. Thousands of handshakes from one address: past its 64 sockets (these joined the team,
    //    so they stay) each is refused, saying why; another address is unaffected.
    let join = format!("42{}", json!(["join_team", watcher.join]));
    let mut held = Vec::new();
    for _ in 0..64 {
        let session = Polling::open(&gw, "10.66.0.2").await.unwrap();
        assert_eq!(session.post(&["40".to_owned(), join.clone()]).await, 200);
        held.push(session);
    }
    for _ in 0..1936 {
        let Err((status, body)) = Polling::open(&gw, "10.66.0.2").await else {
            panic!("a socket past its address's limit was opened");
        };
        assert_eq!(status, 429, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("too many connections"),
            "{body}"
        );
    }
    assert!(held[0].alive().await, "a joined socket was closed");
    let elsewhere = Polling::open(&gw, "10.66.0.3").await;
    assert!(elsewhere.is_ok(), "another address was refused");
    still_receiving(&mut watcher, &gw).await;

    // 3. Sockets that connect and never join (and ones that do not even connect) are closed
    //    within the join timeout, and their address may connect again.
    let mut idle = Vec::new();
    for n in 0..64 {
        let session = Polling::open(&gw, "10.66.0.4").await.unwrap();
        if n % 2 == 0 {
            assert_eq!(session.post(&["40".to_owned()]).await, 200);
        }
        idle.push(session);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for session in &idle {
        while session.alive().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a socket that never joined is still open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(
        Polling::open(&gw, "10.66.0.4").await.is_ok(),
        "the address's places were not given back"
    );
    still_receiving(&mut watcher, &gw).await;

    // 4. A join with a `since` naming more agents than any screen shows is refused, saying why.
    let since: serde_json::Map<String, Value> =
        (0..300).map(|n| (format!("agent-{n}"), json!(0))).collect();
    let mut join = watcher.join.clone();
    join["since"] = Value::Object(since);
    let ack = watcher.sio.emit_ack("viewer", "join_team", join).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 256 agents"),
        "{ack}"
    );
    still_receiving(&mut watcher, &gw).await;

    let peak = gateway_peak_mib(&mesh);
    eprintln!("the gateway peaked at {peak} MiB");
    assert!(
        peak < GATEWAY_PEAK_MIB,
        "the gateway peaked at {peak} MiB (bound {GATEWAY_PEAK_MIB})"
    );
}
