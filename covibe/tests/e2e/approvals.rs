//! Tool approval end to end, with the fake agent speaking Claude Code's control protocol: a
//! Bash command the team's policy allows runs without asking, one it denies is refused without
//! asking, an undecided one waits for its owner (a teammate sees it, cannot answer), the
//! owner's allow lets it run; with the owner's phone away the request times out to a deny and
//! the agent goes on, and the owner's socket is shown a waiting request when it joins again.
//! Every decision is in the VM's audit log. A question is answered with one of its options.

use covibe_testkit::{SioClient, clean_command};
use serde_json::{Value, json};

use crate::support::{
    COVIBE, Trio, await_event, control_agent_command, get, join, output_with, post, put,
    ran_without_asking, spawn_agent as spawn, trio, wait_for_status,
};

/// Seconds a request waits for its owner here.
const TIMEOUT_SECS: u64 = 4;

async fn event(sio: &mut SioClient, member: &str, agent: &str, name: &'static str) -> Value {
    await_event(sio, member, agent, move |event, _| event == name).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_requests_decided_by_the_policy_or_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(std::path::Path::new(COVIBE));
    cmd.arg("standalone")
        .env("COVIBE_HTTP_ADDR", "127.0.0.1:0")
        .env("COVIBE_DATA_DIR", dir.path())
        .env("COVIBE_PROJECT_DIR", dir.path())
        .env("COVIBE_AGENT_COMMAND", control_agent_command())
        .env(
            "COVIBE_LIMITS__APPROVAL_TIMEOUT_SECS",
            TIMEOUT_SECS.to_string(),
        );
    let mut proc = covibe_testkit::Proc::spawn("standalone", cmd);
    let gw = proc.wait_for_url("gateway listening on").await;
    let gw = gw.as_str();
    let http = reqwest::Client::new();

    let Trio {
        team_id,
        sarah_id,
        sarah_token,
        miguel_id,
        miguel_token,
        chen_token,
        ..
    } = trio(&http, gw).await;

    let (status, body) = put(
        &http,
        &format!("{gw}/api/team/policy"),
        &sarah_token,
        json!({"allow": ["Bash(echo allowed:*)"], "deny": ["Bash(rm:*)"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let mut sio = SioClient::start().await;
    for (name, token) in [("sarah", &sarah_token), ("miguel", &miguel_token)] {
        sio.connect(name, gw).await;
        join(&mut sio, name, json!({"teamId": team_id, "token": token})).await;
    }

    // Allowed by the team's policy: runs without asking.
    let (allowed, vm) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20allowed%20ok").await;
    ran_without_asking(&mut sio, "sarah", &allowed, "allowed ok").await;
    wait_for_status(&http, gw, &sarah_token, &allowed, "completed").await;

    // Denied by it: refused without asking, and the agent goes on to its result.
    let (denied, _) = spawn(&http, gw, &sarah_token, "bash_cmd=rm%20-rf%20nothing").await;
    output_with(
        &mut sio,
        "sarah",
        &denied,
        "denied by the team's policy: Bash(rm:*)",
    )
    .await;
    wait_for_status(&http, gw, &sarah_token, &denied, "completed").await;

    // Undecided: the owner is asked; the teammate sees it, without the right to answer.
    let (asked, _) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20undecided%20ran").await;
    let card = event(&mut sio, "sarah", &asked, "agent_permission").await;
    assert_eq!(card["canAnswer"], true, "{card}");
    assert_eq!(card["tool"], "Bash");
    assert_eq!(card["summary"], "echo undecided ran");
    assert_eq!(card["input"]["command"], "echo undecided ran");
    assert_eq!(card["owner"], sarah_id.as_str());
    assert_eq!(card["state"], "pending");
    let request_id = card["requestId"].as_str().unwrap().to_owned();
    let seen = event(&mut sio, "miguel", &asked, "agent_permission").await;
    assert_eq!(seen["canAnswer"], false, "{seen}");
    assert_eq!(seen["requestId"], request_id.as_str());
    wait_for_status(&http, gw, &sarah_token, &asked, "waiting_for_approval").await;
    let (status, list) = get(&http, &format!("{gw}/api/agent/permissions"), &miguel_token).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["requests"][0]["requestId"], request_id.as_str());
    let (_, other) = get(&http, &format!("{gw}/api/agent/permissions"), &chen_token).await;
    assert_eq!(other["requests"], json!([]), "another team sees nothing");

    let answer =
        |decision: &str| json!({"agentId": asked, "requestId": request_id, "decision": decision});
    let ack = sio
        .emit_ack("miguel", "agent_permission_answer", answer("allow"))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "permission_denied", "{ack}");
    let ack = sio
        .emit_ack("sarah", "agent_permission_answer", answer("allow"))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["request"]["state"], "allowed");
    assert_eq!(ack["request"]["decidedBy"], sarah_id.as_str());
    for member in ["sarah", "miguel"] {
        let resolved = event(&mut sio, member, &asked, "agent_permission_resolved").await;
        assert_eq!(resolved["requestId"], request_id.as_str());
        assert_eq!(resolved["decision"], "allowed");
        assert_eq!(resolved["decidedBy"], sarah_id.as_str());
        output_with(&mut sio, member, &asked, "undecided ran").await;
    }
    let (status, late) = post(
        &http,
        &format!("{gw}/api/agent/{asked}/permissions/{request_id}"),
        Some(&sarah_token),
        json!({"decision": "deny"}),
    )
    .await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(
        late["error"]["message"],
        "this request was already answered: allowed by the agent's owner"
    );
    wait_for_status(&http, gw, &sarah_token, &asked, "completed").await;

    // The owner's phone is away: the request waits, is shown when she joins again, and times
    // out to a deny; the agent goes on.
    sio.close("sarah").await;
    let (away, _) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20too%20late").await;
    let card = event(&mut sio, "miguel", &away, "agent_permission").await;
    let away_request = card["requestId"].as_str().unwrap().to_owned();
    sio.connect("sarah", gw).await;
    join(
        &mut sio,
        "sarah",
        json!({"teamId": team_id, "token": sarah_token}),
    )
    .await;
    let replayed = event(&mut sio, "sarah", &away, "agent_permission").await;
    assert_eq!(replayed["requestId"], away_request.as_str());
    assert_eq!(replayed["canAnswer"], true);
    let resolved = event(&mut sio, "sarah", &away, "agent_permission_resolved").await;
    assert_eq!(resolved["decision"], "timed_out");
    assert_eq!(resolved["decidedBy"], "timeout");
    output_with(
        &mut sio,
        "sarah",
        &away,
        &format!("no answer within {TIMEOUT_SECS} seconds"),
    )
    .await;
    wait_for_status(&http, gw, &sarah_token, &away, "completed").await;

    // Every decision in the audit log: which rule, or who, decided.
    let (status, audit) = get(&http, &format!("{gw}/api/vm/{vm}/audit"), &sarah_token).await;
    assert_eq!(status, 200, "{audit}");
    let mut decisions: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.permission")
        .map(|e| {
            (
                e["actorId"].as_str().unwrap_or_default().to_owned(),
                e["result"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    decisions.reverse();
    let expected = [
        (
            "policy",
            "allowed",
            "allowed by the team's policy: Bash(echo allowed:*)",
        ),
        (
            "policy",
            "denied",
            "denied by the team's policy: Bash(rm:*)",
        ),
        (miguel_id.as_str(), "refused", "not the agent's owner"),
        (sarah_id.as_str(), "allowed", "allowed by its owner"),
        ("timeout", "denied", "no answer within 4 seconds"),
    ];
    assert_eq!(decisions.len(), expected.len(), "{decisions:?}");
    for ((actor, result, detail), (want_actor, want_result, want_detail)) in
        decisions.iter().zip(expected)
    {
        assert_eq!((actor.as_str(), result.as_str()), (want_actor, want_result));
        assert!(
            detail.contains(want_detail),
            "{detail:?} lacks {want_detail:?}"
        );
        assert!(
            !detail.contains("undecided"),
            "no input in the log: {detail}"
        );
    }

    // A follow-up from the owner reaches the running agent as a user message, and its answer
    // streams to the whole team; the agent then finishes its turn.
    let (chatty, _) = spawn(&http, gw, &sarah_token, "wait_input idle_ms=2000").await;
    wait_for_status(&http, gw, &sarah_token, &chatty, "running").await;
    let ack = sio
        .emit_ack(
            "sarah",
            "agent_control",
            json!({"agentId": chatty, "command": "input", "data": "and the docs too\n"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    output_with(&mut sio, "miguel", &chatty, "input: and the docs too").await;
    wait_for_status(&http, gw, &sarah_token, &chatty, "completed").await;

    // A question: the owner sees it with its options and answers with one; the agent goes on
    // with that answer, which the team sees.
    let (curious, _) = spawn(&http, gw, &sarah_token, "bash_cmd=echo%20allowed ask").await;
    let card = event(&mut sio, "sarah", &curious, "agent_permission").await;
    assert_eq!(card["tool"], "AskUserQuestion", "{card}");
    let question = "Which greeting should the app use?";
    assert_eq!(card["summary"], question);
    let labels: Vec<&str> = card["input"]["questions"][0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Hello", "Hi"]);
    let url = format!(
        "{gw}/api/agent/{curious}/permissions/{}",
        card["requestId"].as_str().unwrap()
    );
    let mut answered = card["input"].clone();
    answered["answers"] = json!({ question: "Hi" });
    // A deny runs nothing, so it cannot carry an input; an input must be an object.
    for (body, why) in [
        (
            json!({"decision": "deny", "updatedInput": answered}),
            "a deny cannot change the tool's input",
        ),
        (
            json!({"decision": "allow", "updatedInput": ["Hi"]}),
            "updatedInput",
        ),
    ] {
        let (status, refused) = post(&http, &url, Some(&sarah_token), body).await;
        assert_eq!(status, 400, "{refused}");
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message:?} lacks {why:?}");
    }
    let (status, body) = post(
        &http,
        &url,
        Some(&sarah_token),
        json!({"decision": "allow", "updatedInput": answered}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["updatedInput"]["answers"][question], "Hi");
    output_with(
        &mut sio,
        "miguel",
        &curious,
        &format!(r#"User has answered your questions: \"{question}\"=\"Hi\""#),
    )
    .await;
    wait_for_status(&http, gw, &sarah_token, &curious, "completed").await;
    proc.kill().await;
}
