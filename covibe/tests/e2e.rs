//! The thin path end to end, with real processes: the `covibe` binary (standalone, and one
//! process per service over PostgreSQL and Redis), the vm-agent it starts, the fake Claude Code
//! script, real HTTP and real Socket.io clients (Node's socket.io-client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use covibe_testkit::{
    Proc, RedisServer, SioClient, TestDb, clean_command, fake_agent_command, free_port, redis_url,
};
use serde_json::{Value, json};

const COVIBE: &str = env!("CARGO_BIN_EXE_covibe");

/// Output lines the fake agent prints for `lines=N`: init, text, tool use, tool result, N, result.
fn expected_lines(n: u64) -> u64 {
    n + 5
}

async fn start_standalone(dir: &Path) -> (Proc, String) {
    start_standalone_with(dir, &[]).await
}

async fn start_standalone_with(dir: &Path, extra: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = clean_command(Path::new(COVIBE));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.arg("standalone")
        .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
        .env("COVIBE_DATA_DIR", dir)
        .env("COVIBE_AGENT_COMMAND", fake_agent_command())
        .env("COVIBE_PROJECT_DIR", dir);
    let mut proc = Proc::spawn("standalone", cmd);
    let url = proc.wait_for_url("gateway listening on").await;
    (proc, url)
}

/// Extra environment of one service process.
type Env = Vec<(String, String)>;

/// Every service in its own process, over PostgreSQL and Redis, talking gRPC over loopback.
/// The orchestrator listens on a fixed port so it can be killed and started again in place.
struct Mesh {
    dir: PathBuf,
    database_url: String,
    redis_url: String,
    orchestrator_addr: String,
    procs: Vec<(String, Env, Proc)>,
    gateway: String,
}

impl Mesh {
    fn command(&self, name: &str, extra: &[(String, String)]) -> tokio::process::Command {
        let mut cmd = clean_command(Path::new(COVIBE));
        cmd.arg(name)
            .env("COVIBE_GRPC_ADDR", "127.0.0.1:0")
            .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
            .env("COVIBE_DATA_DIR", &self.dir)
            .env("COVIBE_DATABASE_URL", &self.database_url)
            .env("COVIBE_REDIS_URL", &self.redis_url)
            .env("COVIBE_AGENT_COMMAND", fake_agent_command())
            .env("COVIBE_PROJECT_DIR", &self.dir);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    async fn launch(&mut self, name: &str, extra: Vec<(String, String)>) -> String {
        let mut proc = Proc::spawn(name, self.command(name, &extra));
        let url = proc.wait_for_url(&format!("{name} listening on")).await;
        self.procs.push((name.to_owned(), extra, proc));
        url
    }

    async fn start(dir: &Path, database_url: &str, redis_url: &str) -> Self {
        let mut mesh = Self {
            dir: dir.to_owned(),
            database_url: database_url.to_owned(),
            redis_url: redis_url.to_owned(),
            orchestrator_addr: format!("127.0.0.1:{}", free_port()),
            procs: Vec::new(),
            gateway: String::new(),
        };
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let team = mesh.launch("team", Vec::new()).await;
        let auth = mesh
            .launch("auth", env(&[("COVIBE_ENDPOINTS__TEAM", &team)]))
            .await;
        let vmc = mesh.launch("vm-connector", Vec::new()).await;
        let orch_addr = mesh.orchestrator_addr.clone();
        let orch = mesh
            .launch(
                "orchestrator",
                env(&[
                    ("COVIBE_ENDPOINTS__VM_CONNECTOR", &vmc),
                    ("COVIBE_GRPC_ADDR", &orch_addr),
                ]),
            )
            .await;
        let preview = mesh.launch("preview", Vec::new()).await;
        mesh.gateway = mesh
            .launch(
                "gateway",
                env(&[
                    ("COVIBE_ENDPOINTS__AUTH", &auth),
                    ("COVIBE_ENDPOINTS__TEAM", &team),
                    ("COVIBE_ENDPOINTS__ORCHESTRATOR", &orch),
                    ("COVIBE_ENDPOINTS__VM_CONNECTOR", &vmc),
                    ("COVIBE_ENDPOINTS__PREVIEW", &preview),
                ]),
            )
            .await;
        mesh
    }

    /// Kills a service with SIGKILL (no drain, no goodbye).
    async fn kill(&mut self, name: &str) -> Vec<(String, String)> {
        let at = self.procs.iter().position(|(n, _, _)| n == name).unwrap();
        let (_, extra, mut proc) = self.procs.remove(at);
        proc.kill().await;
        let _ = proc.child.wait().await;
        extra
    }
}

async fn start_multi_process(dir: &Path, database_url: &str) -> Mesh {
    Mesh::start(dir, database_url, &redis_url()).await
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

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
    let (status, sarah) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Rocket", "email": "sarah@example.com", "displayName": "Sarah"}),
    )
    .await;
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

