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
        mesh.launch("preview", Vec::new()).await;
        mesh.gateway = mesh
            .launch(
                "gateway",
                env(&[
                    ("COVIBE_ENDPOINTS__AUTH", &auth),
                    ("COVIBE_ENDPOINTS__TEAM", &team),
                    ("COVIBE_ENDPOINTS__ORCHESTRATOR", &orch),
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
        assert_eq!(
            seqs,
            (0..total).collect::<Vec<_>>(),
            "{member}: gap-free, in order, once each"
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
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "every line exactly once, in order"
    );
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
    assert_eq!(
        history,
        (0..total).collect::<Vec<_>>(),
        "served in full from the database"
    );
    assert!(live.windows(2).all(|w| w[0] < w[1]), "no duplicates live");
}
