//! PostgreSQL restarted under the team's writes: an agent's output being ingested, members
//! joining with the invite code, chat messages. The mesh runs over a PostgreSQL server of the
//! test's own (the machine's shared one is never restarted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use covibe_testkit::{PgServer, PgStop, SioClient};
use serde_json::{Value, json};

use crate::support::*;

/// At most this many chat messages and joins (the invite's 50 uses) are made, one after
/// another, until the restarts are over.
const MAX_MESSAGES: u64 = 150;
const MAX_JOINS: u64 = 40;
/// The agent prints this many lines, a few milliseconds apart: it is still printing at the
/// second restart.
const LINES: u64 = 5000;

/// One answer the gateway gave to a write.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A failure a client can act on: `503 unavailable` with a message (try again), not an
    /// internal error.
    fn clear_error(&self) -> bool {
        self.status == 503
            && self.body["error"]["code"] == "unavailable"
            && self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
    }
}

/// What a writer has been answered so far, for the test to watch.
#[derive(Default)]
struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Set by the test: finish the write under way, then stop.
    stop: AtomicBool,
}

/// PostgreSQL is stopped twice (a fast shutdown, then an immediate one, as in a crash) while an
/// agent prints, members join and chat messages are sent, and kept down until every kind of
/// write has been refused at least once. Every write is answered (no hang): success, or a
/// server error with a typed code that the client retries. Afterwards every acknowledged chat
/// message is there once (retries with the same `clientId` do not duplicate), every member
/// answered 200 is in the team once, and the viewer and the database have every line of the
/// agent exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgServer::start().await;
    let mesh = roomy_mesh(dir.path(), &pg.url()).await;
    let gw = mesh.gateway.clone();
    // A hang guard, not a speed claim: no answer in a minute is a hang.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let (status, owner) = create_team(&http, &gw, "Restart", "o@example.com", "Owner").await;
    assert_eq!(status, 201, "{owner}");
    let token = owner["accessToken"].as_str().unwrap().to_owned();
    let team = owner["team"]["id"].as_str().unwrap().to_owned();
    let invite = owner["inviteCode"].as_str().unwrap().to_owned();
    let join = json!({"teamId": team, "token": token});
    let mut sio = SioClient::start().await;
    sio.connect("viewer", &gw).await;
    sio.tally("viewer").await;
    crate::support::join(&mut sio, "viewer", join.clone()).await;
    sio.resume_on_resync("viewer", join.clone()).await;
    let mut viewer = Watcher {
        http: http.clone(),
        sio,
        token: token.clone(),
        join,
    };
    let agent = viewer
        .spawn(&gw, &format!("lines={LINES} delay_ms=3 print"))
        .await;
    let total = expected_lines(LINES);

    let chat_progress = Arc::new(Progress::default());
    let join_progress = Arc::new(Progress::default());
    let chat = tokio::spawn(send_messages(
        http.clone(),
        gw.clone(),
        token.clone(),
        chat_progress.clone(),
    ));
    let joins = tokio::spawn(join_members(
        http.clone(),
        gw.clone(),
        invite,
        join_progress.clone(),
    ));

    for (stop, after) in [(PgStop::Fast, 10), (PgStop::Immediate, 20)] {
        wait_until_writes("writes before the restart", || {
            chat_progress.ok.load(Ordering::Relaxed) >= after
        })
        .await;
        let before = (
            chat_progress.failed.load(Ordering::Relaxed),
            join_progress.failed.load(Ordering::Relaxed),
        );
        pg.stop(stop).await;
        let seen = viewer.sio.tally_of("viewer", &agent).await.count;
        assert!(seen < total, "the agent's output is still being ingested");
        // Down until a message and a join have both been refused meanwhile.
        wait_until_writes("every kind of write refused while down", || {
            chat_progress.failed.load(Ordering::Relaxed) > before.0
                && join_progress.failed.load(Ordering::Relaxed) > before.1
        })
        .await;
        pg.start_again().await;
    }
    // A few more of each after the last restart, then the writers stop.
    let after = (
        chat_progress.ok.load(Ordering::Relaxed),
        join_progress.ok.load(Ordering::Relaxed),
    );
    wait_until_writes("writes after the restarts", || {
        chat_progress.ok.load(Ordering::Relaxed) >= after.0 + 5
            && join_progress.ok.load(Ordering::Relaxed) >= after.1 + 2
    })
    .await;
    chat_progress.stop.store(true, Ordering::Relaxed);
    join_progress.stop.store(true, Ordering::Relaxed);

    let chat_answers = chat.await.unwrap();
    let join_answers = joins.await.unwrap();
    wait_for_status(&http, &gw, &token, &agent, "completed").await;
    let tally = tally_complete(&mut viewer.sio, "viewer", &agent, total).await;

    let statuses = |answers: &BTreeMap<String, Vec<Answer>>| {
        let mut count = BTreeMap::<u16, u64>::new();
        for answer in answers.values().flatten() {
            *count.entry(answer.status).or_default() += 1;
        }
        count
    };
    eprintln!(
        "postgres restarts: chat answers {:?}, join answers {:?}; live {tally:?}",
        statuses(&chat_answers),
        statuses(&join_answers)
    );

    // Every write was answered: success or a clear error, and nothing else. A join retried
    // after a server error that had made the member after all signs that member in (its join
    // key), rather than refusing the email as taken.
    for (what, answers) in [("chat", &chat_answers), ("join", &join_answers)] {
        for (key, tries) in answers {
            for answer in tries {
                assert!(
                    answer.ok() || answer.clear_error(),
                    "{what} {key}: neither success nor a clear error: {tries:?}"
                );
            }
        }
    }
    let failed = |answers: &BTreeMap<String, Vec<Answer>>| {
        answers.values().flatten().filter(|a| !a.ok()).count()
    };
    assert!(failed(&chat_answers) > 0 && failed(&join_answers) > 0);

    // Chat: every message acknowledged, once, with the id it was acknowledged with.
    let (status, history) = get(&http, &format!("{gw}/api/chat/history?limit=200"), &token).await;
    assert_eq!(status, 200, "{history}");
    let stored: Vec<&Value> = history["messages"].as_array().unwrap().iter().collect();
    for (client_id, tries) in &chat_answers {
        let acked = tries
            .iter()
            .find(|a| a.ok())
            .unwrap_or_else(|| panic!("message {client_id} was never acknowledged: {tries:?}"));
        let copies: Vec<&&Value> = stored
            .iter()
            .filter(|m| m["clientId"] == client_id.as_str())
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "message {client_id} stored once: {copies:?}"
        );
        assert_eq!(
            copies[0]["id"], acked.body["message"]["id"],
            "message {client_id} is the one acknowledged"
        );
    }
    assert_eq!(stored.len(), chat_answers.len(), "no other message stored");

    // Members: everyone answered 200 is in the team, once.
    let (status, body) = get(&http, &format!("{gw}/api/team"), &token).await;
    assert_eq!(status, 200, "{body}");
    let members = body["members"].as_array().unwrap();
    for (email, tries) in &join_answers {
        let in_team = members
            .iter()
            .filter(|m| m["email"] == email.as_str())
            .count();
        let joined = tries.iter().any(Answer::ok);
        assert!(
            in_team == usize::from(joined),
            "{email}: a member {in_team} times, answered {tries:?}"
        );
    }
    let joined = join_answers
        .values()
        .filter(|tries| tries.iter().any(Answer::ok))
        .count();
    assert!(joined > 0, "members joined: {join_answers:?}");

    // The agent: every line once, in order, live and in the database.
    tally.assert_every_line_once(total, "the viewer");
    let (_, body) = get(&http, &format!("{gw}/api/agent/{agent}"), &token).await;
    assert_eq!(body["agent"]["outputSeq"], total, "{body}");
    let history = viewer.history_from(&gw, &agent, 0).await;
    assert_seqs(&history, 0..total, "the database holds every line");

    // And the team goes on as before.
    let (status, body) = post(
        &http,
        &format!("{gw}/api/chat/message"),
        Some(&token),
        json!({"message": "after", "clientId": "after"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// One write, answered: the status and body (a request with no answer within the client's
/// timeout is a hang, and fails the test).
async fn write(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Answer {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: no answer: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

/// Sends chat messages one after another until told to stop, each retried with its
/// `clientId` until it is acknowledged; every answer, by client id.
async fn send_messages(
    http: reqwest::Client,
    gw: String,
    token: String,
    progress: Arc<Progress>,
) -> BTreeMap<String, Vec<Answer>> {
    let mut answers = BTreeMap::new();
    for i in 0..MAX_MESSAGES {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let client_id = format!("m{i:03}");
        let tries: &mut Vec<Answer> = answers.entry(client_id.clone()).or_default();
        loop {
            let answer = write(
                &http,
                &format!("{gw}/api/chat/message"),
                Some(&token),
                json!({"message": format!("message {i}"), "clientId": client_id}),
            )
            .await;
            let ok = answer.ok();
            tries.push(answer);
            if ok {
                progress.ok.fetch_add(1, Ordering::Relaxed);
                break;
            }
            progress.failed.fetch_add(1, Ordering::Relaxed);
            assert!(tries.len() < 2000, "message {client_id} never went through");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answers
}

/// New members join with the invite code one after another until told to stop, each retried
/// with the same email and join key after a server error; every answer, by email.
async fn join_members(
    http: reqwest::Client,
    gw: String,
    invite: String,
    progress: Arc<Progress>,
) -> BTreeMap<String, Vec<Answer>> {
    let mut answers = BTreeMap::new();
    for i in 0..MAX_JOINS {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let email = format!("member{i}@example.com");
        let tries: &mut Vec<Answer> = answers.entry(email.clone()).or_default();
        loop {
            let answer = write(
                &http,
                &format!("{gw}/api/auth/login"),
                None,
                json!({
                    "inviteCode": invite,
                    "email": email,
                    "displayName": format!("Member {i}"),
                    "joinKey": format!("join-key-of-member-{i}"),
                }),
            )
            .await;
            let (ok, server_error) = (answer.ok(), answer.status >= 500);
            tries.push(answer);
            if ok {
                progress.ok.fetch_add(1, Ordering::Relaxed);
                break;
            }
            progress.failed.fetch_add(1, Ordering::Relaxed);
            if !server_error {
                break;
            }
            assert!(tries.len() < 2000, "{email} never got an answer but errors");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    answers
}

/// Waits (a hang guard, not a speed claim: 6,000 looks, 50 ms apart) until `done`.
async fn wait_until_writes(what: &str, done: impl Fn() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}
