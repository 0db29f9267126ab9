//! Agents end to end: the thin path, control, limits, the dial-in strategy, layering.

use std::collections::BTreeMap;
use std::path::Path;

use covibe_testkit::{Proc, SioClient, TestDb, clean_command, fake_agent_command};
use serde_json::{Value, json};

use crate::support::*;

/// The walk-through of the README, checked: sign-up, invite, Socket.io join, spawn, every
/// output line in order to every member, the owner alone able to control, and nothing for
/// another team.
struct Team {
    sio: SioClient,
    sarah_token: String,
    miguel_token: String,
}

async fn thin_path(gw: &str) -> Team {
    let http = reqwest::Client::new();
    let (status, sarah) = create_team(&http, gw, "Rocket", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let sarah_id = sarah["user"]["id"].as_str().unwrap().to_owned();
    let sarah_token = sarah["accessToken"].as_str().unwrap().to_owned();
    assert!(sarah["refreshToken"].as_str().unwrap().len() > 20);
    let code = sarah["inviteCode"].as_str().unwrap();

    let (status, miguel) = post(
        &http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": code, "email": "miguel@example.com", "displayName": "Miguel"}),
    )
    .await;
    assert_eq!(status, 200, "{miguel}");
    assert_eq!(miguel["team"]["id"], team_id.as_str());
    let miguel_token = miguel["accessToken"].as_str().unwrap().to_owned();

    let (status, bad) = post(
        &http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": "ZZZZ-ZZZZ-ZZZZ-ZZZZ", "email": "eve@example.com", "displayName": "Eve"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(bad["error"]["code"], "unauthenticated");

    let (_, chen) = create_team(&http, gw, "Other", "chen@example.com", "Chen").await;
    let chen_team = chen["team"]["id"].as_str().unwrap().to_owned();
    let chen_token = chen["accessToken"].as_str().unwrap().to_owned();

    let mut sio = SioClient::start().await;
    for name in ["sarah", "miguel", "chen"] {
        sio.connect(name, gw).await;
    }
    join(
        &mut sio,
        "sarah",
        json!({"teamId": team_id, "token": sarah_token}),
    )
    .await;
    join(
        &mut sio,
        "miguel",
        json!({"teamId": team_id, "token": miguel_token}),
    )
    .await;
    // Chen may not join Rocket's room with his own token, nor with a forged one.
    let ack = sio
        .emit_ack(
            "chen",
            "join_team",
            json!({"teamId": team_id, "token": chen_token}),
        )
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "permission_denied", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a member")
    );
    let ack = sio
        .emit_ack(
            "chen",
            "join_team",
            json!({"teamId": team_id, "token": "not-a-jwt"}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    join(
        &mut sio,
        "chen",
        json!({"teamId": chen_team, "token": chen_token}),
    )
    .await;

    // A spawn without a valid token is refused with a JSON error.
    let (status, body) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        None,
        json!({"task": "x"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, _) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some("garbage"),
        json!({"task": "x"}),
    )
    .await;
    assert_eq!(status, 401);

    let lines = 40;
    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&sarah_token),
        json!({"task": format!("lines={lines} delay_ms=2 add a login page")}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = &spawned["agent"];
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["owner"], sarah_id.as_str());
    assert!(agent["task"].as_str().unwrap().contains("add a login page"));
    assert!(["pending", "starting", "running"].contains(&agent["status"].as_str().unwrap()));

    // Both members see every line, in order, then `completed`; only Sarah may control it.
    let total = expected_lines(lines);
    for (member, can_control) in [("sarah", true), ("miguel", false)] {
        let mut seqs = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let id = agent_id.clone();
            let m = member.to_owned();
            let event = sio
                .recv_where("agent event", move |v| {
                    v["op"] == "event"
                        && v["client"] == m.as_str()
                        && v["data"]["agentId"] == id.as_str()
                })
                .await;
            let data = &event["data"];
            match event["event"].as_str().unwrap() {
                "agent_output" => {
                    assert_eq!(data["owner"], sarah_id.as_str());
                    assert_eq!(data["canControl"], can_control, "{member}: {data}");
                    assert!(
                        data["data"].as_str().unwrap().starts_with('{'),
                        "one JSON line per event"
                    );
                    // Each line also arrives understood, so clients need not parse stream-json.
                    let kind = data["event"]["kind"].as_str().unwrap().to_owned();
                    match seqs.len() {
                        0 => {
                            assert_eq!(data["event"]["model"], "claude-sonnet-4-5", "init: {data}")
                        }
                        2 => assert_eq!(
                            data["event"]["blocks"][0]["name"], "Bash",
                            "tool use: {data}"
                        ),
                        n if n as u64 == total - 1 => assert_eq!(kind, "result"),
                        _ => assert!(["assistant", "user"].contains(&kind.as_str()), "{data}"),
                    }
                    if seqs.is_empty() {
                        assert_eq!(kind, "init");
                    }
                    seqs.push(data["seq"].as_u64().unwrap());
                }
                "agent_status" => {
                    let status = data["status"].as_str().unwrap().to_owned();
                    let done = status == "completed" || status == "failed";
                    if done {
                        assert_eq!(data["exitCode"], 0, "{data}");
                    }
                    statuses.push(status);
                    if done {
                        break;
                    }
                }
                other => panic!("unexpected event {other}"),
            }
        }
        assert_seqs(
            &seqs,
            0..total,
            &format!("{member}: gap-free, in order, once each"),
        );
        let lifecycle: Vec<&str> = statuses
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "pending")
            .collect();
        assert_eq!(lifecycle, ["starting", "running", "completed"], "{member}");
    }

    // The history agrees with what was streamed, and the list shows the agent finished.
    let (status, page) = get(
        &http,
        &format!("{gw}/api/agent/{agent_id}/output?fromSeq=0&limit=1000"),
        &miguel_token,
    )
    .await;
    assert_eq!(status, 200);
    let chunks = page["chunks"].as_array().unwrap();
    assert_eq!(chunks.len() as u64, total);
    assert!(
        chunks[0]["data"]
            .as_str()
            .unwrap()
            .contains("\"subtype\":\"init\"")
    );
    assert!(
        chunks[chunks.len() - 1]["data"]
            .as_str()
            .unwrap()
            .contains("total_cost_usd")
    );
    let (_, list) = get(&http, &format!("{gw}/api/agent/list"), &miguel_token).await;
    let listed: BTreeMap<&str, &str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed.get(agent_id.as_str()), Some(&"completed"));
    let (_, one) = get(&http, &format!("{gw}/api/agent/{agent_id}"), &miguel_token).await;
    assert!(
        one["agent"]["costUsd"].as_f64().unwrap() > 0.0,
        "the final cost is kept: {one}"
    );
    assert_eq!(one["agent"]["turns"], lines + 2);
    assert!(
        !one["agent"]["vmId"].as_str().unwrap().is_empty(),
        "the VM it ran on is recorded"
    );
    assert_eq!(
        chunks[0]["event"]["kind"], "init",
        "history carries the understood event too"
    );

    // Another team sees nothing of it: no events, no history, not in its list.
    let leaked: Vec<_> = sio
        .drain_events("chen")
        .into_iter()
        .filter(|(_, d)| d["agentId"].is_string())
        .collect();
    assert!(leaked.is_empty(), "team B received {leaked:?}");
    let (status, _) = get(
        &http,
        &format!("{gw}/api/agent/{agent_id}/output?fromSeq=0"),
        &chen_token,
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = get(&http, &format!("{gw}/api/agent/list"), &chen_token).await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 0);
    Team {
        sio,
        sarah_token,
        miguel_token,
    }
}

