//! The team's preview deploys, end to end in `covibe standalone`: a bare git repository on
//! disk is the remote, a real HTTP app (Python's `http.server`) is the preview, the deploy runs
//! on the owner's VM (this machine) through the vm-connector. Every push that lands goes live
//! for the whole team; a failing build leaves the running version serving; the supervisor
//! brings a killed app back; pushes during a slow deploy make one more deploy, of the newest.

use std::path::Path;
use std::time::Duration;

use covibe_testkit::{Proc, SioClient, free_port};
use serde_json::{Value, json};

use crate::support::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Sarah")
        .env("GIT_AUTHOR_EMAIL", "sarah@example.com")
        .env("GIT_COMMITTER_NAME", "Sarah")
        .env("GIT_COMMITTER_EMAIL", "sarah@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with a remote: each `commit` writes the files and pushes.
struct Repo {
    work: tempfile::TempDir,
    origin: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let (work, origin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        git(
            origin.path(),
            &["init", "--quiet", "--bare", "--initial-branch=main"],
        );
        git(work.path(), &["init", "--quiet", "--initial-branch=main"]);
        let url = origin.path().display().to_string();
        git(work.path(), &["remote", "add", "origin", &url]);
        Self { work, origin }
    }

    fn url(&self) -> String {
        self.origin.path().display().to_string()
    }

    fn commit(&self, page: &str, build: &str) -> String {
        std::fs::write(self.work.path().join("index.html"), page).unwrap();
        std::fs::write(self.work.path().join("build.sh"), build).unwrap();
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "--quiet", "-m", page]);
        git(self.work.path(), &["push", "--quiet", "origin", "main"]);
        git(self.work.path(), &["rev-parse", "HEAD"])
    }
}

fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

struct Hook {
    http: reqwest::Client,
    url: String,
    secret: String,
    repository: String,
    n: u32,
}

impl Hook {
    /// GitHub's push for `commit`, signed with the team's secret.
    async fn push(&mut self, commit: &str) {
        self.n += 1;
        let delivery = format!("delivery-{}", self.n);
        self.deliver(commit, &delivery).await;
    }

    /// GitHub delivering `commit` under `delivery` (again, when it retries).
    async fn deliver(&self, commit: &str, delivery: &str) {
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "after": commit,
            "repository": {"full_name": "rocket/site", "clone_url": self.repository},
            "pusher": {"name": "sarah"},
        }))
        .unwrap();
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature(&self.secret, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
}

/// Stops the supervised preview app when the test ends, however it ends: it runs in a session
/// of its own, outliving the server that started it.
pub(crate) struct StopApp(pub(crate) std::path::PathBuf);

impl Drop for StopApp {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", pid.trim())])
                .status();
        }
    }
}

