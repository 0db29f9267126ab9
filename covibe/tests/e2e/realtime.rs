//! Realtime delivery: gateway replicas, resume with `since`, slow consumers, connection limits.

use covibe_testkit::{SioClient, TestDb};
use serde_json::{Value, json};

use crate::support::*;

/// Two gateway replicas over one Redis: a client on each sees the same output once; a client
/// that reconnects with `since` after missing a thousand lines gets exactly those, then the
/// live ones; another team's client resuming someone else's agent gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_resume_with_since() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let mut mesh = start_multi_process(dir.path(), &db.url).await;
    let gw1 = mesh.gateway.clone();
    let extra = mesh
        .procs
        .iter()
        .find(|(n, _, _)| n == "gateway")
        .map(|(_, e, _)| e.clone())
        .unwrap();
    let gw2 = mesh.launch("gateway", extra).await;
    assert_ne!(gw1, gw2);

    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw1, "R", "r@example.com", "R").await;
    let (team, token) = (
        me["team"]["id"].clone(),
        me["accessToken"].as_str().unwrap().to_owned(),
    );
    let (_, other) = create_team(&http, &gw2, "O", "o@example.com", "O").await;

    let mut sio = SioClient::start().await;
    for (name, gw) in [
        ("one", &gw1),
        ("two", &gw2),
        ("late", &gw1),
        ("stranger", &gw2),
    ] {
        sio.connect(name, gw).await;
    }
    for name in ["one", "two", "late"] {
        join(&mut sio, name, json!({"teamId": team, "token": token})).await;
    }
    let lines = 1500;
    let total = expected_lines(lines);
    let (_, spawned) = post(
        &http,
        &format!("{gw2}/api/agent/spawn"),
        Some(&token),
        json!({"task": format!("lines={lines} delay_ms=2 resume me")}),
    )
    .await;
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();

    // `late` sees the first lines, then drops off; it comes back after a thousand more.
    let mut late = Vec::new();
    collect_until(&mut sio, "late", &agent, &mut late, |e, _| {
        e == "agent_output"
    })
    .await;
    while late.len() < 50 {
        collect_until(&mut sio, "late", &agent, &mut late, |e, _| {
            e == "agent_output"
        })
        .await;
    }
    sio.close("late").await;
    let last = *late.last().unwrap();
    let mut one = Vec::new();
    collect_until(&mut sio, "one", &agent, &mut one, |e, d| {
        e == "agent_output" && d["seq"].as_u64() >= Some(last + 1000)
    })
    .await;

    sio.connect("back", &gw1).await;
    let ack = join(
        &mut sio,
        "back",
        json!({"teamId": team, "token": token, "since": {&agent: last}}),
    )
    .await;
    assert!(
        ack["resumed"][&agent]["replayed"].as_u64().unwrap() >= 1000,
        "{ack}"
    );
    let mut back = Vec::new();
    collect_until(&mut sio, "back", &agent, &mut back, is_completed).await;
    assert_seqs(
        &back,
        last + 1..total,
        "exactly the missed lines, then the live ones",
    );

    // Each replica's client saw every line once, in order.
    collect_until(&mut sio, "one", &agent, &mut one, is_completed).await;
    let mut two = Vec::new();
    collect_until(&mut sio, "two", &agent, &mut two, is_completed).await;
    assert_seqs(&one, 0..total, "replica one");
    assert_seqs(&two, 0..total, "replica two");

    // Another team can neither join this room nor resume this agent.
    let ack = sio
        .emit_ack(
            "stranger",
            "join_team",
            json!({"teamId": team, "token": other["accessToken"]}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    let ack = join(&mut sio, "stranger", json!({"teamId": other["team"]["id"], "token": other["accessToken"], "since": {&agent: -1}})).await;
    assert_eq!(ack["resumed"][&agent]["error"], "not_found");
    let leaked: Vec<_> = sio
        .drain_events("stranger")
        .into_iter()
        .filter(|(_, d)| d["agentId"] == agent.as_str())
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// A client that stops reading does not hold up the others and does not grow the gateway's
/// memory past its bound; when it reads again it is told to resync and recovers from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_is_told_to_resync_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (proc, gw) = start_standalone(dir.path()).await;
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw, "P", "p@example.com", "P").await;
    let (team, token) = (
        me["team"]["id"].clone(),
        me["accessToken"].as_str().unwrap().to_owned(),
    );
    let mut fast = SioClient::start().await;
    let mut slow = SioClient::start().await;
    fast.connect("fast", &gw).await;
    slow.connect("slow", &gw).await;
    for (sio, name) in [(&mut fast, "fast"), (&mut slow, "slow")] {
        join(sio, name, json!({"teamId": team, "token": token})).await;
    }
    // The reading client does what a real one does if the gateway itself falls behind (a
    // `fanout_gap`): it rejoins from its last seq.
    fast.resume_on_resync("fast", json!({"teamId": team, "token": token}))
        .await;
    // The slow client stops reading entirely.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &slow.pid().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());

    let lines = 12_000;
    let total = expected_lines(lines);
    let (_, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&token),
        json!({"task": format!("lines={lines} line_bytes=2000 flood")}),
    )
    .await;
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    collect_until(&mut fast, "fast", &agent, &mut seen, |e, d| {
        e == "agent_output" && d["seq"].as_u64() == Some(total - 1)
    })
    .await;
    assert_seqs(
        &seen,
        0..total,
        "the reading client got everything, in order",
    );

    // About 24 MB went out while one client was not reading; the gateway did not keep it all.
    let peak_kib = peak_rss_kib(proc.child.id().unwrap()).unwrap();
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");

    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &slow.pid().to_string()])
        .status()
        .unwrap();
    assert!(resumed.success());
    // It gets what was queued for it, in order, then the word to resync.
    let mut got: Vec<u64> = Vec::new();
    loop {
        let v = slow
            .recv_where("event", |v| v["op"] == "event" && v["client"] == "slow")
            .await;
        match v["event"].as_str().unwrap_or_default() {
            "agent_output" if v["data"]["agentId"] == agent.as_str() => {
                got.push(v["data"]["seq"].as_u64().unwrap())
            }
            "resync" => {
                let reason = &v["data"]["reason"];
                assert!(reason == "slow_consumer" || reason == "fanout_gap", "{v}");
                break;
            }
            _ => {}
        }
    }
    assert!((got.len() as u64) < total, "it really fell behind");
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "what it got was a gap-free prefix"
    );
    let last = got.last().map_or(-1, |s| i64::try_from(*s).unwrap());
    join(
        &mut slow,
        "slow",
        json!({"teamId": team, "token": token, "since": {&agent: last}}),
    )
    .await;
    collect_until(&mut slow, "slow", &agent, &mut got, |e, d| {
        e == "agent_output" && d["seq"].as_u64() == Some(total - 1)
    })
    .await;
    assert_seqs(&got, 0..total, "recovered from history: every line once");
}

