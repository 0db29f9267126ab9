//! Identity end to end: nobody signs in as somebody else. Invites make new members only,
//! devices sign in with one-time codes, sessions are listed and end everywhere (their sockets
//! closed), refresh retries get one pair, forged tokens are refused by the gateway and by every
//! service's own gRPC port, and signing keys rotate. In standalone and in the mesh.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth_pb;
use covibe_proto::auth::v1::auth_service_client::AuthServiceClient;
use covibe_proto::orchestrator::v1 as orch_pb;
use covibe_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use covibe_proto::preview::v1 as preview_pb;
use covibe_proto::preview::v1::preview_service_client::PreviewServiceClient;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::Code;
use covibe_proto::vmconnector::v1 as vmc_pb;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_testkit::{SioClient, TestDb};
use serde_json::{Value, json};

use crate::support::{Stack, create_team, delete, get, join, post, roomy_mesh, wait_for_status};

/// A member signed in on one device.
#[derive(Clone)]
pub(crate) struct Signed {
    pub(crate) user_id: String,
    pub(crate) team_id: String,
    pub(crate) token: String,
    pub(crate) refresh: String,
}

impl Signed {
    pub(crate) fn of(session: &Value) -> Self {
        Self {
            user_id: session["user"]["id"].as_str().unwrap().to_owned(),
            team_id: session["team"]["id"].as_str().unwrap().to_owned(),
            token: session["accessToken"].as_str().unwrap().to_owned(),
            refresh: session["refreshToken"].as_str().unwrap().to_owned(),
        }
    }
}

