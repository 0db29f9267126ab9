//! What every end-to-end test uses: the `covibe` processes (standalone, or one per service),
//! HTTP helpers, Socket.io waits and sequence checks.

use std::path::{Path, PathBuf};

use covibe_testkit::{Proc, SioClient, clean_command, fake_agent_command, free_port, redis_url};
use serde_json::{Value, json};

pub(crate) const COVIBE: &str = env!("CARGO_BIN_EXE_covibe");

/// Output lines the fake agent prints for `lines=N`: init, text, tool use, tool result, N, result.
pub(crate) fn expected_lines(n: u64) -> u64 {
    n + 5
}

pub(crate) async fn start_standalone(dir: &Path) -> (Proc, String) {
    start_standalone_with(dir, &[]).await
}

pub(crate) async fn start_standalone_with(dir: &Path, extra: &[(&str, &str)]) -> (Proc, String) {
    let mut proc = Proc::spawn("standalone", standalone_command(dir, extra));
    let url = proc.wait_for_url("gateway listening on").await;
    (proc, url)
}

/// `covibe standalone` in `dir` with the fake agent, the gateway on a free port.
pub(crate) fn standalone_command(dir: &Path, extra: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = clean_command(Path::new(COVIBE));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.arg("standalone")
        .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
        .env("COVIBE_DATA_DIR", dir)
        .env("COVIBE_AGENT_COMMAND", fake_agent_command())
        .env("COVIBE_PROJECT_DIR", dir);
    cmd
}

/// `covibe vm-agent daemon` dialled in for the VM with its token (in its environment only),
/// running in `vm_dir`, once it waits for spawns.
pub(crate) async fn dial_in_daemon(
    connector: &str,
    vm_id: &str,
    vm_token: &str,
    vm_dir: &Path,
) -> Proc {
    std::fs::create_dir_all(vm_dir).unwrap();
    let mut cmd = clean_command(Path::new(COVIBE));
    cmd.args(["vm-agent", "daemon", "--connector-url", connector])
        .args(["--vm-id", vm_id, "--command", &fake_agent_command()])
        .arg("--workdir")
        .arg(vm_dir)
        .arg("--spool-dir")
        .arg(vm_dir)
        .env("COVIBE_VM_TOKEN", vm_token);
    let mut daemon = Proc::spawn("daemon", cmd);
    daemon
        .wait_for_line("waiting for spawns", std::time::Duration::from_secs(30))
        .await;
    daemon
}

/// Extra environment of one service process.
pub(crate) type Env = Vec<(String, String)>;

/// Every service in its own process, over PostgreSQL and Redis, talking gRPC over loopback.
/// The orchestrator listens on a fixed port so it can be killed and started again in place.
pub(crate) struct Mesh {
    pub(crate) dir: PathBuf,
    pub(crate) database_url: String,
    pub(crate) redis_url: String,
    /// Its own Redis key prefix, so meshes sharing a Redis never see each other's fan-out.
    pub(crate) redis_prefix: String,
    pub(crate) orchestrator_addr: String,
    pub(crate) procs: Vec<(String, Env, Proc)>,
    pub(crate) gateway: String,
    /// Each launched process's name and URL, in launch order.
    pub(crate) urls: Vec<(String, String)>,
    /// Environment every process of the mesh gets.
    pub(crate) extra: Env,
}

impl Mesh {
    pub(crate) fn command(
        &self,
        name: &str,
        extra: &[(String, String)],
    ) -> tokio::process::Command {
        let mut cmd = clean_command(Path::new(COVIBE));
        cmd.arg(name)
            .env("COVIBE_GRPC_ADDR", "127.0.0.1:0")
            .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
            .env("COVIBE_DATA_DIR", &self.dir)
            .env("COVIBE_DATABASE_URL", &self.database_url)
            .env("COVIBE_REDIS_URL", &self.redis_url)
            .env("COVIBE_REDIS_KEY_PREFIX", &self.redis_prefix)
            .env("COVIBE_AGENT_COMMAND", fake_agent_command())
            .env("COVIBE_PROJECT_DIR", &self.dir);
        for (k, v) in self.extra.iter().chain(extra) {
            cmd.env(k, v);
        }
        cmd
    }

