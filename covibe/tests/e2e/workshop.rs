//! The Workshop's server side, as a phone on a flaky network needs it: a chat send retried
//! with its client id is one message, broadcast once (also when the retry reaches another
//! gateway replica); presence is per device and per replica, carries the agents each member
//! watches, and a replica that dies has its members turn offline for the others.

use covibe_testkit::{SioClient, TestDb, redis_url};
use serde_json::{Value, json};

use crate::support::*;

/// Two agent ids, in sorted order (watching needs no real agent: only the team sees it).
const AGENT_X: &str = "0190a8e2-7c1d-7bbb-8000-0000000000a1";
const AGENT_Y: &str = "0190a8e2-7c1d-7bbb-8000-0000000000b2";

struct Signed {
    id: String,
    token: String,
}

impl Signed {
    fn of(body: &Value) -> Self {
        Self {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            token: body["accessToken"].as_str().unwrap().to_owned(),
        }
    }
}

/// A team with Sarah (its owner) and Miguel: (team id, Sarah, Miguel).
async fn two_members(http: &reqwest::Client, gw: &str) -> (String, Signed, Signed) {
    let (status, sarah) = create_team(http, gw, "Workshop", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let (status, miguel) = post(
        http,
        &format!("{gw}/api/auth/login"),
        None,
        json!({"inviteCode": sarah["inviteCode"], "email": "miguel@example.com", "displayName": "Miguel"}),
    )
    .await;
    assert_eq!(status, 200, "{miguel}");
    let team = sarah["team"]["id"].as_str().unwrap().to_owned();
    (team, Signed::of(&sarah), Signed::of(&miguel))
}

/// Connects `client` to `gw` and joins the team as `who`.
async fn seat(sio: &mut SioClient, client: &str, gw: &str, team: &str, who: &Signed) {
    sio.connect(client, gw).await;
    join(sio, client, json!({"teamId": team, "token": who.token})).await;
}

/// Waits for a `team_presence` seen by `client` in which `user`'s entry satisfies `pred`;
/// returns that entry, and forgets every other event `client` has received so far. Call it
/// before the next change: what is forgotten is then no newer than what it returns (a gateway
/// relays only snapshots newer than the last it relayed), so the next wait sees news only.
async fn await_user(
    sio: &mut SioClient,
    client: &str,
    user: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let (c, u) = (client.to_owned(), user.to_owned());
    let find = move |v: &Value| -> Option<Value> {
        v["data"]["users"]
            .as_array()?
            .iter()
            .find(|e| e["userId"] == u.as_str())
            .cloned()
    };
    let event = sio
        .recv_where("team_presence", |v| {
            v["op"] == "event"
                && v["client"] == c.as_str()
                && v["event"] == "team_presence"
                && find(v).is_some_and(|e| pred(&e))
        })
        .await;
    sio.drain_events(client);
    find(&event).unwrap()
}

/// Sarah sends messages with client ids through `gw_a` and retries them through `gw_b` (REST
/// twice; Socket.io, then REST): each is stored once, and each joined socket (Sarah's on
/// `gw_a`, Miguel's on `gw_b`) receives each exactly once. Bad client ids are refused.
async fn retried_sends_are_one_message(
    http: &reqwest::Client,
    sio: &mut SioClient,
    (gw_a, gw_b): (&str, &str),
    sarah: &Signed,
    miguel: &Signed,
) {
    let url = |gw: &str| format!("{gw}/api/chat/message");
    let body = json!({"message": "on a train", "clientId": "retry-1"});
    let (status, first) = post(http, &url(gw_a), Some(&sarah.token), body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let first = first["message"].clone();
    assert_eq!(first["clientId"], "retry-1");
    let (status, again) = post(http, &url(gw_b), Some(&sarah.token), body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        again["message"], first,
        "the stored one: same id, same time"
    );

    let ack = sio
        .emit_ack(
            "sarah",
            "chat_message",
            json!({"message": "in a tunnel", "clientId": "retry-2"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let second = ack["message"].clone();
    let (status, again) = post(
        http,
        &url(gw_b),
        Some(&sarah.token),
        json!({"message": "in a tunnel", "clientId": "retry-2"}),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["message"], second);
    let (status, plain) = post(
        http,
        &url(gw_a),
        Some(&sarah.token),
        json!({"message": "out"}),
    )
    .await;
    assert_eq!(status, 201, "{plain}");
    let plain = plain["message"].clone();
    assert_eq!(plain["clientId"], Value::Null);

    // Each once, in order: a second broadcast would have come before the last message.
    for client in ["sarah", "miguel"] {
        for want in [&first, &second, &plain] {
            assert_eq!(
                &sio.next_event(client, "chat_message").await,
                want,
                "{client}"
            );
        }
        let extra: Vec<_> = sio
            .drain_events(client)
            .into_iter()
            .filter(|(event, _)| event == "chat_message")
            .collect();
        assert!(extra.is_empty(), "{client} got more: {extra:?}");
    }
    let (status, history) = get(http, &format!("{gw_b}/api/chat/history"), &miguel.token).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"], json!([first, second, plain]));

    for bad in ["", "has space", &"x".repeat(65)] {
        let (status, body) = post(
            http,
            &url(gw_a),
            Some(&sarah.token),
            json!({"message": "x", "clientId": bad}),
        )
        .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("clientId"),
            "{body}"
        );
    }
    let ack = sio
        .emit_ack(
            "sarah",
            "chat_message",
            json!({"message": "x", "clientId": "semi;colon"}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "invalid_argument", "{ack}");
}

/// On one gateway: each of Sarah's sockets watches an agent, and Miguel sees both, sorted;
/// `null` and a disconnect clear what a socket watched; her last socket going makes her
/// offline. Bad input is refused as usual.
async fn watching_follows_each_socket(
    http: &reqwest::Client,
    sio: &mut SioClient,
    gw: &str,
    team: &str,
    sarah: &Signed,
) {
    let s = sarah.id.as_str();
    seat(sio, "sarah-phone", gw, team, sarah).await;
    sio.connect("stranger", gw).await;
    let ack = sio
        .emit_ack("stranger", "agent_watch", json!({"agentId": AGENT_X}))
        .await;
    assert_eq!(ack["error"]["code"], "unauthenticated", "{ack}");
    for bad in [
        json!({"agentId": "nope"}),
        json!({"agentId": 7}),
        json!("x"),
    ] {
        let ack = sio.emit_ack("sarah", "agent_watch", bad.clone()).await;
        assert_eq!(ack["ok"], false, "{bad}: {ack}");
        assert_eq!(ack["error"]["code"], "invalid_argument", "{ack}");
    }

    let ack = sio
        .emit_ack("sarah", "agent_watch", json!({"agentId": AGENT_X}))
        .await;
    assert_eq!(ack, json!({"ok": true}));
    await_user(sio, "miguel", s, |u| u["watching"] == json!([AGENT_X])).await;
    let ack = sio
        .emit_ack("sarah-phone", "agent_watch", json!({"agentId": AGENT_Y}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let both = await_user(sio, "miguel", s, |u| {
        u["watching"] == json!([AGENT_X, AGENT_Y])
    })
    .await;
    assert_eq!(both["status"], "online");
    let (_, roster) = get(http, &format!("{gw}/api/team/presence"), &sarah.token).await;
    let listed = roster["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == s)
        .unwrap();
    assert_eq!(listed["watching"], json!([AGENT_X, AGENT_Y]), "{roster}");

    let ack = sio
        .emit_ack("sarah", "agent_watch", json!({"agentId": null}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    await_user(sio, "miguel", s, |u| u["watching"] == json!([AGENT_Y])).await;
    sio.close("sarah-phone").await;
    let left = await_user(sio, "miguel", s, |u| u["watching"] == json!([])).await;
    assert_eq!(left["status"], "online", "her other socket stays");
    sio.close("sarah").await;
    await_user(sio, "miguel", s, |u| u["status"] == "offline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workshop_standalone_retries_and_watching() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, gw) = start_standalone(dir.path()).await;
    let http = reqwest::Client::new();
    let (team, sarah, miguel) = two_members(&http, &gw).await;
    let mut sio = SioClient::start().await;
    seat(&mut sio, "sarah", &gw, &team, &sarah).await;
    seat(&mut sio, "miguel", &gw, &team, &miguel).await;
    retried_sends_are_one_message(&http, &mut sio, (&gw, &gw), &sarah, &miguel).await;
    watching_follows_each_socket(&http, &mut sio, &gw, &team, &sarah).await;
}

/// Two gateway replicas of the multi-process mesh, with a short presence TTL: retries across
/// replicas; Sarah stays online while a device of hers is on either replica (her watching
/// follows her devices), goes offline when both are gone, and when the replica holding her
/// is killed (SIGKILL, no goodbye) Miguel, on the other one, is told she is offline once her
/// entry there expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workshop_across_gateway_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let short_ttl = vec![(
        "COVIBE_LIMITS__PRESENCE_TTL_SECS".to_owned(),
        "4".to_owned(),
    )];
    let mut mesh = Mesh::start_with(dir.path(), &db.url, &redis_url(), short_ttl).await;
    let gw_a = mesh.gateway.clone();
    let gw_b = mesh.launch("gateway", mesh.gateway_env()).await;
    let http = reqwest::Client::new();
    let (team, sarah, miguel) = two_members(&http, &gw_a).await;
    let s = sarah.id.as_str();
    let mut sio = SioClient::start().await;
    seat(&mut sio, "sarah", &gw_a, &team, &sarah).await;
    seat(&mut sio, "miguel", &gw_b, &team, &miguel).await;
    retried_sends_are_one_message(&http, &mut sio, (&gw_a, &gw_b), &sarah, &miguel).await;

    // Her laptop on A watches an agent, her phone is on B.
    seat(&mut sio, "sarah-phone", &gw_b, &team, &sarah).await;
    let ack = sio
        .emit_ack("sarah", "agent_watch", json!({"agentId": AGENT_X}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let seen = await_user(&mut sio, "miguel", s, |u| u["watching"] == json!([AGENT_X])).await;
    assert_eq!(seen["status"], "online");
    sio.close("sarah").await;
    let after = await_user(&mut sio, "miguel", s, |u| u["watching"] != json!([AGENT_X])).await;
    assert_eq!(after["status"], "online", "her phone on B keeps her online");
    assert_eq!(after["watching"], json!([]));
    sio.close("sarah-phone").await;
    await_user(&mut sio, "miguel", s, |u| u["status"] == "offline").await;

    // Back on A only; A is killed.
    seat(&mut sio, "sarah-again", &gw_a, &team, &sarah).await;
    await_user(&mut sio, "miguel", s, |u| u["status"] == "online").await;
    mesh.kill("gateway").await;
    let gone = await_user(&mut sio, "miguel", s, |u| u["status"] == "offline").await;
    assert_eq!(gone["watching"], json!([]));
    let (status, roster) = get(&http, &format!("{gw_b}/api/team/presence"), &miguel.token).await;
    assert_eq!(status, 200, "{roster}");
    let statuses: Vec<(&str, &str)> = roster["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["userId"].as_str().unwrap(), u["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![(s, "offline"), (miguel.id.as_str(), "online")]
    );
}