/// What the preview app answers at `/`, if it answers.
async fn page(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// Waits for the team's `preview_updated` with `status` (and `commit`, when given).
async fn updated(sio: &mut SioClient, status: &str, commit: &str) -> Value {
    let (s, c) = (status.to_owned(), commit.to_owned());
    let v = sio
        .recv_where("preview_updated", move |v| {
            v["op"] == "event"
                && v["event"] == "preview_updated"
                && v["data"]["status"] == s.as_str()
                && (c.is_empty() || v["data"]["commit"] == c.as_str())
        })
        .await;
    v["data"].clone()
}

/// Sarah's team on a stack: her token, her joined socket, and the team's preview configured
/// with `settings` (the repository and work directory added), with its webhook.
struct Site {
    http: reqwest::Client,
    team: String,
    token: String,
    sio: SioClient,
    hook: Hook,
}

async fn site(gw: &str, repo: &Repo, work: &Path, mut settings: Value) -> Site {
    let http = reqwest::Client::new();
    let (_, sarah) = create_team(&http, gw, "Rocket", "sarah@example.com", "Sarah").await;
    let team = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("sarah", gw).await;
    join(&mut sio, "sarah", json!({"teamId": team, "token": token})).await;
    settings["repository"] = json!(repo.url());
    settings["workDir"] = json!(work);
    let (_, configured) = put(&http, &format!("{gw}/api/preview/config"), &token, settings).await;
    let hook = Hook {
        http: http.clone(),
        url: format!("{gw}/api/webhook/push?team={team}"),
        secret: configured["webhookSecret"].as_str().unwrap().to_owned(),
        repository: repo.url(),
        n: 0,
    };
    Site {
        http,
        team,
        token,
        sio,
        hook,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_deploy_the_preview_in_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) = start_standalone(dir.path()).await;
    deploy_flow(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_deploy_the_preview_in_the_mesh() {
    let db = covibe_testkit::TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mesh = roomy_mesh(dir.path(), &db.url).await;
    deploy_flow(&mesh.gateway).await;
}

/// Every push that lands goes live for the whole team, through the gateway's proxy for its
/// members only; a failing build leaves the running version serving; the supervisor brings a
/// killed app back; pushes during a slow deploy make one more deploy, of the newest; an owner
/// redeploys the branch's head by hand.
async fn deploy_flow(gw: &str) {
    let gw = gw.to_owned();
    let work = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (_, sarah) = create_team(&http, &gw, "Rocket", "sarah@example.com", "Sarah").await;
    let team = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("sarah", &gw).await;
    join(&mut sio, "sarah", json!({"teamId": team, "token": token})).await;

    let repo = Repo::new();
    let port = free_port();
    let _stop = StopApp(work.path().join("app.pid"));
    let (status, configured) = put(
        &http,
        &format!("{gw}/api/preview/config"),
        &token,
        json!({
            "repository": repo.url(), "branch": "main", "buildCommand": "sh build.sh",
            "workDir": work.path(),
            "startCommand": "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
            "port": port,
        }),
    )
    .await;
    assert_eq!(status, 200, "{configured}");
    let mut hook = Hook {
        http: http.clone(),
        url: format!("{gw}/api/webhook/push?team={team}"),
        secret: configured["webhookSecret"].as_str().unwrap().to_owned(),
        repository: repo.url(),
        n: 0,
    };

    // A push goes live: the app serves the commit's page, and the team hears of it.
    let first = repo.commit("<h1>version one</h1>", "echo building one");
    hook.push(&first).await;
    let live = updated(&mut sio, "live", &first).await;
    assert_eq!(live["url"], format!("/preview/{team}/"), "{live}");
    assert!(page(port).await.unwrap().contains("version one"));

    // Members open it through the gateway, at the address the API gives them; nobody else.
    let access = http
        .post(format!("{gw}/api/preview/access"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(access.status(), 200);
    let access: Value = access.json().await.unwrap();
    let path = access["url"].as_str().unwrap().to_owned();
    assert!(path.starts_with(&format!("/preview/{team}/")), "{access}");
    let seen = http.get(format!("{gw}{path}")).send().await.unwrap();
    assert_eq!(seen.status(), 200);
    let csp = seen.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("sandbox"),
        "the app runs in an origin of its own: {csp}"
    );
    assert_eq!(seen.headers()["referrer-policy"], "no-referrer");
    assert!(seen.text().await.unwrap().contains("version one"));
    // Without an address of its own, or with a forged or another team's, nothing shows.
    let (_, chen) = create_team(&http, &gw, "Other", "chen@example.com", "Chen").await;
    let theirs: Value = http
        .post(format!("{gw}/api/preview/access"))
        .bearer_auth(chen["accessToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let their_capability = theirs["url"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(3)
        .unwrap()
        .to_owned();
    let capability = path.split('/').nth(3).unwrap();
    let flipped = if capability.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &capability[..capability.len() - 1]);
    let bare = http
        .get(format!("{gw}/preview/{team}/"))
        .send()
        .await
        .unwrap();
    assert!(!bare.text().await.unwrap().contains("version one"));
    for wrong in [
        format!("/preview/{team}/{forged}/"),
        format!("/preview/{team}/{their_capability}/"),
    ] {
        let refused = http.get(format!("{gw}{wrong}")).send().await.unwrap();
        assert!(
            [401, 404].contains(&refused.status().as_u16()),
            "{wrong}: {}",
            refused.status()
        );
        assert!(
            !refused.text().await.unwrap().contains("version one"),
            "{wrong}"
        );
    }
    let (_, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
    assert_eq!(preview["preview"]["status"], "live");
    assert_eq!(preview["preview"]["commit"], first.as_str());
    // GitHub delivering the same push again deploys nothing more.
    hook.deliver(&first, "delivery-1").await;
    let (_, list) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 1, "{list}");

    // A failing build: the deploy fails with its log, the team is told, version one serves on.
    let broken = repo.commit("<h1>version two</h1>", "echo compiling; exit 1");
    hook.push(&broken).await;
    let failed = sio.next_event("sarah", "preview_failed").await;
    assert_eq!(failed["commit"], broken.as_str(), "{failed}");
    assert_eq!(failed["reason"], "the build failed", "{failed}");
    assert!(
        failed["logTail"].as_str().unwrap().contains("compiling"),
        "{failed}"
    );
    assert!(page(port).await.unwrap().contains("version one"));
    let (_, list) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    let deployments = list["deployments"].as_array().unwrap();
    assert_eq!(deployments[0]["status"], "failed", "{list}");
    assert_eq!(deployments[1]["status"], "live", "{list}");
    assert_eq!(deployments[1]["commit"], first.as_str());
    let (_, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
    assert_eq!(preview["preview"]["commit"], first.as_str(), "{preview}");

    // The app dies: its supervisor starts it again.
    let pid_file = work.path().join("app.pid");
    let supervisor = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-P", supervisor.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "the app was running under its supervisor");
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if page(port).await.is_some_and(|p| p.contains("version one")) {
            back = true;
            break;
        }
    }
    assert!(back, "the supervisor did not start the app again");

    // A slow build, and five pushes while it runs: one more deploy, of the newest commit.
    let slow = repo.commit("<h1>version three</h1>", "sleep 2");
    hook.push(&slow).await;
    updated(&mut sio, "deploying", &slow).await;
    let mut newest = String::new();
    for n in 4..9 {
        newest = repo.commit(&format!("<h1>version {n}</h1>"), "true");
        hook.push(&newest).await;
    }
    updated(&mut sio, "live", &slow).await;
    updated(&mut sio, "live", &newest).await;
    let served = page(port).await.unwrap_or_default();
    assert!(served.contains("version 8"), "{served}");
    let (_, list) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    let commits: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["commit"].as_str().unwrap())
        .collect();
    assert_eq!(
        commits,
        [
            newest.as_str(),
            slow.as_str(),
            broken.as_str(),
            first.as_str()
        ],
        "{list}"
    );

    // An owner redeploys the branch's head by hand.
    let (status, again) = post(
        &http,
        &format!("{gw}/api/preview/deploy"),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["deployment"]["trigger"], "manual");
    let redeployed = updated(&mut sio, "live", &newest).await;
    assert_eq!(redeployed["commit"], newest.as_str());
    let (_, list) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    assert_eq!(list["deployments"][0]["commit"], newest.as_str(), "{list}");
    assert_eq!(list["deployments"][0]["status"], "live", "{list}");
    let served = page(port).await.unwrap_or_default();
    assert!(served.contains("version 8"), "{served}");
}

/// The server dies with a deploy running and another queued: started again, it runs them (the
/// running one once its lease passes, its runner being gone), and the newest goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_queued_when_the_server_dies_run_after_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _stop = StopApp(work.path().join("app.pid"));
    let (mut proc, gw) = start_standalone(dir.path()).await;
    let repo = Repo::new();
    let port = free_port();
    let Site {
        http,
        token,
        mut sio,
        mut hook,
        ..
    } = site(
        &gw,
        &repo,
        work.path(),
        json!({
            "buildCommand": "sh build.sh", "port": port,
            "startCommand": "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        }),
    )
    .await;
    let slow = repo.commit("<h1>slow</h1>", "sleep 2");
    hook.push(&slow).await;
    updated(&mut sio, "deploying", &slow).await;
    let newest = repo.commit("<h1>newest</h1>", "true");
    hook.push(&newest).await;
    proc.kill().await;

    let (_proc, gw) = start_standalone(dir.path()).await;
    let mut live = Value::Null;
    for _ in 0..240 {
        let (_, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
        if preview["preview"]["status"] == "live" && preview["preview"]["commit"] == newest.as_str()
        {
            live = preview;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_ne!(
        live,
        Value::Null,
        "the queued deploy never went live after the restart"
    );
    assert!(page(port).await.unwrap_or_default().contains("newest"));
    let (_, list) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    assert_eq!(list["deployments"][0]["commit"], newest.as_str(), "{list}");
    assert_eq!(list["deployments"][0]["status"], "live", "{list}");
}

/// The preview's WebSocket traffic goes through the gateway's proxy too (a Node app with the
/// `ws` package from the test kit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_proxy_carries_websockets() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    covibe_testkit::ensure_node_modules();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _stop = StopApp(work.path().join("app.pid"));
    let (_proc, gw) = start_standalone(dir.path()).await;

    let repo = Repo::new();
    std::fs::write(
        repo.work.path().join("server.js"),
        r#"const http = require('http');
const { WebSocketServer } = require('ws');
const server = http.createServer((req, res) => res.end('<h1>live chat</h1>'));
new WebSocketServer({ server }).on('connection', (ws) => ws.on('message', (m) => ws.send('echo: ' + m)));
server.listen(process.env.PORT, '127.0.0.1');
"#,
    )
    .unwrap();
    let commit = repo.commit("unused", "true");
    let port = free_port();
    let modules = covibe_testkit::js_dir().join("node_modules");
    let Site {
        http,
        team,
        token,
        mut sio,
        mut hook,
    } = site(
        &gw,
        &repo,
        work.path(),
        json!({
            "port": port,
            "startCommand": format!("NODE_PATH='{}' exec node server.js", modules.display()),
        }),
    )
    .await;
    hook.push(&commit).await;
    updated(&mut sio, "live", &commit).await;

    let access: Value = http
        .post(format!("{gw}/api/preview/access"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = access["url"].as_str().unwrap().to_owned();
    let host = gw.strip_prefix("http://").unwrap().to_owned();
    let connect = |path: String| {
        let host = host.clone();
        async move {
            let request = format!("ws://{host}{path}live")
                .into_client_request()
                .unwrap();
            let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
            tokio_tungstenite::client_async(request, tcp).await
        }
    };
    // Without the capability, no WebSocket either.
    assert!(connect(format!("/preview/{team}/0-00/")).await.is_err());
    let (mut ws, _) = connect(path).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.into_text().unwrap().as_str(), "echo: hello");
}

/// A release whose app never answers its health check: the deploy fails with why, and the
/// previous version is started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_brings_the_previous_version_back() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _stop = StopApp(work.path().join("app.pid"));
    let (_proc, gw) =
        start_standalone_with(dir.path(), &[("COVIBE_PREVIEW__HEALTH_TIMEOUT_SECS", "3")]).await;
    let repo = Repo::new();
    let port = free_port();
    // The build decides what starts: a broken release's app exits at once.
    let Site {
        http,
        token,
        mut sio,
        mut hook,
        ..
    } = site(
        &gw,
        &repo,
        work.path(),
        json!({"port": port, "startCommand": "sh start.sh", "buildCommand": "sh build.sh"}),
    )
    .await;
    let serve = "echo 'exec python3 -m http.server \"$PORT\" --bind 127.0.0.1' > start.sh";
    let good = repo.commit("<h1>good</h1>", serve);
    hook.push(&good).await;
    updated(&mut sio, "live", &good).await;
    let bad = repo.commit("<h1>bad</h1>", "echo 'echo crashing; exit 1' > start.sh");
    hook.push(&bad).await;
    let failed = sio.next_event("sarah", "preview_failed").await;
    assert_eq!(failed["commit"], bad.as_str(), "{failed}");
    assert_eq!(
        failed["reason"], "the app did not answer its health check",
        "{failed}"
    );
    assert!(
        failed["logTail"].as_str().unwrap().contains("starting"),
        "{failed}"
    );
    let mut back = false;
    for _ in 0..100 {
        if page(port).await.is_some_and(|p| p.contains("good")) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the previous version was not started again");
    let (_, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
    assert_eq!(preview["preview"]["commit"], good.as_str(), "{preview}");
    assert_eq!(preview["preview"]["status"], "live", "{preview}");
}

/// The same in the mesh, where only the preview service dies: started again in place, it runs
/// the deploys it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_queued_when_the_preview_service_dies_run_after_it_restarts() {
    let db = covibe_testkit::TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _stop = StopApp(work.path().join("app.pid"));
    let mut mesh = roomy_mesh(dir.path(), &db.url).await;
    let gw = mesh.gateway.clone();
    let repo = Repo::new();
    let port = free_port();
    let Site {
        http,
        token,
        mut sio,
        mut hook,
        ..
    } = site(
        &gw,
        &repo,
        work.path(),
        json!({
            "buildCommand": "sh build.sh", "port": port,
            "startCommand": "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        }),
    )
    .await;
    let slow = repo.commit("<h1>slow</h1>", "sleep 2");
    hook.push(&slow).await;
    updated(&mut sio, "deploying", &slow).await;
    let newest = repo.commit("<h1>newest</h1>", "true");
    hook.push(&newest).await;

    let address = mesh.url("preview").trim_start_matches("http://").to_owned();
    let mut env = mesh.kill("preview").await;
    env.push(("COVIBE_GRPC_ADDR".to_owned(), address));
    mesh.launch("preview", env).await;
    let mut live = false;
    for _ in 0..240 {
        let (_, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
        if preview["preview"]["status"] == "live" && preview["preview"]["commit"] == newest.as_str()
        {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(live, "the queued deploy never went live after the restart");
    assert!(page(port).await.unwrap_or_default().contains("newest"));
}

/// A VM that dials in hosts the preview: the deploy travels down its daemon's stream, the
/// daemon checks the app on the VM itself, and since CoVibe cannot reach that VM's ports, the
/// team opens the address the operator exposes (`publicUrl`), which the settings insist on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_dials_in_hosts_the_preview() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _stop = StopApp(work.path().join("app.pid"));
    let once = [("COVIBE_PREVIEW__DEPLOY_ATTEMPTS", "1")];
    let mut standalone = Proc::spawn("standalone", standalone_command(dir.path(), &once));
    let connector = standalone.wait_for_url("vm-connector listening on").await;
    let gw = standalone.wait_for_url("gateway listening on").await;
    let http = reqwest::Client::new();
    let (_, sarah) = create_team(&http, &gw, "Rocket", "sarah@example.com", "Sarah").await;
    let team = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("sarah", &gw).await;
    join(&mut sio, "sarah", json!({"teamId": team, "token": token})).await;

    let (status, body) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&token),
        json!({"name": "behind a NAT", "strategy": "dial_in"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let vm_id = body["vm"]["id"].as_str().unwrap().to_owned();
    let (_, body) = post(
        &http,
        &format!("{gw}/api/vm/token"),
        Some(&token),
        json!({"vmId": vm_id}),
    )
    .await;
    let vm_token = body["vmToken"].as_str().unwrap().to_owned();
    let vm_dir = dir.path().join("vm");
    let mut daemon = dial_in_daemon(&connector, &vm_id, &vm_token, &vm_dir).await;

    let repo = Repo::new();
    let port = free_port();
    let mut settings = json!({
        "repository": repo.url(),
        "workDir": work.path(),
        "vmId": vm_id,
        "port": port,
        "startCommand": "python3 -m http.server \"$PORT\" --bind 127.0.0.1",
    });
    let config_url = format!("{gw}/api/preview/config");
    let (status, refused) = put(&http, &config_url, &token, settings.clone()).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("publicUrl"),
        "{refused}"
    );
    let public = format!("http://127.0.0.1:{port}/");
    settings["publicUrl"] = json!(public);
    let (status, configured) = put(&http, &config_url, &token, settings).await;
    assert_eq!(status, 200, "{configured}");
    let mut hook = Hook {
        http: http.clone(),
        url: format!("{gw}/api/webhook/push?team={team}"),
        secret: configured["webhookSecret"].as_str().unwrap().to_owned(),
        repository: repo.url(),
        n: 0,
    };

    let first = repo.commit("<h1>from the VM behind a NAT</h1>", "true");
    hook.push(&first).await;
    let live = updated(&mut sio, "live", &first).await;
    assert_eq!(live["url"], public.as_str(), "{live}");
    assert!(
        page(port)
            .await
            .is_some_and(|p| p.contains("from the VM behind a NAT"))
    );
    let (_, deployments) = get(&http, &format!("{gw}/api/preview/deployments"), &token).await;
    assert_eq!(
        deployments["deployments"][0]["status"], "live",
        "{deployments}"
    );

    // The daemon gone: the next deploy fails clearly, and the app still serves.
    daemon.kill().await;
    let second = repo.commit("<h1>second</h1>", "true");
    hook.push(&second).await;
    let failed = sio.next_event("sarah", "preview_failed").await;
    assert_eq!(failed["commit"], second.as_str(), "{failed}");
    assert!(
        page(port).await.is_some_and(|p| p.contains("behind a NAT")),
        "the running version stopped"
    );
    standalone.kill().await;
}