    pub(crate) async fn launch(&mut self, name: &str, extra: Vec<(String, String)>) -> String {
        let mut proc = Proc::spawn(name, self.command(name, &extra));
        let url = proc.wait_for_url(&format!("{name} listening on")).await;
        self.procs.push((name.to_owned(), extra, proc));
        self.urls.push((name.to_owned(), url.clone()));
        url
    }

    pub(crate) async fn start(dir: &Path, database_url: &str, redis_url: &str) -> Self {
        Self::start_with(dir, database_url, redis_url, Vec::new()).await
    }

    pub(crate) async fn start_with(
        dir: &Path,
        database_url: &str,
        redis_url: &str,
        extra: Env,
    ) -> Self {
        Self::start_with_orchestrator(dir, database_url, redis_url, extra, Env::new()).await
    }

    /// [`Self::start_with`], the orchestrator's process also given `orchestrator` (e.g. keys
    /// of its own).
    pub(crate) async fn start_with_orchestrator(
        dir: &Path,
        database_url: &str,
        redis_url: &str,
        extra: Env,
        orchestrator: Env,
    ) -> Self {
        let mut mesh = Self {
            dir: dir.to_owned(),
            database_url: database_url.to_owned(),
            redis_url: redis_url.to_owned(),
            redis_prefix: covibe_testkit::unique_prefix(),
            orchestrator_addr: format!("127.0.0.1:{}", free_port()),
            procs: Vec::new(),
            gateway: String::new(),
            urls: Vec::new(),
            extra,
        };
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // A service alone never makes up a signing key: the operator creates it first.
        let status = mesh
            .command("admin", &[])
            .arg("rotate-signing-key")
            .status()
            .await
            .unwrap();
        assert!(status.success(), "covibe admin rotate-signing-key failed");
        // Nor a master key for members' VM credentials.
        let status = mesh
            .command("admin", &[])
            .arg("rotate-master-key")
            .status()
            .await
            .unwrap();
        assert!(status.success(), "covibe admin rotate-master-key failed");
        let team = mesh.launch("team", Vec::new()).await;
        let auth = mesh
            .launch("auth", env(&[("COVIBE_ENDPOINTS__TEAM", &team)]))
            .await;
        let vmc = mesh.launch("vm-connector", Vec::new()).await;
        let orch_addr = mesh.orchestrator_addr.clone();
        // The team service answers the orchestrator's reads of tool-use policies.
        let mut orch_env = env(&[
            ("COVIBE_ENDPOINTS__VM_CONNECTOR", &vmc),
            ("COVIBE_ENDPOINTS__TEAM", &team),
            ("COVIBE_GRPC_ADDR", &orch_addr),
        ]);
        orch_env.extend(orchestrator);
        let orch = mesh.launch("orchestrator", orch_env).await;
        let preview = mesh
            .launch(
                "preview",
                env(&[
                    ("COVIBE_ENDPOINTS__TEAM", &team),
                    ("COVIBE_ENDPOINTS__VM_CONNECTOR", &vmc),
                ]),
            )
            .await;
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

    /// The URL of the (first) process launched as `name`.
    pub(crate) fn url(&self, name: &str) -> String {
        self.urls
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, url)| url.clone())
            .unwrap_or_else(|| panic!("no {name} in the mesh"))
    }

    /// The environment the gateway was launched with (to start another replica).
    pub(crate) fn gateway_env(&self) -> Env {
        self.procs
            .iter()
            .find(|(n, _, _)| n == "gateway")
            .map(|(_, env, _)| env.clone())
            .unwrap_or_default()
    }

    /// Kills a service with SIGKILL (no drain, no goodbye).
    pub(crate) async fn kill(&mut self, name: &str) -> Vec<(String, String)> {
        let at = self.procs.iter().position(|(n, _, _)| n == name).unwrap();
        let (_, extra, mut proc) = self.procs.remove(at);
        proc.kill().await;
        let _ = proc.child.wait().await;
        extra
    }
}

pub(crate) async fn start_multi_process(dir: &Path, database_url: &str) -> Mesh {
    Mesh::start(dir, database_url, &redis_url()).await
}

pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a team with its first member: the status and the session (tokens, team, user).
pub(crate) async fn create_team(
    http: &reqwest::Client,
    gw: &str,
    name: &str,
    email: &str,
    display_name: &str,
) -> (u16, Value) {
    post(
        http,
        &format!("{gw}/api/team/create"),
        None,
        json!({"name": name, "email": email, "displayName": display_name}),
    )
    .await
}

