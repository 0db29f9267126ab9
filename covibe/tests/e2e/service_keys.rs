//! A service key end to end, as on Kubernetes: the orchestrator runs without the token signing
//! key (only auth holds it) and with a key of its own made by `covibe admin add-service-key`,
//! and the team's tool-use policy is applied. The same key cannot vouch for anyone else: a
//! token it signs naming auth, or a member, is refused by the services and the gateway. Once
//! retired, its tokens are refused too.

use std::path::Path;
use std::time::Duration;

use covibe_bootstrap::bearer;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::Code;
use covibe_testkit::{SioClient, TestDb, redis_url};
use serde_json::{Value, json};

use crate::support::{
    Env, Mesh, Trio, admin_with, await_event, control_agent_command, get, join, put,
    ran_without_asking, sign_with, spawn_agent as spawn, trio, wait_for_status,
};

/// Runs `covibe admin ARGS...` on the keys under `dir`; its success and what it printed.
async fn admin(dir: &Path, args: &[&str]) -> (bool, String) {
    let env = [("COVIBE_DATA_DIR".to_owned(), dir.display().to_string())];
    admin_with(&env, args).await
}

/// Claims as the mesh's signers write them, for `sub` of `kind`.
fn claims(sub: &str, kind: &str, team: &str) -> Value {
    let now = covibe_types::now_ms() / 1000;
    json!({
        "iss": "covibe", "aud": "covibe", "sub": sub, "kind": kind, "team": team,
        "sid": fresh_id(), "iat": now, "nbf": now, "exp": now + 60, "jti": fresh_id(),
    })
}

fn fresh_id() -> String {
    covibe_types::SessionId::new().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_orchestrator_applies_team_policy_with_its_own_service_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let key = dir.path().join("service/orchestrator.pem");
    let out = key.display().to_string();

    // The operator's steps: the signing key, then the orchestrator's own key beside it.
    let (ok, text) = admin(dir.path(), &["rotate-signing-key"]).await;
    assert!(ok, "{text}");
    let (ok, text) = admin(
        dir.path(),
        &["add-service-key", "orchestrator", "--out", &out],
    )
    .await;
    assert!(ok, "{text}");
    let kid = text
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(text.contains("for orchestrator"), "{text}");
    let verifying = std::fs::read_to_string(dir.path().join("keys/jwt-signing.pub.pem")).unwrap();
    assert_eq!(
        verifying.matches("service: orchestrator\n").count(),
        1,
        "{verifying}"
    );
    let before = std::fs::read(&key).unwrap();
    let (ok, text) = admin(
        dir.path(),
        &["add-service-key", "orchestrator", "--out", &out],
    )
    .await;
    assert!(
        !ok && text.contains("exists"),
        "not replaced unasked: {text}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // The mesh (it adds a signing key of its own: the service key survives the rotation), the
    // orchestrator unable to read any signing key.
    let agent_command = control_agent_command();
    let everyone: Env = vec![("COVIBE_AGENT_COMMAND".to_owned(), agent_command)];
    let orchestrator: Env = vec![
        (
            "COVIBE_AUTH__SIGNING_KEY_FILE".to_owned(),
            dir.path().join("absent/signing.pem").display().to_string(),
        ),
        ("COVIBE_AUTH__SERVICE_KEY_FILE".to_owned(), out.clone()),
    ];
    let mesh =
        Mesh::start_with_orchestrator(dir.path(), &db.url, &redis_url(), everyone, orchestrator)
            .await;
    let gw = mesh.gateway.as_str();
    let http = reqwest::Client::new();
    let Trio {
        team_id,
        sarah_id,
        sarah_token,
        ..
    } = trio(&http, gw).await;
    let (status, body) = put(
        &http,
        &format!("{gw}/api/team/policy"),
        &sarah_token,
        json!({"allow": ["Bash(echo allowed:*)"], "deny": []}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut sio = SioClient::start().await;
    sio.connect("sarah", gw).await;
    join(
        &mut sio,
        "sarah",
        json!({"teamId": team_id, "token": sarah_token}),
    )
    .await;

    // Allowed by the team's policy: it runs without asking its owner (the command's result,
    // not the line naming the command, which comes before any question).
    let (allowed, vm) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20allowed%20ok").await;
    ran_without_asking(&mut sio, "sarah", &allowed, "allowed ok").await;
    wait_for_status(&http, gw, &sarah_token, &allowed, "completed").await;
    // And not by chance: a command the policy does not allow is asked of the owner.
    let (asked, _) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20undecided").await;
    let card = await_event(&mut sio, "sarah", &asked, |event, _| {
        event == "agent_permission"
    })
    .await;
    assert_eq!(card["summary"], "echo undecided", "{card}");
    let (status, audit) = get(&http, &format!("{gw}/api/vm/{vm}/audit"), &sarah_token).await;
    assert_eq!(status, 200, "{audit}");
    let by_policy: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.permission" && e["actorId"] == "policy")
        .collect();
    assert_eq!(by_policy.len(), 1, "{audit}");
    assert_eq!(by_policy[0]["result"], "allowed");
    assert!(
        by_policy[0]["detail"]
            .as_str()
            .unwrap()
            .contains("allowed by the team's policy: Bash(echo allowed:*)"),
        "{audit}"
    );

    // What the orchestrator's key signs for the orchestrator, the team service answers.
    let team = TeamServiceClient::new(covibe_bootstrap::channel(&mesh.url("team")).unwrap());
    let signed = |sub: &str, kind: &str| sign_with(&key, &kid, &claims(sub, kind, &team_id));
    let read_policy = |token: String| {
        let mut team = team.clone();
        let (team_id, user_id) = (team_id.clone(), sarah_id.clone());
        async move {
            team.get_agent_policy(bearer(
                team_pb::GetAgentPolicyRequest { team_id, user_id },
                &token,
            ))
            .await
        }
    };
    let policy = read_policy(signed("service:orchestrator", "service"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.team.unwrap().allow, vec!["Bash(echo allowed:*)"]);

    // Naming auth, it is no token at all: refused by auth-only calls as a forgery.
    let as_auth = signed("service:auth", "service");
    let err = team
        .clone()
        .get_member(bearer(
            team_pb::GetMemberRequest {
                user_id: sarah_id.clone(),
            },
            &as_auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = read_policy(as_auth).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Nor does it sign for a member, at the gateway or at a service.
    let as_sarah = signed(&sarah_id, "access");
    let (status, body) = get(&http, &format!("{gw}/api/team"), &as_sarah).await;
    assert_eq!(status, 401, "{body}");
    let err = team
        .clone()
        .get_team(bearer(team_pb::GetTeamRequest {}, &as_sarah))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Retired, the key's tokens are refused once the services reread the verifying file.
    let (ok, text) = admin(dir.path(), &["retire-service-key", "orchestrator"]).await;
    assert!(ok && text.contains(&kid), "{text}");
    let mut refused = None;
    for _ in 0..100 {
        match read_policy(signed("service:orchestrator", "service")).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => {
                refused = Some(err.code());
                break;
            }
        }
    }
    assert_eq!(refused, Some(Code::Unauthenticated));
    drop(mesh);
}