/// The gateway accepts only so many Socket.io connections; past that a connect is refused with
/// a message, and a freed place can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) =
        start_standalone_with(dir.path(), &[("COVIBE_LIMITS__MAX_SOCKETS", "2")]).await;
    let mut sio = SioClient::start().await;
    sio.connect("a", &gw).await;
    sio.connect("b", &gw).await;
    let refused = sio.try_connect("c", &gw).await;
    assert_eq!(refused["op"], "connect_error", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("connection limit"),
        "{refused}"
    );
    sio.close("a").await;
    // The place is free once the server has seen the disconnect.
    let mut reply = Value::Null;
    for attempt in 0..50 {
        reply = sio.try_connect(&format!("d{attempt}"), &gw).await;
        if reply["op"] == "connected" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reply["op"], "connected", "{reply}");
}

/// An access token expires while its socket stays joined: the live stream goes on, actions over
/// the socket are refused with what to do, and joining again with a fresh token restores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_socket_outlives_its_token_and_takes_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) =
        start_standalone_with(dir.path(), &[("COVIBE_AUTH__ACCESS_TTL_SECS", "4")]).await;
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw, "T", "t@example.com", "T").await;
    let team = me["team"]["id"].clone();
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let refresh = me["refreshToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("phone", &gw).await;
    let ack = join(&mut sio, "phone", json!({"teamId": team, "token": token})).await;
    let expires = ack["tokenExpiresAt"].as_u64().unwrap();

    // Past the token's expiry (the loop is a hang guard, not a speed claim).
    while u64::try_from(covibe_types::now_ms()).unwrap() <= expires + 50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ack = sio
        .emit_ack("phone", "chat_message", json!({"message": "hello?"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "unauthenticated", "{ack}");
    let error = ack["error"]["message"].as_str().unwrap();
    assert!(
        error.contains("expired") && error.contains("join_team"),
        "{error}"
    );

    // The socket still gets the team's events: a message posted with a fresh token arrives.
    let (status, fresh) = post(
        &http,
        &format!("{gw}/api/auth/refresh"),
        None,
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    let fresh = fresh["accessToken"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &http,
        &format!("{gw}/api/chat/message"),
        Some(&fresh),
        json!({"message": "from the laptop"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let event = sio.next_event("phone", "chat_message").await;
    assert_eq!(event["message"], "from the laptop");

    // Joining again with the fresh token restores what the socket may do.
    let ack = join(&mut sio, "phone", json!({"teamId": team, "token": fresh})).await;
    assert!(ack["tokenExpiresAt"].as_u64().unwrap() > expires, "{ack}");
    let ack = sio
        .emit_ack("phone", "chat_message", json!({"message": "back"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["message"]["message"], "back", "{ack}");
}

/// Browsers start on HTTP long-polling and move to a WebSocket; behind a proxy that blocks
/// WebSockets they stay on polling. Either way a member joins, acts over the socket, and sees
/// every line of an agent once and in order, the owner's copy saying it may control it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_polling_and_after_the_upgrade_see_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) = start_standalone(dir.path()).await;
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw, "P", "p@example.com", "P").await;
    let team = me["team"]["id"].clone();
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    for (name, transports) in [
        ("upgrading", json!(["polling", "websocket"])),
        ("polling", json!(["polling"])),
    ] {
        let reply = sio
            .try_connect_with(name, &gw, json!({"transports": transports}))
            .await;
        assert_eq!(reply["op"], "connected", "{reply}");
        join(&mut sio, name, json!({"teamId": team, "token": token})).await;
    }
    let lines = 300;
    let total = expected_lines(lines);
    let ack = sio
        .emit_ack(
            "polling",
            "agent_spawn",
            json!({"task": format!("lines={lines} delay_ms=1 over polling")}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let agent = ack["agent"]["id"].as_str().unwrap().to_owned();
    for name in ["upgrading", "polling"] {
        let mut got = Vec::new();
        let viewer_copies = std::cell::Cell::new(0);
        collect_until(&mut sio, name, &agent, &mut got, |e, d| {
            if e == "agent_output" && d["canControl"] != true {
                viewer_copies.set(viewer_copies.get() + 1);
            }
            e == "agent_output" && d["seq"].as_u64() == Some(total - 1)
        })
        .await;
        assert_seqs(&got, 0..total, name);
        assert_eq!(
            viewer_copies.get(),
            0,
            "{name}: the owner's lines say canControl"
        );
    }
    assert_eq!(sio.transport("upgrading").await, "websocket");
    assert_eq!(sio.transport("polling").await, "polling");
}