/// A new member signs in with the team's invite code; their session (tokens, team, user).
pub(crate) async fn join_with_invite(
    http: &reqwest::Client,
    gw: &str,
    invite_code: &Value,
    email: &str,
    display_name: &str,
) -> Value {
    let (status, member) = post(
        http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": invite_code, "email": email, "displayName": display_name}),
    )
    .await;
    assert_eq!(status, 200, "{member}");
    member
}

/// Sarah's team "Rocket" with Miguel in it, and Chen alone in a team of his own.
pub(crate) struct Trio {
    pub(crate) team_id: String,
    pub(crate) sarah_id: String,
    pub(crate) sarah_token: String,
    pub(crate) miguel_id: String,
    pub(crate) miguel_token: String,
    pub(crate) chen_team: String,
    pub(crate) chen_id: String,
    pub(crate) chen_token: String,
}

pub(crate) async fn trio(http: &reqwest::Client, gw: &str) -> Trio {
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let (status, sarah) = create_team(http, gw, "Rocket", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let miguel = join_with_invite(
        http,
        gw,
        &sarah["inviteCode"],
        "miguel@example.com",
        "Miguel",
    )
    .await;
    let (status, chen) = create_team(http, gw, "Other", "chen@example.com", "Chen").await;
    assert_eq!(status, 201, "{chen}");
    Trio {
        team_id: text(&sarah["team"]["id"]),
        sarah_id: text(&sarah["user"]["id"]),
        sarah_token: text(&sarah["accessToken"]),
        miguel_id: text(&miguel["user"]["id"]),
        miguel_token: text(&miguel["accessToken"]),
        chen_team: text(&chen["team"]["id"]),
        chen_id: text(&chen["user"]["id"]),
        chen_token: text(&chen["accessToken"]),
    }
}

pub(crate) async fn get(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn delete(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = http.delete(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits for an event about `agent` seen by `member` that `pred` accepts.
pub(crate) async fn await_event(
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

/// Polls the agent until it has `status` (a hang guard bounds the wait, not a speed claim).
pub(crate) async fn wait_for_status(
    http: &reqwest::Client,
    gw: &str,
    token: &str,
    agent: &str,
    status: &str,
) {
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
pub(crate) struct Watcher {
    pub(crate) http: reqwest::Client,
    pub(crate) sio: SioClient,
    pub(crate) token: String,
    /// The `join_team` data it joined with.
    pub(crate) join: Value,
}

pub(crate) async fn watcher(gw: &str) -> Watcher {
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, gw, "Faults", "f@example.com", "F").await;
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("viewer", gw).await;
    let join = json!({"teamId": me["team"]["id"], "token": token});
    let ack = sio.emit_ack("viewer", "join_team", join.clone()).await;
    assert_eq!(ack["ok"], true);
    Watcher {
        http,
        sio,
        token,
        join,
    }
}

impl Watcher {
    pub(crate) async fn spawn(&self, gw: &str, task: &str) -> String {
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
    pub(crate) async fn live_until(&mut self, agent: &str, seqs: &mut Vec<u64>, at_least: usize) {
        while seqs.len() < at_least {
            let data =
                await_event(&mut self.sio, "viewer", agent, |e, _| e == "agent_output").await;
            seqs.push(data["seq"].as_u64().unwrap());
        }
    }

    /// Everything else received live so far.
    pub(crate) fn drain_live(&mut self, agent: &str, seqs: &mut Vec<u64>) -> Vec<String> {
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
    pub(crate) async fn history_from(&self, gw: &str, agent: &str, from: u64) -> Vec<u64> {
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
pub(crate) fn assert_exactly_once(live: &[u64], history: &[u64], first_missing: u64, total: u64) {
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

pub(crate) fn first_missing(live: &[u64]) -> u64 {
    let mut next = 0;
    for seq in live {
        if *seq != next {
            break;
        }
        next += 1;
    }
    next
}

/// Collects `client`'s `agent_output` seqs of `agent` until `until` returns true for an event.
pub(crate) async fn collect_until(
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

pub(crate) fn is_completed(event: &str, data: &Value) -> bool {
    event == "agent_status" && data["status"] == "completed"
}

/// One gRPC-web call as a browser makes it: `application/grpc-web+proto`, one length-prefixed
/// message in, data and trailer frames out. Returns the message bytes and the grpc-status.
pub(crate) async fn grpc_web_call(
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

pub(crate) async fn put(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
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
pub(crate) async fn await_presence(
    sio: &mut SioClient,
    client: &str,
    want: &[(&str, &str)],
) -> Value {
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

/// `got` must be exactly `want`, in order; on failure, says where they first differ.
pub(crate) fn assert_seqs(got: &[u64], want: std::ops::Range<u64>, what: &str) {
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

/// `join_team` with `data` on `name`'s socket, which must be accepted; returns the
/// acknowledgement.
pub(crate) async fn join(sio: &mut SioClient, name: &str, data: Value) -> Value {
    let ack = sio.emit_ack(name, "join_team", data).await;
    assert_eq!(ack["ok"], true, "{name}: {ack}");
    ack
}

/// A running CoVibe (standalone or a mesh) as the identity tests see it: the gateway, each
/// service's own gRPC address, and how to run `covibe admin` against it.
pub(crate) struct Stack {
    pub(crate) gw: String,
    pub(crate) auth: String,
    pub(crate) team: String,
    pub(crate) orchestrator: String,
    pub(crate) vm_connector: String,
    pub(crate) preview: String,
    /// The environment `covibe admin ...` needs to reach this stack's keys and database.
    pub(crate) admin_env: Env,
    pub(crate) data_dir: PathBuf,
    _standalone: Option<Proc>,
}

/// Generous limits: these tests make many sign-ins and spawns from one address.
pub(crate) const ROOMY: &[(&str, &str)] = &[
    ("COVIBE_LIMITS__RATE_PER_IP_PER_SEC", "100000"),
    ("COVIBE_LIMITS__BURST_PER_IP", "100000"),
    ("COVIBE_LIMITS__RATE_PER_USER_PER_SEC", "100000"),
    ("COVIBE_LIMITS__BURST_PER_USER", "100000"),
    ("COVIBE_LIMITS__LOGIN_PER_IP_PER_MIN", "100000"),
    ("COVIBE_LIMITS__LOGIN_BURST_PER_IP", "100000"),
    ("COVIBE_LIMITS__TEAM_JOINS_PER_MINUTE", "100000"),
    ("COVIBE_LIMITS__MAX_RUNNING_AGENTS", "1000"),
    ("COVIBE_LIMITS__SPAWNS_PER_MINUTE", "100000"),
];

fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Stack {
    /// `covibe standalone` in `dir`, every service's address read from what it prints.
    pub(crate) async fn standalone(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let env: Vec<(&str, &str)> = ROOMY.iter().chain(extra).copied().collect();
        let mut proc = Proc::spawn("standalone", standalone_command(dir, &env));
        // Announced in this order.
        let auth = proc.wait_for_url("auth listening on").await;
        let team = proc.wait_for_url("team listening on").await;
        let orchestrator = proc.wait_for_url("orchestrator listening on").await;
        let vm_connector = proc.wait_for_url("vm-connector listening on").await;
        let preview = proc.wait_for_url("preview listening on").await;
        let gw = proc.wait_for_url("gateway listening on").await;
        Self {
            gw,
            auth,
            team,
            orchestrator,
            vm_connector,
            preview,
            admin_env: env_of(&[("COVIBE_DATA_DIR", &dir.display().to_string())]),
            data_dir: dir.to_owned(),
            _standalone: Some(proc),
        }
    }

    /// The addresses of a running mesh (which stays the caller's to keep alive).
    pub(crate) fn of_mesh(mesh: &Mesh) -> Self {
        Self {
            gw: mesh.gateway.clone(),
            auth: mesh.url("auth"),
            team: mesh.url("team"),
            orchestrator: mesh.url("orchestrator"),
            vm_connector: mesh.url("vm-connector"),
            preview: mesh.url("preview"),
            admin_env: env_of(&[
                ("COVIBE_DATA_DIR", &mesh.dir.display().to_string()),
                ("COVIBE_DATABASE_URL", &mesh.database_url),
            ]),
            data_dir: mesh.dir.clone(),
            _standalone: None,
        }
    }

    /// Runs `covibe admin ARGS...`; returns its exit success and what it printed.
    pub(crate) async fn admin(&self, args: &[&str]) -> (bool, String) {
        admin_with(&self.admin_env, args).await
    }
}

/// Runs `covibe admin ARGS...` with `env`; returns its exit success and what it printed.
pub(crate) async fn admin_with(env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let mut cmd = clean_command(Path::new(COVIBE));
    cmd.arg("admin").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `claims` signed with the private key in `pem_file` under `kid`, as anyone holding that key
/// could sign them.
pub(crate) fn sign_with(pem_file: &Path, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(pem_file).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The fake agent speaking Claude Code's control protocol: it asks before running a tool.
pub(crate) fn control_agent_command() -> String {
    format!(
        "{} --input-format stream-json --output-format stream-json --verbose \
         --permission-prompt-tool stdio",
        covibe_testkit::workspace_root()
            .join("scripts/fake-claude")
            .display()
    )
}

/// Spawns an agent of `token`'s member over REST: its id and VM.
pub(crate) async fn spawn_agent(
    http: &reqwest::Client,
    gw: &str,
    token: &str,
    task: &str,
) -> (String, String) {
    let (status, body) = post(
        http,
        &format!("{gw}/api/agent/spawn"),
        Some(token),
        serde_json::json!({ "task": task }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["agent"]["id"].as_str().unwrap().to_owned(),
        body["agent"]["vmId"].as_str().unwrap().to_owned(),
    )
}

/// Waits for the result of `agent`'s tool use whose output contains `text`, failing if the
/// agent asks its owner first (the line naming the command comes before any question, so
/// only its result shows the tool ran).
pub(crate) async fn ran_without_asking(sio: &mut SioClient, member: &str, agent: &str, text: &str) {
    let text = text.to_owned();
    await_event(sio, member, agent, move |event, data| {
        assert_ne!(
            event, "agent_permission",
            "asked despite the policy: {data}"
        );
        let line = data["data"].as_str().unwrap_or_default();
        event == "agent_output" && line.contains("tool_result") && line.contains(&text)
    })
    .await;
}

/// Waits for an `agent_output` of `agent`, seen by `member`, whose line contains `text`.
pub(crate) async fn output_with(
    sio: &mut SioClient,
    member: &str,
    agent: &str,
    text: &str,
) -> Value {
    let text = text.to_owned();
    await_event(sio, member, agent, move |event, data| {
        event == "agent_output" && data["data"].as_str().unwrap_or_default().contains(&text)
    })
    .await
}

/// A roomy mesh: every service in its own process over PostgreSQL and Redis.
pub(crate) async fn roomy_mesh(dir: &Path, database_url: &str) -> Mesh {
    Mesh::start_with(dir, database_url, &redis_url(), env_of(ROOMY)).await
}

/// `VmHWM` (peak resident set size) of a live process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `covibe vm-agent run --agent-id AGENT ...` process started for `agent`, if it runs.
pub(crate) fn vm_agent_pid(agent: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_it = args.contains(&b"vm-agent".as_slice())
            && args
                .windows(2)
                .any(|w| w[0] == b"--agent-id" && w[1] == agent.as_bytes());
        is_it.then_some(pid)
    })
}

/// Follows the peak RSS of `agent`'s vm-agent (read every 50 ms while it runs) until stopped.
pub(crate) struct VmAgentPeak {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl VmAgentPeak {
    pub(crate) fn start(agent: &str) -> Self {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (seen, agent) = (peak.clone(), agent.to_owned());
        let task = tokio::spawn(async move {
            let mut pid = None;
            loop {
                pid = pid.or_else(|| vm_agent_pid(&agent));
                // The last reading before it exits is its peak.
                if let Some(kib) = pid.and_then(peak_rss_kib) {
                    seen.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        });
        Self { peak, stop, task }
    }

    /// The highest `VmHWM` read, in KiB (0 if the vm-agent was never seen).
    pub(crate) async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What `client` counted (tally mode) of `agent`'s output once it has the last line, or as soon
/// as it counted a gap or duplicate.
pub(crate) async fn tally_complete(
    sio: &mut SioClient,
    client: &str,
    agent: &str,
    total: u64,
) -> covibe_testkit::Tally {
    // A hang guard, not a speed claim: 3,000 looks, 100 ms apart.
    for _ in 0..3000 {
        let tally = sio.tally_of(client, agent).await;
        if tally.last_seq == Some(total - 1) || tally.anomalies > 0 {
            return tally;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{client} never got the last line of {agent}");
}