pub(crate) async fn new_team(
    http: &reqwest::Client,
    gw: &str,
    name: &str,
    email: &str,
) -> (Signed, String) {
    let (status, body) = create_team(http, gw, name, email, name).await;
    assert_eq!(status, 201, "{body}");
    (
        Signed::of(&body),
        body["inviteCode"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn join_team(
    http: &reqwest::Client,
    gw: &str,
    code: &str,
    email: &str,
) -> (u16, Value) {
    post(
        http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": code, "email": email, "displayName": email}),
    )
    .await
}

/// A new session for `member` on another device, through a device code.
pub(crate) async fn second_device(
    http: &reqwest::Client,
    gw: &str,
    member: &Signed,
    name: &str,
) -> Signed {
    let (status, code) = post(
        http,
        &format!("{gw}/api/auth/device"),
        Some(&member.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    let (status, session) = post(
        http,
        &format!("{gw}/api/auth/device/redeem"),
        None,
        json!({"code": code["code"], "deviceName": name}),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    Signed::of(&session)
}

async fn sessions(http: &reqwest::Client, gw: &str, member: &Signed) -> Vec<Value> {
    let (status, body) = get(http, &format!("{gw}/api/auth/sessions"), &member.token).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

/// Waits for `client`'s `session_ended` notice and the server's disconnect that follows it.
async fn closed_for(sio: &mut SioClient, client: &str, reason: &str) {
    let notice = sio.next_event(client, "session_ended").await;
    assert_eq!(notice["reason"], reason, "{client}: {notice}");
    let c = client.to_owned();
    let gone = sio
        .recv_where("disconnect", move |v| {
            v["op"] == "disconnected" && v["client"] == c.as_str()
        })
        .await;
    assert_eq!(gone["reason"], "io server disconnect", "{gone}");
}

async fn flows(stack: &Stack) {
    let http = reqwest::Client::new();
    let gw = &stack.gw;
    let (sarah, code) = new_team(&http, gw, "Rocket", "sarah@example.com").await;
    let (status, miguel) = join_team(&http, gw, &code, "miguel@example.com").await;
    assert_eq!(status, 200, "{miguel}");
    let miguel = Signed::of(&miguel);
    assert_eq!(miguel.team_id, sarah.team_id);
    let (_, me) = get(&http, &format!("{gw}/api/auth/me"), &sarah.token).await;
    assert_eq!(me["user"]["role"], "owner", "{me}");
    assert_eq!(me["session"]["current"], true, "{me}");

    // Sarah's agent runs; then the invite code is tried with her email: refused exactly like a
    // made-up code, and nothing of hers changes.
    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&sarah.token),
        json!({"task": "wait_stdin"}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, gw, &sarah.token, &agent, "running").await;
    let before = sessions(&http, gw, &sarah).await.len();
    let (_, vms_before) = get(&http, &format!("{gw}/api/vm/list"), &sarah.token).await;
    let (bad_status, made_up) = join_team(&http, gw, "AAAA-BBBB-CCCC-DDDD", "x@example.com").await;
    for email in [
        "sarah@example.com",
        "SARAH@example.com ",
        "miguel@example.com",
    ] {
        let (status, body) = join_team(&http, gw, &code, email).await;
        assert_eq!((status, &body), (bad_status, &made_up), "{email}");
        assert!(body.get("accessToken").is_none());
    }
    assert_eq!(bad_status, 401);
    assert_eq!(sessions(&http, gw, &sarah).await.len(), before);
    let (_, vms_after) = get(&http, &format!("{gw}/api/vm/list"), &sarah.token).await;
    assert_eq!(vms_after, vms_before);
    let (_, still) = get(&http, &format!("{gw}/api/agent/{agent}"), &sarah.token).await;
    assert_eq!(still["agent"]["status"], "running");
    // A member sees the team without the others' emails; the owner sees them all.
    let (_, seen) = get(&http, &format!("{gw}/api/team"), &miguel.token).await;
    let emails: Vec<&str> = seen["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["", "miguel@example.com"], "{seen}");
    let (_, seen) = get(&http, &format!("{gw}/api/team"), &sarah.token).await;
    assert_eq!(seen["members"][1]["email"], "miguel@example.com");

    // Device sign-in: a second session for Sarah, listed; revoking it closes its socket.
    let tablet = second_device(&http, gw, &sarah, "Sarah's tablet").await;
    assert_eq!(tablet.user_id, sarah.user_id);
    let listed = sessions(&http, gw, &sarah).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["deviceName"], "Sarah's tablet");
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["current"], true);
    let tablet_session = listed[0]["id"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    for name in ["phone", "tablet", "miguel"] {
        sio.connect(name, gw).await;
    }
    join(
        &mut sio,
        "phone",
        json!({"teamId": sarah.team_id, "token": sarah.token}),
    )
    .await;
    join(
        &mut sio,
        "tablet",
        json!({"teamId": sarah.team_id, "token": tablet.token}),
    )
    .await;
    join(
        &mut sio,
        "miguel",
        json!({"teamId": sarah.team_id, "token": miguel.token}),
    )
    .await;
    let (status, ended) = delete(
        &http,
        &format!("{gw}/api/auth/sessions/{tablet_session}"),
        &sarah.token,
    )
    .await;
    assert_eq!((status, ended["ended"].as_u64()), (200, Some(1)), "{ended}");
    closed_for(&mut sio, "tablet", "revoked").await;
    let (status, _) = get(&http, &format!("{gw}/api/auth/me"), &tablet.token).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &http,
        &format!("{gw}/api/auth/refresh"),
        None,
        json!({"refreshToken": tablet.refresh}),
    )
    .await;
    assert_eq!(status, 401);
    // Sarah's phone, and Miguel, are untouched.
    let (status, _) = get(&http, &format!("{gw}/api/auth/me"), &sarah.token).await;
    assert_eq!(status, 200);
    let ack = sio
        .emit_ack("phone", "chat_message", json!({"message": "still here"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Miguel cannot end Sarah's sessions.
    let phone_session = sessions(&http, gw, &sarah).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = delete(
        &http,
        &format!("{gw}/api/auth/sessions/{phone_session}"),
        &miguel.token,
    )
    .await;
    assert_eq!(status, 404);

    // Two refreshes of one token at once (a phone retrying): both get the same new pair.
    let refresh = |token: String| {
        let http = http.clone();
        let url = format!("{gw}/api/auth/refresh");
        async move { post(&http, &url, None, json!({"refreshToken": token})).await }
    };
    let (a, b) = tokio::join!(
        refresh(miguel.refresh.clone()),
        refresh(miguel.refresh.clone())
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1, b.1, "one pair for both");
    let miguel = Signed {
        token: a.1["accessToken"].as_str().unwrap().to_owned(),
        refresh: a.1["refreshToken"].as_str().unwrap().to_owned(),
        ..miguel
    };

    // Recovery: the owner makes a code for Miguel, who signs in on a new phone with it; a
    // member cannot make one for the owner.
    let (status, code) = post(
        &http,
        &format!("{gw}/api/team/members/{}/recovery-code", miguel.user_id),
        Some(&sarah.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    let (status, recovered) = post(
        &http,
        &format!("{gw}/api/auth/device/redeem"),
        None,
        json!({"code": code["code"]}),
    )
    .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["user"]["id"], miguel.user_id.as_str());
    let (status, body) = post(
        &http,
        &format!("{gw}/api/team/members/{}/recovery-code", sarah.user_id),
        Some(&miguel.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // An operator can make one on the server, for the owner too.
    let (ok, printed) = stack
        .admin(&[
            "recovery-code",
            "--team",
            &sarah.team_id,
            "--email",
            "sarah@example.com",
        ])
        .await;
    assert!(ok, "{printed}");
    let operator_code = printed
        .split_whitespace()
        .find(|w| w.len() == 19 && w.matches('-').count() == 3)
        .unwrap_or_else(|| panic!("no code in {printed}"));
    let (status, body) = post(
        &http,
        &format!("{gw}/api/auth/device/redeem"),
        None,
        json!({"code": operator_code}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], sarah.user_id.as_str());
    let (status, again) = post(
        &http,
        &format!("{gw}/api/auth/device/redeem"),
        None,
        json!({"code": operator_code}),
    )
    .await;
    assert_eq!(status, 401, "one use: {again}");

    // Removing Miguel closes his socket, refuses his tokens and his refresh.
    let (status, body) = delete(
        &http,
        &format!("{gw}/api/team/members/{}", miguel.user_id),
        &sarah.token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    closed_for(&mut sio, "miguel", "member_removed").await;
    let (status, _) = get(&http, &format!("{gw}/api/team"), &miguel.token).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &http,
        &format!("{gw}/api/auth/refresh"),
        None,
        json!({"refreshToken": miguel.refresh}),
    )
    .await;
    assert_eq!(status, 401);

    // Logout ends this device only; logout-all ends the rest.
    let laptop = second_device(&http, gw, &sarah, "laptop").await;
    let (status, _) = post(
        &http,
        &format!("{gw}/api/auth/logout"),
        Some(&laptop.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = get(&http, &format!("{gw}/api/auth/me"), &laptop.token).await;
    assert_eq!(status, 401);
    let (status, _) = get(&http, &format!("{gw}/api/auth/me"), &sarah.token).await;
    assert_eq!(status, 200);

    forged_tokens(stack, &sarah, &miguel, &agent).await;

    let (status, body) = post(
        &http,
        &format!("{gw}/api/auth/logout-all"),
        Some(&sarah.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    closed_for(&mut sio, "phone", "logout").await;
    let (status, _) = get(&http, &format!("{gw}/api/auth/me"), &sarah.token).await;
    assert_eq!(status, 401);
}

/// The claims of a real access token, to forge variants of.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Signs `claims` with the stack's own signing key (under `kid`): only the claims are wrong.
fn sign(stack: &Stack, kid: &str, claims: &Value) -> String {
    crate::support::sign_with(&stack.data_dir.join("keys/jwt-signing.pem"), kid, claims)
}

fn now_secs() -> i64 {
    covibe_types::now_ms() / 1000
}

/// Every forged or misused token is refused over HTTP and by each service's own gRPC port,
/// and none of the calls changes anything.
async fn forged_tokens(stack: &Stack, sarah: &Signed, removed: &Signed, agent: &str) {
    let http = reqwest::Client::new();
    let gw = &stack.gw;
    let kid = kid_of(&sarah.token);
    let good = claims_of(&sarah.token);
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let public = std::fs::read(stack.data_dir.join("keys/jwt-signing.pub.pem")).unwrap();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let foreign = {
        let dir = tempfile::tempdir().unwrap();
        let files = covibe_identity::KeyFiles {
            signing: dir.path().join("s.pem"),
            verifying: dir.path().join("v.pem"),
        };
        let (signer, _) = covibe_identity::load_or_generate(&files).unwrap();
        let user = sarah.user_id.parse().unwrap();
        let team = sarah.team_id.parse().unwrap();
        let session = good["sid"].as_str().unwrap().parse().unwrap();
        signer
            .access_token(user, team, session, Duration::from_secs(600))
            .unwrap()
            .0
    };
    let (status, vm) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&sarah.token),
        json!({"name": "dial", "strategy": "dial_in"}),
    )
    .await;
    assert_eq!(status, 201, "{vm}");
    let (status, vm_token) = post(
        &http,
        &format!("{gw}/api/vm/token"),
        Some(&sarah.token),
        json!({"vmId": vm["vm"]["id"]}),
    )
    .await;
    assert_eq!(status, 201, "{vm_token}");
    let vm_token = vm_token["vmToken"].as_str().unwrap().to_owned();
    let table: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{payload}.",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
            ),
        ),
        ("HS256 signed with the public key", hs256),
        ("unknown kid", sign(stack, "0123456789abcdef", &good)),
        ("another key, under the right kid", {
            let parts: Vec<&str> = foreign.split('.').collect();
            let header = URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})).unwrap(),
            );
            format!("{header}.{}.{}", parts[1], parts[2])
        }),
        (
            "expired",
            sign(stack, &kid, &with("exp", json!(now_secs() - 120))),
        ),
        ("nbf ahead", {
            let mut claims = with("nbf", json!(now_secs() + 3600));
            claims["exp"] = json!(now_secs() + 7200);
            sign(stack, &kid, &claims)
        }),
        (
            "wrong aud",
            sign(stack, &kid, &with("aud", json!("another-service"))),
        ),
        (
            "wrong iss",
            sign(stack, &kid, &with("iss", json!("someone-else"))),
        ),
        ("no session", {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove("sid");
            sign(stack, &kid, &claims)
        }),
        ("a refresh token", sarah.refresh.clone()),
        ("an agent link token", link_token_of(agent)),
        ("a dial-in VM token", vm_token),
        ("a removed member's token", removed.token.clone()),
    ];
    let before = snapshot(&http, gw, sarah).await;
    let auth = AuthServiceClient::new(covibe_bootstrap::channel(&stack.auth).unwrap());
    let team = TeamServiceClient::new(covibe_bootstrap::channel(&stack.team).unwrap());
    let orch =
        OrchestratorServiceClient::new(covibe_bootstrap::channel(&stack.orchestrator).unwrap());
    let vmc =
        VmConnectorServiceClient::new(covibe_bootstrap::channel(&stack.vm_connector).unwrap());
    let preview = PreviewServiceClient::new(covibe_bootstrap::channel(&stack.preview).unwrap());
    for (what, token) in &table {
        for (method, path, body) in [
            ("GET", "/api/team", Value::Null),
            ("GET", "/api/auth/me", Value::Null),
            ("GET", "/api/auth/sessions", Value::Null),
            ("POST", "/api/chat/message", json!({"message": "forged"})),
            ("POST", "/api/agent/spawn", json!({"task": "forged"})),
            ("POST", "/api/vm/register", json!({"name": "forged"})),
            ("POST", "/api/team/invite", json!({})),
            ("POST", "/api/auth/device", json!({})),
        ] {
            let request = if method == "GET" {
                http.get(format!("{gw}{path}"))
            } else {
                http.post(format!("{gw}{path}")).json(&body)
            };
            let response = request.bearer_auth(token).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(status, 401, "{what}: {method} {path}: {text}");
            assert!(text.contains("unauthenticated"), "{what}: {text}");
        }
        let codes = [
            (
                "auth Me",
                auth.clone()
                    .me(bearer(auth_pb::MeRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "auth CreateDeviceCode",
                auth.clone()
                    .create_device_code(bearer(auth_pb::CreateDeviceCodeRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "auth LogoutAll",
                auth.clone()
                    .logout_all(bearer(auth_pb::LogoutRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "team GetTeam",
                team.clone()
                    .get_team(bearer(team_pb::GetTeamRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "team PostMessage",
                team.clone()
                    .post_message(bearer(
                        team_pb::PostMessageRequest {
                            text: "forged".into(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .err(),
            ),
            (
                "team CreateInvite",
                team.clone()
                    .create_invite(bearer(team_pb::CreateInviteRequest::default(), token))
                    .await
                    .err(),
            ),
            (
                "orchestrator ListAgents",
                orch.clone()
                    .list_agents(bearer(orch_pb::ListAgentsRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "orchestrator SpawnAgent",
                orch.clone()
                    .spawn_agent(bearer(
                        orch_pb::SpawnAgentRequest {
                            task: "forged".into(),
                            vm_id: String::new(),
                        },
                        token,
                    ))
                    .await
                    .err(),
            ),
            (
                "vm-connector ListVms",
                vmc.clone()
                    .list_vms(bearer(vmc_pb::ListVmsRequest {}, token))
                    .await
                    .err(),
            ),
            (
                "vm-connector RegisterVm",
                vmc.clone()
                    .register_vm(bearer(
                        vmc_pb::RegisterVmRequest {
                            name: "forged".into(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .err(),
            ),
            (
                "preview GetPreview",
                preview
                    .clone()
                    .get_preview(bearer(preview_pb::GetPreviewRequest {}, token))
                    .await
                    .err(),
            ),
        ];
        for (call, status) in codes {
            let status = status.unwrap_or_else(|| panic!("{what}: {call} was accepted"));
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{what}: {call}: {status:?}"
            );
        }
    }
    assert_eq!(snapshot(&http, gw, sarah).await, before, "nothing changed");
}

/// The link token of a running agent, read from its vm-agent's environment (the only place
/// it exists in clear).
fn link_token_of(agent: &str) -> String {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(agent) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        for var in environ.split(|b| *b == 0) {
            if let Some(token) = var.strip_prefix(b"COVIBE_AGENT_TOKEN=") {
                return String::from_utf8(token.to_vec()).unwrap();
            }
        }
    }
    panic!("no vm-agent process runs agent {agent}");
}

/// What the forged calls could have changed: the team, its chat, agents, VMs, invites and
/// Sarah's sessions.
async fn snapshot(http: &reqwest::Client, gw: &str, member: &Signed) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/api/team",
        "/api/chat/history",
        "/api/agent/list",
        "/api/vm/list",
        "/api/team/invites",
        "/api/auth/sessions",
    ] {
        let (status, body) = get(http, &format!("{gw}{path}"), &member.token).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push(body);
    }
    // The agents' output positions move while they run: compare who and what, not progress.
    for agent in seen[2]["agents"].as_array_mut().into_iter().flatten() {
        agent
            .as_object_mut()
            .unwrap()
            .retain(|k, _| ["id", "owner", "task", "vmId"].contains(&k.as_str()));
    }
    for session in seen[5]["sessions"].as_array_mut().into_iter().flatten() {
        session.as_object_mut().unwrap().remove("lastUsedAt");
    }
    seen
}

#[tokio::test]
async fn identity_in_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::standalone(dir.path(), &[]).await;
    flows(&stack).await;
}

#[tokio::test]
async fn identity_in_the_mesh() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mesh = roomy_mesh(dir.path(), &db.url).await;
    flows(&Stack::of_mesh(&mesh)).await;
}

/// Two gateway replicas over PostgreSQL and Redis: removing a member closes their sockets on
/// both, their refresh fails and their running agent is stopped.
#[tokio::test]
async fn removal_reaches_every_gateway() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = roomy_mesh(dir.path(), &db.url).await;
    let second = mesh.launch("gateway", mesh.gateway_env()).await;
    let first = mesh.gateway.clone();
    let http = reqwest::Client::new();
    let (sarah, code) = new_team(&http, &first, "Rocket", "sarah@example.com").await;
    let (_, miguel) = join_team(&http, &second, &code, "miguel@example.com").await;
    let miguel = Signed::of(&miguel);
    let (status, spawned) = post(
        &http,
        &format!("{second}/api/agent/spawn"),
        Some(&miguel.token),
        json!({"task": "wait_stdin"}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, &first, &sarah.token, &agent, "running").await;
    let mut sio = SioClient::start().await;
    for (name, gw) in [("m1", &first), ("m2", &second), ("s2", &second)] {
        sio.connect(name, gw).await;
    }
    let room = |token: &str| json!({"teamId": sarah.team_id, "token": token});
    join(&mut sio, "m1", room(&miguel.token)).await;
    join(&mut sio, "m2", room(&miguel.token)).await;
    join(&mut sio, "s2", room(&sarah.token)).await;

    let (status, body) = delete(
        &http,
        &format!("{first}/api/team/members/{}", miguel.user_id),
        &sarah.token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    closed_for(&mut sio, "m1", "member_removed").await;
    closed_for(&mut sio, "m2", "member_removed").await;
    let (status, _) = post(
        &http,
        &format!("{second}/api/auth/refresh"),
        None,
        json!({"refreshToken": miguel.refresh}),
    )
    .await;
    assert_eq!(status, 401);
    for gw in [&first, &second] {
        let (status, _) = get(&http, &format!("{gw}/api/agent/list"), &miguel.token).await;
        assert_eq!(status, 401);
    }
    wait_for_status(&http, &first, &sarah.token, &agent, "killed").await;
    // Sarah's socket on the second gateway stays, and hears of the agent's end.
    let status = crate::support::await_event(&mut sio, "s2", &agent, |e, d| {
        e == "agent_status" && d["status"] == "killed"
    })
    .await;
    assert_eq!(status["status"], "killed");
    let ack = sio
        .emit_ack("s2", "chat_message", json!({"message": "still here"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
}

/// Key rotation on a running stack: tokens of the old key work until it is retired, new ones
/// carry the new key's id; a service whose key file is missing does not start.
async fn rotation(stack: &Stack) {
    let http = reqwest::Client::new();
    let gw = &stack.gw;
    let (sarah, _) = new_team(&http, gw, "Keys", "keys@example.com").await;
    let old_kid = kid_of(&sarah.token);
    let (ok, printed) = stack.admin(&["rotate-signing-key"]).await;
    assert!(ok, "{printed}");
    let new_kid = printed
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    assert_ne!(new_kid, old_kid, "{printed}");
    // The auth service notices the new key within a few seconds: refresh until it signs with
    // it (a hang guard bounds the wait, not a speed claim).
    let mut current = sarah.clone();
    let mut signed_new = false;
    for _ in 0..100 {
        let (status, pair) = post(
            &http,
            &format!("{gw}/api/auth/refresh"),
            None,
            json!({"refreshToken": current.refresh}),
        )
        .await;
        assert_eq!(status, 200, "{pair}");
        current.token = pair["accessToken"].as_str().unwrap().to_owned();
        current.refresh = pair["refreshToken"].as_str().unwrap().to_owned();
        if kid_of(&current.token) == new_kid {
            signed_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(signed_new, "new tokens carry the new key's id");
    for token in [&sarah.token, &current.token] {
        let (status, body) = get(&http, &format!("{gw}/api/team"), token).await;
        assert_eq!(status, 200, "both keys verify during the rotation: {body}");
    }
    let (ok, printed) = stack.admin(&["retire-signing-key"]).await;
    assert!(ok, "{printed}");
    assert!(printed.contains(&old_kid), "{printed}");
    let mut refused = false;
    for _ in 0..100 {
        let (status, _) = get(&http, &format!("{gw}/api/team"), &sarah.token).await;
        if status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "the retired key's tokens are refused");
    let (status, body) = get(&http, &format!("{gw}/api/team"), &current.token).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn signing_keys_rotate_in_standalone_and_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::standalone(dir.path(), &[]).await;
    rotation(&stack).await;
    drop(stack);

    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mesh = roomy_mesh(dir.path(), &db.url).await;
    rotation(&Stack::of_mesh(&mesh)).await;

    // A service alone with no key file refuses to start, naming the file.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = covibe_testkit::clean_command(std::path::Path::new(crate::support::COVIBE));
    cmd.arg("orchestrator")
        .env("COVIBE_GRPC_ADDR", "127.0.0.1:0")
        .env("COVIBE_DATA_DIR", empty.path())
        .env("COVIBE_DATABASE_URL", &db.url)
        .env("COVIBE_REDIS_URL", covibe_testkit::redis_url())
        .env("COVIBE_REDIS_KEY_PREFIX", covibe_testkit::unique_prefix());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("jwt-signing.pub.pem") && said.contains("rotate-signing-key"),
        "{said}"
    );
}

/// Guessing and flooding: a team takes only so many new members a minute, whatever addresses
/// they come from (429 with `Retry-After`), one address only so many sign-in attempts; neither
/// locks a member out of signing in on a new device.
#[tokio::test]
async fn sign_in_limits_never_lock_members_out() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::standalone(
        dir.path(),
        &[
            ("COVIBE_LIMITS__TEAM_JOINS_PER_MINUTE", "2"),
            ("COVIBE_LIMITS__LOGIN_PER_IP_PER_MIN", "3"),
            ("COVIBE_LIMITS__LOGIN_BURST_PER_IP", "3"),
            ("COVIBE_LIMITS__TRUST_FORWARDED_FOR", "true"),
        ],
    )
    .await;
    let gw = &stack.gw;
    let http = reqwest::Client::new();
    let (sarah, code) = new_team(&http, gw, "Rocket", "sarah@example.com").await;
    let join_from = |address: String, email: String| {
        let (http, code) = (http.clone(), code.clone());
        let url = format!("{gw}/api/auth/login");
        async move {
            let response = http
                .post(url)
                .header("x-forwarded-for", address)
                .json(&json!({"inviteCode": code, "email": email, "displayName": "N"}))
                .send()
                .await
                .unwrap();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (response.status().as_u16(), retry)
        }
    };
    // Each from an address of its own: the team's own limit stops the third.
    for n in 1..=2 {
        let (status, _) = join_from(format!("10.0.0.{n}"), format!("n{n}@example.com")).await;
        assert_eq!(status, 200);
    }
    let (status, retry) = join_from("10.0.0.3".into(), "n3@example.com".into()).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|secs| secs >= 1), "{retry:?}");
    // One address guessing codes: stopped after its burst, with Retry-After.
    let mut limited = None;
    for n in 0..10 {
        let response = http
            .post(format!("{gw}/api/auth/login"))
            .header("x-forwarded-for", "10.9.9.9")
            .json(&json!({"inviteCode": format!("AAAA-BBBB-CCCC-{n:04}"), "email": "g@example.com", "displayName": "G"}))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 429 {
            limited = Some(response.headers().contains_key("retry-after"));
            break;
        }
        assert_eq!(response.status().as_u16(), 401);
    }
    assert_eq!(
        limited,
        Some(true),
        "one address is limited, with Retry-After"
    );
    // Sarah still signs in on a new device, from another address.
    let (status, code) = post(
        &http,
        &format!("{gw}/api/auth/device"),
        Some(&sarah.token),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    let response = http
        .post(format!("{gw}/api/auth/device/redeem"))
        .header("x-forwarded-for", "10.1.1.1")
        .json(&json!({"code": code["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}
