//! The GitHub push webhook and the shared preview.

use covibe_testkit::SioClient;
use serde_json::{Value, json};

use crate::support::*;

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

/// The next `preview_updated` announcing a push (the deploys it starts announce their own).
async fn pushed(sio: &mut SioClient) -> Value {
    let v = sio
        .recv_where("preview_updated", |v| {
            v["op"] == "event"
                && v["event"] == "preview_updated"
                && v["data"]["status"] == "pending"
        })
        .await;
    v["data"].clone()
}

/// GitHub's push webhook, end to end: the owner configures the team's preview and gets the
/// team's own secret, once; a signed push reaches the team's sockets as `preview_updated`; a
/// forged one is refused with nothing sent; a redelivery is acknowledged as a duplicate and
/// sends nothing twice; a rotated secret replaces the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_push_webhook_updates_the_preview() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) = start_standalone(dir.path()).await;
    let http = reqwest::Client::new();
    let (status, sarah) = create_team(&http, &gw, "Rocket", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();

    // Before any configuration: no preview, and the config says so.
    let (status, preview) = get(&http, &format!("{gw}/api/preview"), &token).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["preview"]["status"], "none");
    let (status, config) = get(&http, &format!("{gw}/api/preview/config"), &token).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["config"]["configured"], false);
    // A member who is not an owner or admin may read the preview, not configure it.
    let miguel = join_with_invite(
        &http,
        &gw,
        &sarah["inviteCode"],
        "miguel@example.com",
        "Miguel",
    )
    .await;
    let miguel = miguel["accessToken"].as_str().unwrap().to_owned();
    let settings = json!({
        "repository": "rocket/app", "branch": "main",
        "startCommand": "python3 -m http.server 8000", "port": 8000,
    });
    let config_url = format!("{gw}/api/preview/config");
    let (status, refused) = put(&http, &config_url, &miguel, settings.clone()).await;
    assert_eq!(status, 403, "{refused}");
    let (status, _) = get(&http, &config_url, &miguel).await;
    assert_eq!(status, 403);
    let (status, _) = get(&http, &format!("{gw}/api/preview"), &miguel).await;
    assert_eq!(status, 200);
    // Bad settings are refused clearly.
    let (status, bad) = put(
        &http,
        &config_url,
        &token,
        json!({"repository": "rocket/app", "startCommand": "", "port": 8000}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("startCommand"),
        "{bad}"
    );

    // The owner configures it: the team's secret comes back this once.
    let (status, configured) = put(&http, &config_url, &token, settings.clone()).await;
    assert_eq!(status, 200, "{configured}");
    let secret = configured["webhookSecret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert!(
        configured["webhookUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/webhook/push?team={team_id}")),
        "{configured}"
    );
    assert_eq!(configured["config"]["healthPath"], "/");
    let (_, again) = put(&http, &config_url, &token, settings).await;
    assert_eq!(again["webhookSecret"], Value::Null, "shown once: {again}");
    let (_, read) = get(&http, &config_url, &token).await;
    assert!(!read.to_string().contains(&secret), "{read}");
    let secret = secret.as_str();

    let mut sio = SioClient::start().await;
    sio.connect("sarah", &gw).await;
    join(
        &mut sio,
        "sarah",
        json!({"teamId": team_id, "token": token}),
    )
    .await;

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
        &github_signature(secret, &body),
        &body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], true, "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
    let event = pushed(&mut sio).await;
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
        &github_signature(secret, &body),
        &forged,
    )
    .await;
    assert_eq!(status, 401, "{answer}");

    // A redelivery of the first push: acknowledged, nothing new.
    let (status, answer) = deliver_push(
        &http,
        &hook,
        "delivery-1",
        &github_signature(secret, &body),
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
        &github_signature(secret, &forged),
        &forged,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let event = pushed(&mut sio).await;
    assert_eq!(event["commit"], second, "{event}");
    let extra: Vec<_> = sio
        .drain_events("sarah")
        .into_iter()
        .filter(|(name, data)| name == "preview_updated" && data["status"] == "pending")
        .collect();
    assert!(extra.is_empty(), "{extra:?}");

    // A new secret: the old one is refused from now on, the new one works.
    let (status, rotated) = post(
        &http,
        &format!("{gw}/api/preview/config/webhook-secret"),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_secret = rotated["webhookSecret"].as_str().unwrap();
    let third = push("3333333333333333333333333333333333333333");
    let old = github_signature(secret, &third);
    let (status, _) = deliver_push(&http, &hook, "delivery-4", &old, &third).await;
    assert_eq!(status, 401);
    let new = github_signature(new_secret, &third);
    let (status, answer) = deliver_push(&http, &hook, "delivery-4", &new, &third).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], true, "{answer}");

    // A push as large as GitHub sends (this route alone takes up to 25 MB).
    let big = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "after": "4444444444444444444444444444444444444444",
        "repository": {"full_name": "rocket/app"},
        "commits": [{"message": "x".repeat(20 * 1024 * 1024)}],
    }))
    .unwrap();
    let signed = github_signature(new_secret, &big);
    let (status, answer) = deliver_push(&http, &hook, "delivery-5", &signed, &big).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], true, "{answer}");
}
