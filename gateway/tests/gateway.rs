//! The gateway's front door over real HTTP on loopback: error shapes, limits, the OpenAPI
//! document against the router, static files. The gRPC services are absent (their addresses
//! refuse connections), so every call that reaches one answers 503: itself a case under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use covibe_gateway::{Gateway, GatewayConfig, HttpLimits};
use covibe_identity::{KeyFiles, Signer};
use covibe_types::{SessionId, TeamId, UserId};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const MAX_BODY: usize = 4096;

fn generous() -> HttpLimits {
    HttpLimits {
        rate_per_ip_per_sec: 10_000.0,
        burst_per_ip: 10_000,
        rate_per_user_per_sec: 10_000.0,
        burst_per_user: 10_000,
        login_per_ip_per_min: 10_000.0,
        login_burst_per_ip: 10_000,
        request_timeout: Duration::from_secs(60),
        max_concurrent_requests: 1024,
        trust_forwarded_for: false,
    }
}

struct Server {
    url: String,
    signer: Signer,
    _keys: tempfile::TempDir,
}

impl Server {
    fn token(&self, user: UserId) -> String {
        self.signer
            .access_token(
                user,
                TeamId::new(),
                SessionId::new(),
                Duration::from_secs(600),
            )
            .unwrap()
            .0
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

/// An address where nothing listens.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn start(limits: HttpLimits, static_dir: Option<&Path>, auth_url: Option<String>) -> Server {
    start_serving(limits, static_dir, auth_url, false).await
}

/// The gateway as `covibe_gateway::serve` runs it, Socket.io included.
async fn start_with_sockets(limits: HttpLimits) -> Server {
    start_serving(limits, None, None, true).await
}

async fn start_serving(
    limits: HttpLimits,
    static_dir: Option<&Path>,
    auth_url: Option<String>,
    sockets: bool,
) -> Server {
    let keys = tempfile::tempdir().unwrap();
    let (signer, verifier) = covibe_identity::load_or_generate(&KeyFiles {
        signing: keys.path().join("k.pem"),
        verifying: keys.path().join("k.pub.pem"),
    })
    .unwrap();
    let dead = dead_url().await;
    let config = GatewayConfig {
        auth_url: auth_url.unwrap_or_else(|| dead.clone()),
        team_url: dead.clone(),
        orchestrator_url: dead.clone(),
        vm_connector_url: dead.clone(),
        preview_url: dead,
        max_body_bytes: MAX_BODY,
        limits,
        static_dir: static_dir.map(Path::to_path_buf),
        embedded_site: None,
        dial_in_url: "http://127.0.0.1:50054".to_owned(),
        cors_origins: Vec::new(),
        sockets: covibe_gateway::SocketLimits::default(),
    };
    let gateway: Arc<Gateway> = Gateway::new(&config, verifier).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if sockets {
        let hot = Arc::new(covibe_storage::MemoryHotStore::new(16));
        tokio::spawn(covibe_gateway::serve(
            gateway,
            hot,
            listener,
            std::future::pending(),
        ));
    } else {
        let app = gateway.app();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
    }
    Server {
        url: format!("http://{addr}"),
        signer,
        _keys: keys,
    }
}

fn client_from(ip: [u8; 4]) -> Client {
    Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// Status, and the body as JSON (`Value::Null` when it is not JSON).
async fn call(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or("<not an API error>")
}

fn login_body() -> Value {
    json!({"inviteCode": "abc", "email": "a@example.com", "displayName": "A"})
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = start(generous(), None, None).await;
    let http = Client::new();
    let token = server.token(UserId::new());

    // Oversized bodies: through the JSON extractor, and through a raw-bytes one.
    let huge = json!({"name": "x".repeat(MAX_BODY), "email": "a@b.c", "displayName": "d"});
    let (status, body) = call(
        http.post(server.at("/api/team/create"))
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    let response = http
        .post(server.at("/api/team/invite"))
        .bearer_auth(&token)
        .body(vec![b' '; MAX_BODY * 2])
        .send()
        .await
        .unwrap();
    let (status, body) = call(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");

    // Malformed JSON, a missing content type, an unknown field: 400 saying what is wrong.
    let response = http
        .post(server.at("/api/team/create"))
        .header("content-type", "application/json")
        .body(r#"{"name": "#)
        .send()
        .await
        .unwrap();
    let (status, body) = call(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_argument");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{body}"
    );
    let response = http
        .post(server.at("/api/auth/login"))
        .body(login_body().to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = call(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content-type"),
        "{body}"
    );
    let mut extra = login_body();
    extra["inviteCod"] = json!("typo");
    let (status, body) = call(
        http.post(server.at("/api/auth/login"))
            .json(&extra)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inviteCod"),
        "{body}"
    );

    // Unknown routes and methods.
    for path in ["/api/nope", "/api", "/nope", "/socket.io-not"] {
        let (status, body) = call(http.get(server.at(path)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(&body), "not_found", "{path}");
    }
    let (status, body) = call(http.get(server.at("/api/auth/login")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "invalid_argument");

    // Auth: no token 401; a forged one 401; a good one reaches the (absent) service: 503.
    let (status, body) = call(http.get(server.at("/api/agent/list")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let forged = format!("{token}x");
    let (status, _) = call(
        http.get(server.at("/api/agent/list"))
            .bearer_auth(forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for request in [
        http.get(server.at("/api/agent/list")).bearer_auth(&token),
        http.post(server.at("/api/auth/login")).json(&login_body()),
    ] {
        let (status, body) = call(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(error_code(&body), "unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message, "a service is unavailable, try again",
            "no transport detail leaks"
        );
    }

    // Probes, and `/` with no static directory.
    let response = http.get(server.at("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = http.get(server.at("/readyz")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not serving the fan-out yet"
    );
    let (status, body) = call(http.get(server.at("/")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"name": "covibe", "api": "/api/openapi.json"}));
}

#[tokio::test]
async fn rate_limits_per_address_per_member_and_on_sign_in() {
    // Refills so slow (one token per ~17 minutes) that no refill happens during the test.
    const SLOW: f64 = 0.001;
    let limits = HttpLimits {
        login_per_ip_per_min: SLOW * 60.0,
        login_burst_per_ip: 3,
        rate_per_user_per_sec: SLOW,
        burst_per_user: 4,
        ..generous()
    };
    let server = start(limits, None, None).await;
    let (a, b) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));

    // Sign-in flood from one address: the burst is served, then 429 with Retry-After.
    for _ in 0..3 {
        let (status, _) = call(
            a.post(server.at("/api/auth/login"))
                .json(&login_body())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let response = a
        .post(server.at("/api/auth/login"))
        .json(&login_body())
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (status, body) = call(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // Another address still signs in; the limited one still reaches other routes and probes.
    let (status, _) = call(
        b.post(server.at("/api/auth/login"))
            .json(&login_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(
        a.post(server.at("/api/auth/refresh"))
            .json(&json!({"refreshToken": "r"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        a.get(server.at("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // A member is limited across addresses; another member is not.
    let (alice, bob) = (server.token(UserId::new()), server.token(UserId::new()));
    for client in [&a, &b, &a, &b] {
        let (status, _) = call(
            client
                .get(server.at("/api/agent/list"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    for client in [&a, &b] {
        let response = client
            .get(server.at("/api/agent/list"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("retry-after"));
        let (status, body) = call(response).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
    }
    let (status, _) = call(
        a.get(server.at("/api/agent/list"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Per address, on every route (a separate gateway, so the buckets above do not interfere).
    let limits = HttpLimits {
        rate_per_ip_per_sec: SLOW,
        burst_per_ip: 5,
        ..generous()
    };
    let server = start(limits, None, None).await;
    for _ in 0..5 {
        assert_eq!(
            a.get(server.at("/api/openapi.json"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let (status, body) = call(a.get(server.at("/api/nope")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        b.get(server.at("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        a.get(server.at("/readyz")).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "probes are exempt"
    );
}

/// A gRPC "service" that accepts connections and never answers; reports each accept.
async fn black_hole() -> (String, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = tx.send(()).await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn requests_in_flight_are_capped_and_slow_ones_time_out() {
    // One request in flight at most: while one hangs on a silent service, the next is shed.
    let (silent, mut accepted) = black_hole().await;
    let limits = HttpLimits {
        max_concurrent_requests: 1,
        ..generous()
    };
    let server = start(limits, None, Some(silent)).await;
    let http = Client::new();
    let hanging = tokio::spawn(
        http.post(server.at("/api/auth/login"))
            .json(&login_body())
            .send(),
    );
    accepted.recv().await.unwrap();
    let response = http
        .get(server.at("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = call(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("busy"),
        "{body}"
    );
    assert_eq!(
        http.get(server.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    hanging.abort();

    // A request that outlives the deadline is answered 503 in the API's shape.
    let (silent, _accepted) = black_hole().await;
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(200),
        ..generous()
    };
    let server = start(limits, None, Some(silent)).await;
    let (status, body) = call(
        http.post(server.at("/api/auth/login"))
            .json(&login_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{body}"
    );
}

/// Every `.route("...")` path written in the gateway's sources.
fn routes_in_source() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut paths = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"')
                && let Some(end) = literal.find('"')
            {
                paths.push(literal[..end].to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// A value the schema accepts, with every property filled in (optional ones too).
fn sample(schema: &Value, doc: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return sample(&doc["components"]["schemas"][name], doc);
    }
    if let Some(first) = schema["anyOf"].get(0) {
        return sample(first, doc);
    }
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    // `["integer", "null"]`: an optional field, sampled as its non-null type.
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        other => other.as_str(),
    };
    match kind {
        Some("object") => Value::Object(
            schema["properties"]
                .as_object()
                .map(|props| {
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), sample(s, doc)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        _ => json!("x@example.com"),
    }
}

/// The document is a valid OpenAPI 3.1 document, by an independent validator
/// (`openapi-spec-validator`, installed for the user with pip when it is missing).
#[tokio::test]
async fn openapi_document_passes_a_validator() {
    let server = start(generous(), None, None).await;
    let doc = Client::new()
        .get(server.at("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc).unwrap();
    let python = |args: &[&str]| {
        std::process::Command::new("python3")
            .args(args)
            .output()
            .expect("python3 (the README's test set-up needs it)")
    };
    if !python(&["-c", "import openapi_spec_validator"])
        .status
        .success()
    {
        let installed = python(&[
            "-m",
            "pip",
            "install",
            "--user",
            "--quiet",
            "--disable-pip-version-check",
            "openapi-spec-validator",
        ]);
        assert!(
            installed.status.success(),
            "pip install openapi-spec-validator: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    let checked = python(&[
        "-c",
        "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        file.to_str().unwrap(),
    ]);
    assert!(
        checked.status.success(),
        "the OpenAPI document is not valid: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let server = start(generous(), None, None).await;
    let http = Client::new();
    let token = server.token(UserId::new());
    let (status, doc) = call(
        http.get(server.at("/api/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for name in [
        "Error",
        "CreateTeam",
        "Login",
        "Refresh",
        "Spawn",
        "Session",
        "Agent",
        "OutputPage",
    ] {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "schema {name}"
        );
    }
    let paths = doc["paths"].as_object().unwrap();

    // Every route written in the sources is documented.
    let in_source = routes_in_source();
    assert!(
        in_source.len() >= 10,
        "the source scan finds the routes: {in_source:?}"
    );
    for path in &in_source {
        assert!(
            paths.contains_key(path),
            "route {path} is missing from openapi::ROUTES"
        );
    }

    // Every documented operation is routed, and no undocumented method is.
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (path, item) in paths {
        let url = server.at(&path.replace("{id}", &UserId::new().to_string()));
        for method in &methods {
            let operation = &item[method.as_str().to_lowercase()];
            let mut request = http.request(method.clone(), &url).bearer_auth(&token);
            if let Some(schema) =
                operation["requestBody"]["content"]["application/json"].get("schema")
            {
                // The documented body, every field filled in, must pass the real deserializer.
                request = request.json(&sample(schema, &doc));
            }
            let (status, body) = call(request.send().await.unwrap()).await;
            let what = format!("{method} {path}: {status} {body}");
            if operation.is_null() {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "undocumented: {what}"
                );
                continue;
            }
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            assert_ne!(
                body["error"]["message"], "no such route",
                "not routed: {what}"
            );
            assert_ne!(
                status,
                StatusCode::BAD_REQUEST,
                "documented body refused: {what}"
            );
            let documented = operation["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(status.as_str()),
                "undocumented status: {what}"
            );
        }
    }
}

#[tokio::test]
async fn static_files_serve_the_app_and_never_shadow_the_api() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<html>covibe app</html>").unwrap();
    std::fs::create_dir(site.path().join("assets")).unwrap();
    std::fs::write(site.path().join("assets/app.js"), "console.log(1)").unwrap();
    let server = start(generous(), Some(site.path()), None).await;
    let http = Client::new();

    for path in ["/", "/index.html", "/team/42"] {
        let response = http.get(server.at(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(
            response.text().await.unwrap(),
            "<html>covibe app</html>",
            "{path}"
        );
    }
    let response = http.get(server.at("/assets/app.js")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "console.log(1)");

    // A missing file is a 404, not the app's page; the API and probes never fall through.
    for path in [
        "/assets/missing.js",
        "/api/nope",
        "/api",
        "/api/index.html",
        "/socket.io/x",
    ] {
        let (status, body) = call(http.get(server.at(path)).send().await.unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    assert_eq!(
        http.get(server.at("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let (status, body) = call(http.post(server.at("/index.html")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "invalid_argument");
}

/// Node's `fetch` posting 5 MiB to a route that takes 4 KiB reads the 413 and its JSON every
/// time, rather than a connection reset while it was still sending. Without a token, too: the
/// route would refuse it before reading a byte of the body, the surest way to a reset.
#[tokio::test]
async fn fetch_reads_the_413_of_a_large_body_every_time() {
    let server = start(generous(), None, None).await;
    let script = r#"
        const [url] = process.argv.slice(1);
        const body = JSON.stringify({ text: 'x'.repeat(5 * 1024 * 1024) });
        const seen = [];
        for (let i = 0; i < 20; i++) {
          try {
            const res = await fetch(url, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body,
            });
            const json = await res.json();
            seen.push(`${res.status} ${json.error && json.error.code}`);
          } catch (err) {
            seen.push(`failed: ${err.cause ? err.cause.code : err.message}`);
          }
        }
        console.log(JSON.stringify(seen));
    "#;
    let output = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", script])
        .arg(server.at("/api/agent/spawn"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen, vec!["413 payload_too_large".to_owned(); 20]);
}

/// Socket.io's handshakes count against the same per-address rate as REST: past the burst an
/// address is answered 429, another address is not.
#[tokio::test]
async fn socket_io_handshakes_are_rate_limited_per_address() {
    let server = start_with_sockets(HttpLimits {
        rate_per_ip_per_sec: 0.001,
        burst_per_ip: 5,
        ..generous()
    })
    .await;
    let (a, b) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let handshake = server.at("/socket.io/?EIO=4&transport=polling");
    for _ in 0..5 {
        let response = a.get(&handshake).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().starts_with("0{"));
    }
    let (status, body) = call(a.get(&handshake).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        b.get(&handshake).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// A policy of as many rules as the policy crate takes is larger than other bodies: it passes
/// the size check (here to a team service that is down, so 503), and only a body past even its
/// limit is refused as too large.
#[tokio::test]
async fn a_whole_policy_is_not_refused_for_its_size() {
    let server = start(generous(), None, None).await;
    let http = Client::new();
    let token = server.token(UserId::new());
    let rules = |n: usize, bytes: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("Bash(echo {i} {}:*)", "x".repeat(bytes)))
            .collect()
    };
    let full = json!({"allow": rules(200, 1000), "deny": rules(200, 1000)});
    assert!(serde_json::to_vec(&full).unwrap().len() > 64 * MAX_BODY);
    for path in ["/api/team/policy", "/api/team/policy/mine"] {
        let response = http
            .put(server.at(path))
            .bearer_auth(&token)
            .json(&full)
            .send()
            .await
            .unwrap();
        let (status, body) = call(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        let response = http
            .put(server.at(path))
            .bearer_auth(&token)
            .json(&json!({"allow": rules(2000, 1000), "deny": []}))
            .send()
            .await
            .unwrap();
        let (status, body) = call(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
    }
    // Other routes keep the usual limit.
    let response = http
        .post(server.at("/api/chat/message"))
        .bearer_auth(&token)
        .json(&json!({"text": "x".repeat(2 * MAX_BODY)}))
        .send()
        .await
        .unwrap();
    assert_eq!(call(response).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}