/// Only the owner controls an agent: a teammate's kill (REST or Socket.io) is refused and the
/// agent keeps running; the owner's input reaches it; the owner's kill stops it even though it
/// ignores SIGTERM.
async fn control_path(gw: &str, team: &mut Team) {
    let http = reqwest::Client::new();
    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&team.sarah_token),
        json!({"task": "lines=1 ignore_term wait_stdin wait for input"}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    let sio = &mut team.sio;
    await_event(sio, "miguel", &agent, |e, d| {
        e == "agent_status" && d["status"] == "running"
    })
    .await;

    let (status, body) = delete(
        &http,
        &format!("{gw}/api/agent/{agent}"),
        &team.miguel_token,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");
    let ack = sio
        .emit_ack(
            "miguel",
            "agent_control",
            json!({"agentId": agent, "command": "kill"}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["error"]["code"], "permission_denied", "{ack}");
    assert!(
        ack["error"]["message"].as_str().unwrap().contains("owner"),
        "{ack}"
    );

    // Still alive: the owner's input reaches it and its echo reaches everyone.
    let ack = sio
        .emit_ack(
            "sarah",
            "agent_control",
            json!({"agentId": agent, "command": "input", "data": "ship it"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let echo = await_event(sio, "miguel", &agent, |e, d| {
        e == "agent_output"
            && d["data"]
                .as_str()
                .unwrap_or_default()
                .contains("input: ship it")
    })
    .await;
    assert_eq!(echo["canControl"], false);

    let ack = sio
        .emit_ack(
            "sarah",
            "agent_control",
            json!({"agentId": agent, "command": "explode"}),
        )
        .await;
    assert_eq!(ack["ok"], false);

    let (status, _) = delete(&http, &format!("{gw}/api/agent/{agent}"), &team.sarah_token).await;
    assert_eq!(status, 202);
    let ended = await_event(sio, "miguel", &agent, |e, d| {
        e == "agent_status"
            && ["killed", "failed", "completed"].contains(&d["status"].as_str().unwrap_or_default())
    })
    .await;
    assert_eq!(ended["status"], "killed", "{ended}");
    let (status, body) = delete(&http, &format!("{gw}/api/agent/{agent}"), &team.sarah_token).await;
    assert_eq!(
        status, 409,
        "a finished agent cannot be killed again: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_thin_path_and_first_event_never_missed() {
    let dir = tempfile::tempdir().unwrap();
    // Hundreds of handshakes from one address: past the default rate a real client keeps to.
    let (_proc, gw) = start_standalone_with(dir.path(), ROOMY).await;
    let mut team = thin_path(&gw).await;
    control_path(&gw, &mut team).await;

    // Hundreds of clients one after another, each emitting join_team the moment it connects:
    // every one is answered (handlers are registered before CONNECT is sent).
    let http = reqwest::Client::new();
    let (_, team) = create_team(&http, &gw, "Stress", "s@example.com", "S").await;
    let mut sio = SioClient::start().await;
    let data = json!({"teamId": team["team"]["id"], "token": team["accessToken"]});
    let (acked, failed) = sio.stress(&gw, 300, "join_team", data).await;
    assert_eq!(acked, 300, "unanswered connects: {failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_process_thin_path_over_postgres_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let mesh = start_multi_process(dir.path(), &db.url).await;
    let mut team = thin_path(&mesh.gateway).await;
    control_path(&mesh.gateway, &mut team).await;
}

/// A member may run only so many agents at once and spawn only so many a minute; the limits
/// answer with a clear error and leave the member's running agents alone. (This mesh runs on
/// three worker threads, the multi-thread runtime a raised `workers` builds; the others on one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_limits_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [
        ("COVIBE_LIMITS__MAX_RUNNING_AGENTS", "2"),
        ("COVIBE_LIMITS__SPAWNS_PER_MINUTE", "3"),
        ("COVIBE_WORKERS", "3"),
    ];
    let (_proc, gw) = start_standalone_with(dir.path(), &limits).await;
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw, "Limits", "l@example.com", "L").await;
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let spawn = async |task: &str| {
        post(
            &http,
            &format!("{gw}/api/agent/spawn"),
            Some(&token),
            json!({"task": task}),
        )
        .await
    };
    let (a, first) = spawn("wait_stdin one").await;
    let (b, _) = spawn("wait_stdin two").await;
    assert_eq!((a, b), (201, 201));
    let (status, body) = spawn("wait_stdin three").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running"),
        "{body}"
    );

    // Ending one makes room, until the per-minute budget is spent.
    let first = first["agent"]["id"].as_str().unwrap();
    let response = http
        .delete(format!("{gw}/api/agent/{first}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    wait_for_status(&http, &gw, &token, first, "killed").await;
    let (status, body) = spawn("wait_stdin four").await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = get(&http, &format!("{gw}/api/agent/list"), &token).await;
    for agent in list["agents"].as_array().unwrap() {
        if agent["status"] == "running" || agent["status"] == "starting" {
            let id = agent["id"].as_str().unwrap();
            http.delete(format!("{gw}/api/agent/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
        }
    }
    let response = loop {
        let response = http
            .post(format!("{gw}/api/agent/spawn"))
            .bearer_auth(&token)
            .json(&json!({"task": "five"}))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() != 409 {
            break response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(response.status().as_u16(), 429);
    // When the oldest spawn of the minute leaves the window: within the minute.
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// The `dial_in` strategy end to end: a VM registered over REST, its token minted, a
/// `covibe vm-agent daemon` dialled in with it (the token in its environment only), and an
/// agent spawned on that VM streams its output and completes exactly as with `local`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_dial_in_vm_runs_spawned_agents() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(Path::new(COVIBE));
    cmd.arg("standalone")
        .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
        .env("COVIBE_DATA_DIR", dir.path())
        .env("COVIBE_AGENT_COMMAND", fake_agent_command())
        .env("COVIBE_PROJECT_DIR", dir.path());
    let mut standalone = Proc::spawn("standalone", cmd);
    // Announced before the gateway.
    let connector = standalone.wait_for_url("vm-connector listening on").await;
    let gw = standalone.wait_for_url("gateway listening on").await;
    let mut w = watcher(&gw).await;

    let (status, body) = post(
        &w.http,
        &format!("{gw}/api/vm/register"),
        Some(&w.token),
        json!({"name": "behind a NAT", "strategy": "dial_in"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["vm"]["strategy"], "dial_in");
    let vm_id = body["vm"]["id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &w.http,
        &format!("{gw}/api/vm/token"),
        Some(&w.token),
        json!({"vmId": vm_id}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let vm_token = body["vmToken"].as_str().unwrap().to_owned();
    assert!(vm_token.len() >= 43);

    // No daemon yet: the spawn fails (the gateway does not pass on `unavailable` messages).
    let (status, body) = post(
        &w.http,
        &format!("{gw}/api/agent/spawn"),
        Some(&w.token),
        json!({"task": "lines=3 hello", "vmId": vm_id}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    let vm_dir = dir.path().join("vm");
    let mut daemon = dial_in_daemon(&connector, &vm_id, &vm_token, &vm_dir).await;

    let (status, body) = post(
        &w.http,
        &format!("{gw}/api/agent/spawn"),
        Some(&w.token),
        json!({"task": "lines=3 hello", "vmId": vm_id}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let agent = body["agent"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["agent"]["vmId"], vm_id.as_str());
    let mut seqs = Vec::new();
    collect_until(&mut w.sio, "viewer", &agent, &mut seqs, is_completed).await;
    let total = expected_lines(3);
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    wait_for_status(&w.http, &gw, &w.token, &agent, "completed").await;
    // The run went through the VM's own spool directory.
    assert!(
        vm_dir
            .join("agent_logs")
            .join(format!("{agent}.log"))
            .exists()
    );
    daemon.kill().await;
    standalone.kill().await;
}
