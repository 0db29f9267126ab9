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
    let (status, sarah) = create_team(&http, &gw, "Rocket", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let token = sarah["accessToken"].as_str().unwrap().to_owned();
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
