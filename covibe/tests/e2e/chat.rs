//! Chat, presence and VMs.

use std::collections::BTreeMap;

use covibe_testkit::{SioClient, TestDb};
use serde_json::json;

use crate::support::*;

/// Chat (REST and Socket.io, live and history), presence (join, update, disconnect) and the
/// caller's VMs, for two teammates and a member of another team who sees none of it.
async fn chat_presence_and_vms(gw: &str) {
    let http = reqwest::Client::new();
    let Trio {
        team_id,
        sarah_id,
        sarah_token,
        miguel_id,
        miguel_token,
        chen_team,
        chen_id,
        chen_token,
    } = trio(&http, gw).await;

    let mut sio = SioClient::start().await;
    for name in ["sarah", "miguel", "chen"] {
        sio.connect(name, gw).await;
    }
    // A socket that has not joined a team can neither chat nor set presence.
    let ack = sio
        .emit_ack("chen", "chat_message", json!({"message": "hi"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "unauthenticated", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("join a team")
    );
    let ack = sio
        .emit_ack("chen", "presence_update", json!({"status": "away"}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");

    for (name, team, token) in [
        ("sarah", &team_id, &sarah_token),
        ("miguel", &team_id, &miguel_token),
        ("chen", &chen_team, &chen_token),
    ] {
        join(&mut sio, name, json!({"teamId": team, "token": token})).await;
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
    assert_eq!(ack["error"]["code"], "invalid_argument", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{ack}"
    );
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
    // An SSH VM needs where to log in, as whom, and exactly one secret.
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    for (body, says) in [
        (
            json!({"name": "remote", "strategy": "ssh_proxy"}),
            "host must be",
        ),
        (
            json!({"name": "remote", "strategy": "ssh_proxy", "host": "vm.example.com"}),
            "username must be",
        ),
        (
            json!({"name": "remote", "strategy": "ssh_proxy", "host": "vm.example.com", "username": "dev"}),
            "needs a privateKey or a password",
        ),
        (
            json!({"name": "remote", "strategy": "ssh_proxy", "host": "vm.example.com", "username": "dev",
                   "privateKey": key, "password": "hunter2"}),
            "exactly one",
        ),
        (
            json!({"name": "remote", "strategy": "ssh_proxy", "host": "-oProxyCommand=x", "username": "dev",
                   "password": "hunter2"}),
            "host must be",
        ),
        (
            json!({"name": "remote", "strategy": "local", "host": "vm.example.com"}),
            "ssh_proxy VMs only",
        ),
    ] {
        let (status, answer) = post(
            &http,
            &format!("{gw}/api/vm/register"),
            Some(&sarah_token),
            body,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{answer}");
        assert!(!message.contains("hunter2"), "{answer}");
    }
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