    let (_, chen) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Other", "email": "chen@example.com", "displayName": "Chen"}),
    )
    .await;
    let chen_team = chen["team"]["id"].as_str().unwrap().to_owned();
    let chen_token = chen["accessToken"].as_str().unwrap().to_owned();

    let mut sio = SioClient::start().await;
    for name in ["sarah", "miguel", "chen"] {
        sio.connect(name, gw).await;
    }
    let ack = sio
        .emit_ack(
            "sarah",
            "join_team",
            json!({"teamId": team_id, "token": sarah_token}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = sio
        .emit_ack(
            "miguel",
            "join_team",
            json!({"teamId": team_id, "token": miguel_token}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Chen may not join Rocket's room with his own token, nor with a forged one.
    let ack = sio
        .emit_ack(
            "chen",
            "join_team",
            json!({"teamId": team_id, "token": chen_token}),
        )
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(ack["error"].as_str().unwrap().contains("not a member"));
    let ack = sio
        .emit_ack(
            "chen",
            "join_team",
            json!({"teamId": team_id, "token": "not-a-jwt"}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    let ack = sio
        .emit_ack(
            "chen",
            "join_team",
            json!({"teamId": chen_team, "token": chen_token}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

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

async fn delete(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = http.delete(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits for an event about `agent` seen by `member` that `pred` accepts.
async fn await_event(
    sio: &mut SioClient,
    member: &str,
    agent: &str,
    pred: impl Fn(&str, &Value) -> bool,
) -> Value {
    let (m, a) = (member.to_owned(), agent.to_owned());
    sio.recv_where("agent event", move |v| {
        v["op"] == "event"
            && v["client"] == m.as_str()
            && v["data"]["agentId"] == a.as_str()
            && pred(v["event"].as_str().unwrap_or_default(), &v["data"])
    })
    .await["data"]
        .clone()
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
    assert!(ack["error"].as_str().unwrap().contains("owner"), "{ack}");

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
    let (_proc, gw) = start_standalone(dir.path()).await;
    let mut team = thin_path(&gw).await;
    control_path(&gw, &mut team).await;

    // Hundreds of clients one after another, each emitting join_team the moment it connects:
    // every one is answered (handlers are registered before CONNECT is sent).
    let http = reqwest::Client::new();
    let (_, team) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Stress", "email": "s@example.com", "displayName": "S"}),
    )
    .await;
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

/// No service or gateway crate depends on another service's crate: they talk through `proto/`.
#[test]
fn layering() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(covibe_testkit::workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = [
        "covibe-auth",
        "covibe-team",
        "covibe-orchestrator",
        "covibe-vm-connector",
        "covibe-preview",
        "covibe-gateway",
    ];
    let mut checked = 0;
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let is_service = services.contains(&name);
        let is_base = name == "covibe-proto"
            || package["manifest_path"]
                .as_str()
                .unwrap()
                .contains("/crates/");
        if !(is_service || is_base) {
            continue;
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            let dep = dep["name"].as_str().unwrap();
            assert!(
                !services.contains(&dep),
                "{name} depends on {dep}: call it through proto/ instead"
            );
        }
    }
    assert!(checked >= 13, "only {checked} crates checked");
}

/// A member may run only so many agents at once and spawn only so many a minute; the limits
/// answer with a clear error and leave the member's running agents alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_limits_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [
        ("COVIBE_LIMITS__MAX_RUNNING_AGENTS", "2"),
        ("COVIBE_LIMITS__SPAWNS_PER_MINUTE", "3"),
    ];
    let (_proc, gw) = start_standalone_with(dir.path(), &limits).await;
    let http = reqwest::Client::new();
    let (_, me) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Limits", "email": "l@example.com", "displayName": "L"}),
    )
    .await;
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
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// Polls the agent until it has `status` (a hang guard bounds the wait, not a speed claim).
async fn wait_for_status(http: &reqwest::Client, gw: &str, token: &str, agent: &str, status: &str) {
    for _ in 0..1200 {
        let (_, body) = get(http, &format!("{gw}/api/agent/{agent}"), token).await;
        if body["agent"]["status"] == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("agent {agent} never became {status}");
}

/// A team with one member joined on Socket.io, ready to spawn and watch.
struct Watcher {
    http: reqwest::Client,
    sio: SioClient,
    token: String,
}

async fn watcher(gw: &str) -> Watcher {
    let http = reqwest::Client::new();
    let (_, me) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Faults", "email": "f@example.com", "displayName": "F"}),
    )
    .await;
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("viewer", gw).await;
    let ack = sio
        .emit_ack(
            "viewer",
            "join_team",
            json!({"teamId": me["team"]["id"], "token": token}),
        )
        .await;
    assert_eq!(ack["ok"], true);
    Watcher { http, sio, token }
}

impl Watcher {
    async fn spawn(&self, gw: &str, task: &str) -> String {
        let (status, body) = post(
            &self.http,
            &format!("{gw}/api/agent/spawn"),
            Some(&self.token),
            json!({"task": task}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["agent"]["id"].as_str().unwrap().to_owned()
    }

    /// Live `agent_output` seqs of `agent` received so far, waiting until at least `at_least`.
    async fn live_until(&mut self, agent: &str, seqs: &mut Vec<u64>, at_least: usize) {
        while seqs.len() < at_least {
            let data =
                await_event(&mut self.sio, "viewer", agent, |e, _| e == "agent_output").await;
            seqs.push(data["seq"].as_u64().unwrap());
        }
    }

    /// Everything else received live so far.
    fn drain_live(&mut self, agent: &str, seqs: &mut Vec<u64>) -> Vec<String> {
        let mut others = Vec::new();
        for (event, data) in self.sio.drain_events("viewer") {
            if event == "agent_output" && data["agentId"] == agent {
                seqs.push(data["seq"].as_u64().unwrap());
            } else {
                others.push(event);
            }
        }
        others
    }

    /// What a reconnecting viewer does: ask the history from its first missing seq on.
    async fn history_from(&self, gw: &str, agent: &str, from: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut next = from;
        loop {
            let (status, page) = get(
                &self.http,
                &format!("{gw}/api/agent/{agent}/output?fromSeq={next}&limit=5000"),
                &self.token,
            )
            .await;
            assert_eq!(status, 200, "{page}");
            let chunks = page["chunks"].as_array().unwrap();
            if chunks.is_empty() {
                return seqs;
            }
            seqs.extend(chunks.iter().map(|c| c["seq"].as_u64().unwrap()));
            next = page["nextSeq"].as_u64().unwrap();
        }
    }
}

/// Live seqs must be strictly increasing (never a duplicate, never out of order); together with
/// the history from the first one missing they must be exactly 0..total.
fn assert_exactly_once(live: &[u64], history: &[u64], first_missing: u64, total: u64) {
    assert!(
        live.windows(2).all(|w| w[0] < w[1]),
        "live output out of order or duplicated"
    );
    let mut all: Vec<u64> = live
        .iter()
        .copied()
        .filter(|s| *s < first_missing)
        .collect();
    all.extend(history);
    assert_seqs(&all, 0..total, "every line exactly once, in order");
}

fn first_missing(live: &[u64]) -> u64 {
    let mut next = 0;
    for seq in live {
        if *seq != next {
            break;
        }
        next += 1;
    }
    next
}

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
/// still served (from the database), viewers are told to resync, and the live stream goes on.
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

    let mut live = Vec::new();
    viewer.live_until(&agent, &mut live, 300).await;
    redis.restart().await;
    // The viewer is told it may have missed events, and keeps receiving new ones.
    let resync = viewer.sio.next_event("viewer", "resync").await;
    assert!(resync.is_object());
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

    let history = viewer.history_from(&gw, &agent, 0).await;
    assert_seqs(&history, 0..total, "served in full from the database");
    assert!(live.windows(2).all(|w| w[0] < w[1]), "no duplicates live");
}

/// Collects `client`'s `agent_output` seqs of `agent` until `until` returns true for an event.
async fn collect_until(
    sio: &mut SioClient,
    client: &str,
    agent: &str,
    seqs: &mut Vec<u64>,
    until: impl Fn(&str, &Value) -> bool,
) {
    loop {
        let (c, a) = (client.to_owned(), agent.to_owned());
        let v = sio
            .recv_where("event", move |v| {
                v["op"] == "event"
                    && v["client"] == c.as_str()
                    && v["data"]["agentId"] == a.as_str()
            })
            .await;
        let (event, data) = (
            v["event"].as_str().unwrap_or_default().to_owned(),
            v["data"].clone(),
        );
        if event == "agent_output" {
            seqs.push(data["seq"].as_u64().unwrap());
        }
        if until(&event, &data) {
            return;
        }
    }
}

fn is_completed(event: &str, data: &Value) -> bool {
    event == "agent_status" && data["status"] == "completed"
}

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
    let (_, me) = post(
        &http,
        &format!("{gw1}/api/team/create"),
        None,
        json!({"name": "R", "email": "r@example.com", "displayName": "R"}),
    )
    .await;
    let (team, token) = (
        me["team"]["id"].clone(),
        me["accessToken"].as_str().unwrap().to_owned(),
    );
    let (_, other) = post(
        &http,
        &format!("{gw2}/api/team/create"),
        None,
        json!({"name": "O", "email": "o@example.com", "displayName": "O"}),
    )
    .await;

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
        let ack = sio
            .emit_ack(name, "join_team", json!({"teamId": team, "token": token}))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
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
    let ack = sio
        .emit_ack(
            "back",
            "join_team",
            json!({"teamId": team, "token": token, "since": {&agent: last}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
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
    let ack = sio
        .emit_ack("stranger", "join_team", json!({"teamId": other["team"]["id"], "token": other["accessToken"], "since": {&agent: -1}}))
        .await;
    assert_eq!(ack["ok"], true);
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
    let (_, me) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "P", "email": "p@example.com", "displayName": "P"}),
    )
    .await;
    let (team, token) = (
        me["team"]["id"].clone(),
        me["accessToken"].as_str().unwrap().to_owned(),
    );
    let mut fast = SioClient::start().await;
    let mut slow = SioClient::start().await;
    fast.connect("fast", &gw).await;
    slow.connect("slow", &gw).await;
    for (sio, name) in [(&mut fast, "fast"), (&mut slow, "slow")] {
        let ack = sio
            .emit_ack(name, "join_team", json!({"teamId": team, "token": token}))
            .await;
        assert_eq!(ack["ok"], true);
    }
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
    collect_until(&mut fast, "fast", &agent, &mut seen, is_completed).await;
    assert_seqs(
        &seen,
        0..total,
        "the reading client got everything, in order",
    );

    // About 24 MB went out while one client was not reading; the gateway did not keep it all.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", proc.child.id().unwrap())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
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
                assert_eq!(v["data"]["reason"], "slow_consumer");
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
    let ack = slow
        .emit_ack(
            "slow",
            "join_team",
            json!({"teamId": team, "token": token, "since": {&agent: last}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    collect_until(&mut slow, "slow", &agent, &mut got, |e, d| {
        e == "agent_output" && d["seq"].as_u64() == Some(total - 1)
    })
    .await;
    assert_seqs(&got, 0..total, "recovered from history: every line once");
}

/// One gRPC-web call as a browser makes it: `application/grpc-web+proto`, one length-prefixed
/// message in, data and trailer frames out. Returns the message bytes and the grpc-status.
async fn grpc_web_call(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    message: &[u8],
) -> (Vec<u8>, String) {
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    let mut request = http
        .post(url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    let (mut data, mut status) = (Vec::new(), header_status.unwrap_or_default());
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(frame);
            for line in trailers.split("\r\n") {
                if let Some(value) = line.strip_prefix("grpc-status:") {
                    status = value.trim().to_owned();
                }
            }
        } else {
            data.extend_from_slice(frame);
        }
        rest = &rest[5 + len..];
    }
    (data, status)
}

/// Typed clients in browsers use gRPC-web: a call succeeds with a member's token and is refused
/// as unauthenticated without one; internal RPCs are not reachable; CORS is configurable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_for_browsers() {
    use covibe_proto::orchestrator::v1::ListAgentsResponse;
    use covibe_proto::prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let origins = [("COVIBE_CORS_ALLOWED_ORIGINS", r#"["http://app.example"]"#)];
    let (_proc, gw) = start_standalone_with(dir.path(), &origins).await;
    let http = reqwest::Client::new();
    let (_, me) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "W", "email": "w@example.com", "displayName": "W"}),
    )
    .await;
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let (_, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&token),
        json!({"task": "lines=1 hello"}),
    )
    .await;
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();

    let list = format!("{gw}/covibe.orchestrator.v1.OrchestratorService/ListAgents");
    let (data, status) = grpc_web_call(&http, &list, Some(&token), &[]).await;
    assert_eq!(status, "0");
    let agents = ListAgentsResponse::decode(&data[..]).unwrap().agents;
    assert_eq!(
        agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec![agent.as_str()]
    );

    let (_, status) = grpc_web_call(&http, &list, None, &[]).await;
    assert_eq!(status, "16", "unauthenticated");
    let internal = format!("{gw}/covibe.team.v1.TeamService/CreateTeam");
    let (_, status) = grpc_web_call(&http, &internal, Some(&token), &[]).await;
    assert_eq!(status, "12", "internal RPCs are not exposed");

    let preflight = http
        .request(reqwest::Method::OPTIONS, &list)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "http://app.example"
    );
    let other = http
        .request(reqwest::Method::OPTIONS, &list)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn put(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    let response = http
        .put(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits for a `team_presence` event seen by `client` in which `want` holds for every
/// (user id, status) pair named.
async fn await_presence(sio: &mut SioClient, client: &str, want: &[(&str, &str)]) -> Value {
    let c = client.to_owned();
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(u, s)| ((*u).to_owned(), (*s).to_owned()))
        .collect();
    sio.recv_where("team_presence", move |v| {
        v["op"] == "event"
            && v["client"] == c.as_str()
            && v["event"] == "team_presence"
            && want.iter().all(|(user, status)| {
                v["data"]["users"].as_array().is_some_and(|users| {
                    users
                        .iter()
                        .any(|u| u["userId"] == user.as_str() && u["status"] == status.as_str())
                })
            })
    })
    .await["data"]
        .clone()
}

/// Chat (REST and Socket.io, live and history), presence (join, update, disconnect) and the
/// caller's VMs, for two teammates and a member of another team who sees none of it.
async fn chat_presence_and_vms(gw: &str) {
    let http = reqwest::Client::new();
    let (_, sarah) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Rocket", "email": "sarah@example.com", "displayName": "Sarah"}),
    )
    .await;
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let sarah_id = sarah["user"]["id"].as_str().unwrap().to_owned();
    let sarah_token = sarah["accessToken"].as_str().unwrap().to_owned();
    let (status, miguel) = post(
        &http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": sarah["inviteCode"], "email": "miguel@example.com", "displayName": "Miguel"}),
    )
    .await;
    assert_eq!(status, 200, "{miguel}");
    let miguel_id = miguel["user"]["id"].as_str().unwrap().to_owned();
    let miguel_token = miguel["accessToken"].as_str().unwrap().to_owned();
    let (_, chen) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Other", "email": "chen@example.com", "displayName": "Chen"}),
    )
    .await;
    let chen_team = chen["team"]["id"].as_str().unwrap().to_owned();
    let chen_id = chen["user"]["id"].as_str().unwrap().to_owned();
    let chen_token = chen["accessToken"].as_str().unwrap().to_owned();

    let mut sio = SioClient::start().await;
    for name in ["sarah", "miguel", "chen"] {
        sio.connect(name, gw).await;
    }
    // A socket that has not joined a team can neither chat nor set presence.
    let ack = sio
        .emit_ack("chen", "chat_message", json!({"message": "hi"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(ack["error"].as_str().unwrap().contains("join a team"));
    let ack = sio
        .emit_ack("chen", "presence_update", json!({"status": "away"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");

    for (name, team, token) in [
        ("sarah", &team_id, &sarah_token),
        ("miguel", &team_id, &miguel_token),
        ("chen", &chen_team, &chen_token),
    ] {
        let ack = sio
            .emit_ack(name, "join_team", json!({"teamId": team, "token": token}))
            .await;
        assert_eq!(ack["ok"], true, "{name}: {ack}");
    }
    // Joining makes both teammates online, and both see it.
    for member in ["sarah", "miguel"] {
        let presence = await_presence(
            &mut sio,
            member,
            &[(&sarah_id, "online"), (&miguel_id, "online")],
        )
        .await;
        assert_eq!(presence["users"].as_array().unwrap().len(), 2, "{presence}");
    }

    // One message over REST, one over Socket.io: both teammates get both, in order.
    let (status, posted) = post(
        &http,
        &format!("{gw}/api/chat/message"),
        Some(&sarah_token),
        json!({"message": "  hello from rest \n"}),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    let rest_message = posted["message"].clone();
    assert_eq!(rest_message["message"], "hello from rest");
    assert_eq!(rest_message["userId"], sarah_id.as_str());
    assert_eq!(rest_message["displayName"], "Sarah");
    let ack = sio
        .emit_ack(
            "miguel",
            "chat_message",
            json!({"message": "hello from socket"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let sio_message = ack["message"].clone();
    assert_eq!(sio_message["userId"], miguel_id.as_str());
    for member in ["sarah", "miguel"] {
        let first = sio.next_event(member, "chat_message").await;
        let second = sio.next_event(member, "chat_message").await;
        assert_eq!(first, rest_message, "{member}");
        assert_eq!(second, sio_message, "{member}");
    }

    // Bad messages are refused clearly, over both doors.
    let (status, body) = post(
        &http,
        &format!("{gw}/api/chat/message"),
        Some(&sarah_token),
        json!({"message": "   "}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
    let ack = sio
        .emit_ack(
            "sarah",
            "chat_message",
            json!({"message": "x".repeat(4001)}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    assert!(ack["error"].as_str().unwrap().contains("too long"), "{ack}");
    let ack = sio
        .emit_ack("sarah", "chat_message", json!({"text": "x"}))
        .await;
    assert_eq!(ack["ok"], false);

    // History has both, oldest first, and pages back with the first message as cursor.
    let (status, history) = get(&http, &format!("{gw}/api/chat/history"), &miguel_token).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"], json!([rest_message, sio_message]));
    assert_eq!(history["hasMore"], false);
    let (_, newest) = get(
        &http,
        &format!("{gw}/api/chat/history?limit=1"),
        &sarah_token,
    )
    .await;
    assert_eq!(newest["messages"], json!([sio_message]));
    assert_eq!(newest["hasMore"], true);
    let (_, older) = get(
        &http,
        &format!(
            "{gw}/api/chat/history?limit=1&before={}&beforeId={}",
            sio_message["timestamp"],
            sio_message["id"].as_str().unwrap()
        ),
        &sarah_token,
    )
    .await;
    assert_eq!(older["messages"], json!([rest_message]));
    assert_eq!(older["hasMore"], false);
    let (status, _) = get(
        &http,
        &format!("{gw}/api/chat/history?limit=lots"),
        &sarah_token,
    )
    .await;
    assert_eq!(status, 400);
    // Another team's history is its own: empty.
    let (status, theirs) = get(&http, &format!("{gw}/api/chat/history"), &chen_token).await;
    assert_eq!(status, 200);
    assert_eq!(theirs["messages"], json!([]));

    // Presence updates reach the team; nonsense is refused.
    let ack = sio
        .emit_ack("miguel", "presence_update", json!({"status": "away"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    await_presence(
        &mut sio,
        "sarah",
        &[(&sarah_id, "online"), (&miguel_id, "away")],
    )
    .await;
    let ack = sio
        .emit_ack("miguel", "presence_update", json!({"status": "asleep"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    let (status, roster) = get(&http, &format!("{gw}/api/team/presence"), &sarah_token).await;
    assert_eq!(status, 200, "{roster}");
    let statuses: BTreeMap<&str, &str> = roster["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["userId"].as_str().unwrap(), u["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([(sarah_id.as_str(), "online"), (miguel_id.as_str(), "away")])
    );
    // Miguel's only socket goes away: he is offline for the team.
    sio.close("miguel").await;
    await_presence(
        &mut sio,
        "sarah",
        &[(&sarah_id, "online"), (&miguel_id, "offline")],
    )
    .await;

    // The other team saw no chat and no presence of Rocket's.
    for (event, data) in sio.drain_events("chen") {
        assert_ne!(event, "chat_message", "leaked: {data}");
        if event == "team_presence" {
            let users = data["users"].as_array().unwrap();
            assert!(
                users.iter().all(|u| u["userId"] == chen_id.as_str()),
                "leaked: {data}"
            );
        }
    }

    // VMs: each member lists, registers and renames their own only.
    let (status, list) = get(&http, &format!("{gw}/api/vm/list"), &sarah_token).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["vms"].as_array().unwrap().len(), 1, "the default VM");
    assert_eq!(list["vms"][0]["strategy"], "local");
    let (status, registered) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&sarah_token),
        json!({"name": "  cloud box "}),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let vm = registered["vm"].clone();
    assert_eq!(vm["name"], "cloud box");
    assert_eq!(vm["strategy"], "local");
    assert_eq!(vm["userId"], sarah_id.as_str());
    let vm_id = vm["id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&sarah_token),
        json!({"name": "remote", "strategy": "ssh_proxy"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not available"),
        "{body}"
    );
    let (status, body) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&sarah_token),
        json!({"name": ""}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = get(&http, &format!("{gw}/api/vm/list"), &sarah_token).await;
    let vms = list["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    assert!(vms.iter().all(|v| v["userId"] == sarah_id.as_str()));
    assert!(vms.iter().any(|v| v["id"] == vm_id.as_str()));

    let (status, updated) = put(
        &http,
        &format!("{gw}/api/vm/update"),
        &sarah_token,
        json!({"vmId": vm_id, "name": "big box"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["vm"]["name"], "big box");
    assert_eq!(updated["vm"]["id"], vm_id.as_str());
    // A teammate (or another team) cannot rename it, nor see it.
    for token in [&miguel_token, &chen_token] {
        let (status, body) = put(
            &http,
            &format!("{gw}/api/vm/update"),
            token,
            json!({"vmId": vm_id, "name": "mine now"}),
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (_, theirs) = get(&http, &format!("{gw}/api/vm/list"), token).await;
        assert!(
            theirs["vms"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["id"] != vm_id.as_str() && v["userId"] != sarah_id.as_str()),
            "{theirs}"
        );
    }
    let (status, _) = put(
        &http,
        &format!("{gw}/api/vm/update"),
        &sarah_token,
        json!({"vmId": "not-an-id", "name": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = get(&http, &format!("{gw}/api/vm/list"), &sarah_token).await;
    let names: Vec<&str> = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"big box"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_chat_presence_and_vms() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) = start_standalone(dir.path()).await;
    chat_presence_and_vms(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_process_chat_presence_and_vms_over_redis() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let mesh = start_multi_process(dir.path(), &db.url).await;
    chat_presence_and_vms(&mesh.gateway).await;
}

/// `got` must be exactly `want`, in order; on failure, says where they first differ.
fn assert_seqs(got: &[u64], want: std::ops::Range<u64>, what: &str) {
    let want: Vec<u64> = want.collect();
    if got != want.as_slice() {
        let at = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} seqs where {} were expected; first difference at index {at}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(at..(at + 5).min(got.len())),
            want.get(at..(at + 5).min(want.len())),
        );
    }
}

/// `sha256=<hex>`: what GitHub sends in `X-Hub-Signature-256`.
fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn deliver_push(
    http: &reqwest::Client,
    url: &str,
    delivery: &str,
    signature: &str,
    body: &[u8],
) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GitHub's push webhook, end to end: a signed push reaches the team's sockets as
/// `preview_updated`; a forged one is refused with nothing sent; a redelivery is acknowledged
/// as a duplicate and sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_push_webhook_updates_the_preview() {
    const SECRET: &str = "e2e-webhook-secret";
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) =
        start_standalone_with(dir.path(), &[("COVIBE_PREVIEW__WEBHOOK_SECRET", SECRET)]).await;
    let http = reqwest::Client::new();
    let (status, sarah) = post(
        &http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": "Rocket", "email": "sarah@example.com", "displayName": "Sarah"}),
    )
    .await;
    assert_eq!(status, 201, "{sarah}");
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("sarah", &gw).await;
    let ack = sio
        .emit_ack(
            "sarah",
            "join_team",
            json!({"teamId": team_id, "token": token}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let hook = format!("{gw}/api/webhook/push?team={team_id}");
    let push = |commit: &str| {
        serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": commit,
            "repository": {"full_name": "rocket/app"},
            "pusher": {"name": "sarah"},
        }))
        .unwrap()
    };
    let first = "1111111111111111111111111111111111111111";
    let second = "2222222222222222222222222222222222222222";

    // A correctly signed push: 202, and the team's sockets hear of it.
    let body = push(first);
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-1",
        &github_signature(SECRET, &body),
        &body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], true, "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
    let event = sio.next_event("sarah", "preview_updated").await;
    assert_eq!(event["commit"], first, "{event}");
    assert!(event.get("url").is_some(), "{event}");

    // Forged: signed with another secret, or the body changed after signing.
    let forged = push(second);
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-2",
        &github_signature("not-the-secret", &forged),
        &forged,
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthenticated", "{answer}");
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-2",
        &github_signature(SECRET, &body),
        &forged,
    )
    .await;
    assert_eq!(status, 401, "{answer}");

    // A redelivery of the first push: acknowledged, nothing new.
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-1",
        &github_signature(SECRET, &body),
        &body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");

    // The next real push is the next event the socket gets: neither the forgeries nor the
    // redelivery sent one.
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-3",
        &github_signature(SECRET, &forged),
        &forged,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let event = sio.next_event("sarah", "preview_updated").await;
    assert_eq!(event["commit"], second, "{event}");
    let extra: Vec<_> = sio
        .drain_events("sarah")
        .into_iter()
        .filter(|(name, _)| name == "preview_updated")
        .collect();
    assert!(extra.is_empty(), "{extra:?}");
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
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut cmd = clean_command(Path::new(COVIBE));
    cmd.args(["vm-agent", "daemon", "--connector-url", &connector])
        .args(["--vm-id", &vm_id, "--command", &fake_agent_command()])
        .arg("--workdir")
        .arg(&vm_dir)
        .arg("--spool-dir")
        .arg(&vm_dir)
        .env("COVIBE_VM_TOKEN", &vm_token);
    let mut daemon = Proc::spawn("daemon", cmd);
    daemon
        .wait_for_line("waiting for spawns", std::time::Duration::from_secs(30))
        .await;

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
