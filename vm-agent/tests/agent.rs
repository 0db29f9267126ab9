//! The vm-agent against an in-test orchestrator, running the real fake agent script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::vmagent::v1::{Command, Input, PermissionAnswer, PermissionRequest, command};
use covibe_vm_agent::{AGENT_TOKEN_ENV, RunOptions, run};
use serde_json::Value;
use support::{Behaviour, Record, TestLink, fake_claude, fake_claude_control};

/// Only a guard against hangs; no test depends on how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(60);
const BIG_HANG_GUARD: Duration = Duration::from_secs(600);
const TOKEN: &str = "agent-secret";

fn options(link: &TestLink, spool: &tempfile::TempDir, task: &str) -> RunOptions {
    let mut opts = RunOptions::new(&link.url, "agent-1", TOKEN, fake_claude(), task);
    opts.spool_dir = spool.path().to_owned();
    opts
}

async fn run_agent(opts: RunOptions) -> i32 {
    tokio::time::timeout(HANG_GUARD, run(opts))
        .await
        .expect("vm-agent hung")
        .expect("vm-agent failed")
}

fn seqs(link: &TestLink) -> Vec<u64> {
    link.record().stored.iter().map(|o| o.seq).collect()
}

#[tokio::test]
async fn streams_every_line_in_order_then_the_final_status() {
    let link = TestLink::start(Behaviour::default()).await;
    let spool = tempfile::tempdir().unwrap();
    // init, 3 tool lines, 20 text lines and the result on stdout; 2 lines on stderr.
    assert_eq!(
        run_agent(options(&link, &spool, "fix it lines=20 stderr=2 exit=3")).await,
        0
    );

    assert_eq!(seqs(&link), (0..27).collect::<Vec<_>>());
    let record = link.record();
    assert!(record.gaps.is_empty());
    let count = |stream: OutputStream| {
        record
            .stored
            .iter()
            .filter(|o| o.stream == i32::from(stream))
            .count()
    };
    assert_eq!(
        (count(OutputStream::Stdout), count(OutputStream::Stderr)),
        (25, 2)
    );
    let lines = record.lines();
    assert!(
        lines[0].starts_with(r#"{"type":"system","subtype":"init""#),
        "{}",
        lines[0]
    );
    assert!(lines.iter().any(|l| l == "warning: fake diagnostic 2"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"type":"result","subtype":"error_during_execution""#))
    );

    let [connection] = &record.connections[..] else {
        panic!("one connection expected")
    };
    assert_eq!(connection.hello.agent_id, "agent-1");
    assert_eq!(connection.hello.agent_token, TOKEN);
    assert_eq!(connection.hello.acked_seq, 0);
    assert_eq!(connection.hello.agent_version, env!("CARGO_PKG_VERSION"));

    assert_eq!(
        record.statuses.first().map(|s| s.status),
        Some(AgentStatus::Running.into())
    );
    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code, last.final_seq),
        (AgentStatus::Failed.into(), Some(3), 27)
    );
    assert!(record.status_stored);

    let log = std::fs::read_to_string(spool.path().join("agent_logs/agent-1.log")).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), lines);
}

#[tokio::test]
async fn a_reconnect_resends_exactly_the_unacked_output_from_the_spool() {
    // The first connection stores 300 chunks, acks 50, forgets the rest and hangs up. With at
    // most 4 chunks in memory, the resend of the other 250 comes from the spool, across segments.
    let behaviour = Behaviour {
        drop_first: Some((300, 50)),
        ..Behaviour::default()
    };
    let link = TestLink::start(behaviour).await;
    let spool = tempfile::tempdir().unwrap();
    let mut opts = options(&link, &spool, "lines=400 line_bytes=1024 stderr=1");
    opts.window_max_chunks = 4;
    opts.window_max_bytes = 16 << 10;
    opts.spool_max_bytes = 1 << 20;
    assert_eq!(run_agent(opts).await, 0);

    // 5 + 400 stdout lines and 1 stderr line, exactly once each after de-duplication.
    let total = 406;
    assert_eq!(seqs(&link), (0..total).collect::<Vec<_>>());
    let record = link.record();
    assert!(record.gaps.is_empty(), "gaps: {:?}", record.gaps);
    assert!(
        record.resend_mismatches.is_empty(),
        "resent with other contents: {:?}",
        record.resend_mismatches
    );
    assert_eq!(record.steps, (1..=400).collect::<Vec<_>>());
    assert!(record.stored_bytes > 400 * 1000, "{}", record.stored_bytes);

    // The second connection resends exactly what was not acknowledged: no gap, no duplicate.
    let [first, second] = &record.connections[..] else {
        panic!("two connections expected, got {}", record.connections.len())
    };
    assert_eq!(first.seqs, (0..300).collect::<Vec<_>>());
    assert_eq!(second.hello.acked_seq, 50);
    assert_eq!(second.seqs, (50..total).collect::<Vec<_>>());

    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code, last.final_seq),
        (AgentStatus::Completed.into(), Some(0), total)
    );
    // Everything is delivered, so the spool is gone; the human-readable log stays.
    assert!(!spool.path().join("agent_logs/agent-1.spool").exists());
    let log = std::fs::read_to_string(spool.path().join("agent_logs/agent-1.log")).unwrap();
    assert_eq!(log.lines().count() as u64, total);
}

#[tokio::test]
async fn kill_escalates_to_sigkill_when_the_agent_ignores_sigterm() {
    let behaviour = Behaviour {
        kill_after_first_output: Some(200),
        ..Behaviour::default()
    };
    let link = TestLink::start(behaviour).await;
    let spool = tempfile::tempdir().unwrap();
    // Without the kill this agent would wait on its stdin forever.
    assert_eq!(
        run_agent(options(&link, &spool, "ignore_term wait_stdin lines=1")).await,
        0
    );

    let record = link.record();
    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code),
        (AgentStatus::Killed.into(), None)
    );
    assert!(last.message.contains("SIGKILL"), "{}", last.message);
    assert_eq!(last.final_seq, record.stored.len() as u64);
}

#[tokio::test]
async fn input_reaches_the_agent_stdin_and_empty_input_closes_it() {
    let input = |data: &str| Command {
        command: Some(command::Command::Input(Input { data: data.into() })),
    };
    let pending = vec![input("hello\n"), input("world\n"), input("")];
    let link = TestLink::start(Behaviour {
        pending,
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    assert_eq!(
        run_agent(options(&link, &spool, "wait_stdin lines=1")).await,
        0
    );

    let record = link.record();
    let echoed: Vec<_> = record
        .lines()
        .into_iter()
        .filter_map(|l| {
            l.split(r#""text":"input: "#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(echoed, ["hello", "world"]);
    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code),
        (AgentStatus::Completed.into(), Some(0))
    );
}

fn control_options(link: &TestLink, spool: &tempfile::TempDir, task: &str) -> RunOptions {
    let mut opts = options(link, spool, task);
    opts.command = fake_claude_control();
    opts.workdir = Some(spool.path().to_owned());
    opts
}

fn allow(request: &PermissionRequest) -> PermissionAnswer {
    PermissionAnswer {
        request_id: request.request_id.clone(),
        allow: true,
        ..Default::default()
    }
}

fn deny(request: &PermissionRequest, message: &str) -> PermissionAnswer {
    PermissionAnswer {
        request_id: request.request_id.clone(),
        allow: false,
        message: message.to_owned(),
        ..Default::default()
    }
}

/// Allows Bash, denies edits, answers the question with "Hi".
fn reviewer(request: &PermissionRequest) -> PermissionAnswer {
    match request.tool.as_str() {
        "Edit" => deny(request, "edits need a review"),
        "AskUserQuestion" => {
            let mut input: Value = serde_json::from_str(&request.input_json).unwrap();
            let question = input["questions"][0]["question"].clone();
            input["answers"] = serde_json::json!({ question.as_str().unwrap(): "Hi" });
            PermissionAnswer {
                updated_input_json: input.to_string(),
                ..allow(request)
            }
        }
        _ => allow(request),
    }
}

/// The stdout lines of stream-json, parsed.
fn events(record: &Record) -> Vec<Value> {
    record
        .lines()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Every tool result in the output: its content and whether it is an error.
fn tool_results(events: &[Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["type"] == "user")
        .flat_map(|e| {
            e["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|b| {
            (
                b["content"].as_str().unwrap_or_default().to_owned(),
                b["is_error"] == true,
            )
        })
        .collect()
}

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "assistant")
        .flat_map(|e| {
            e["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .collect()
}

/// What the run of a protocol-speaking agent always shows: the task arrived as its first user
/// message, no protocol line is output, nothing it read on stdin surprised it, and it completed.
fn assert_clean_conversation(record: &Record, task: &str) {
    let lines = record.lines();
    assert!(
        !lines.iter().any(|l| l.contains(r#""type":"control_"#)),
        "protocol lines in the output"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("fake-claude:")),
        "the agent complained: {lines:?}"
    );
    assert_eq!(
        texts(&events(record)).first(),
        Some(&format!("Task: {task}"))
    );
    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code),
        (AgentStatus::Completed.into(), Some(0))
    );
}

/// The agent asks before each tool use; the orchestrator's answer decides: an allowed command
/// runs (its file appears), a denied edit gets the deny message as its error result, a question
/// gets its answer; with everything denied nothing runs.
#[tokio::test]
async fn tool_requests_go_up_the_link_and_the_answer_decides() {
    let link = TestLink::start(Behaviour {
        decide: Some(reviewer),
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let task = "bash_cmd=touch%20ran.txt edit ask lines=1";
    assert_eq!(run_agent(control_options(&link, &spool, task)).await, 0);

    assert!(
        spool.path().join("ran.txt").exists(),
        "the allowed command did not run"
    );
    {
        let record = link.record();
        assert_clean_conversation(&record, task);
        let tools: Vec<_> = record
            .requests
            .iter()
            .map(|(_, r)| r.tool.as_str())
            .collect();
        assert_eq!(
            tools,
            ["Bash", "Edit", "Bash", "Edit", "Bash", "AskUserQuestion"]
        );
        let (_, first) = &record.requests[0];
        let input: Value = serde_json::from_str(&first.input_json).unwrap();
        assert_eq!(input["command"], "touch ran.txt");
        assert!(first.tool_use_id.starts_with("toolu_"));
        assert_eq!(
            std::fs::canonicalize(&first.project_dir).unwrap(),
            std::fs::canonicalize(spool.path()).unwrap(),
            "the policy's path rules are read from where the agent works"
        );
        let suggestions: Value = serde_json::from_str(&first.suggestions_json).unwrap();
        assert_eq!(suggestions[0]["rules"][0]["toolName"], "Bash");
        let output = events(&record);
        let results = tool_results(&output);
        let denied: Vec<_> = results
            .iter()
            .filter(|(c, _)| c == "edits need a review")
            .collect();
        assert_eq!(denied.len(), 2);
        assert!(denied.iter().all(|(_, is_error)| *is_error));
        assert!(
            results
                .iter()
                .any(|(c, e)| !e && c.contains(r#""Which greeting should the app use?"="Hi""#)),
            "{results:?}"
        );
        let result = output.iter().rfind(|e| e["type"] == "result").unwrap();
        assert_eq!(
            result["permission_denials"].as_array().map(Vec::len),
            Some(2)
        );
    }

    // Everything denied: the command never runs and the agent stops at the first refusal.
    let link = TestLink::start(Behaviour {
        decide: Some(|request| deny(request, "not today")),
        ..Behaviour::default()
    })
    .await;
    let task = "bash_cmd=touch%20denied.txt stop_on_deny";
    assert_eq!(run_agent(control_options(&link, &spool, task)).await, 0);
    assert!(!spool.path().join("denied.txt").exists());
    let record = link.record();
    assert_clean_conversation(&record, task);
    let events = events(&record);
    assert_eq!(tool_results(&events), [("not today".to_owned(), true)]);
    assert_eq!(
        events.last().map(|e| e["result"].clone()),
        Some("Stopped after a denied tool use.".into())
    );
}

/// The link drops while a tool request waits: the request is sent again on the new link, the
/// answer (sent twice) reaches the agent once, and the tool runs once.
#[tokio::test]
async fn a_request_pending_across_a_reconnect_is_resent_and_answered_once() {
    let link = TestLink::start(Behaviour {
        decide: Some(allow),
        hang_up_on_first_request: true,
        answer_twice: true,
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let task = "bash_cmd=echo%20ran-once lines=1";
    assert_eq!(run_agent(control_options(&link, &spool, task)).await, 0);

    let record = link.record();
    assert_clean_conversation(&record, task);
    assert_eq!(record.connections.len(), 2);
    let [(0, first), (1, again)] = &record.requests[..] else {
        panic!("one request on each connection: {:?}", record.requests)
    };
    assert_eq!(first, again);
    let runs = tool_results(&events(&record))
        .into_iter()
        .filter(|(content, _)| content == "ran-once\n")
        .count();
    assert_eq!(runs, 1);
    assert!(record.stored.iter().zip(0..).all(|(o, seq)| o.seq == seq));
    assert!(record.gaps.is_empty() && record.resend_mismatches.is_empty());
}

/// The owner's input reaches a running agent as a user message, and the agent answers it after
/// its task; once every message is answered its stdin closes and it ends.
#[tokio::test]
async fn input_becomes_a_user_message_the_agent_answers() {
    let input = Command {
        command: Some(command::Command::Input(Input {
            data: "and the docs too\n".into(),
        })),
    };
    let link = TestLink::start(Behaviour {
        pending: vec![input],
        decide: Some(allow),
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    assert_eq!(
        run_agent(control_options(&link, &spool, "lines=1")).await,
        0
    );

    let record = link.record();
    assert_clean_conversation(&record, "lines=1");
    let events = events(&record);
    let kinds: Vec<_> = events
        .iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("result") => Some("result".to_owned()),
            Some("assistant") => texts(std::slice::from_ref(e))
                .into_iter()
                .find(|t| t.starts_with("input: ")),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["result", "input: and the docs too", "result"]);
}

/// A command that does not speak the protocol gets its task on the command line and its stdout
/// as output, whatever it prints: no request goes up the link.
#[tokio::test]
async fn a_command_not_speaking_the_protocol_is_left_alone() {
    let link = TestLink::start(Behaviour {
        decide: Some(allow),
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let line = r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{}}}"#;
    let mut opts = options(&link, &spool, &format!("echo '{line}'; echo done"));
    opts.command = "sh -c {task}".into();
    assert_eq!(run_agent(opts).await, 0);

    let record = link.record();
    assert_eq!(record.lines(), [line, "done"]);
    assert!(record.requests.is_empty());
    let last = record.final_status().expect("final status");
    assert_eq!(last.status, i32::from(AgentStatus::Completed));
}

#[tokio::test]
async fn refusal_stops_the_agent_and_exits_3() {
    let link = TestLink::start(Behaviour {
        refuse: Some("unauthenticated"),
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    assert_eq!(run_agent(options(&link, &spool, "wait_stdin")).await, 3);
    assert!(link.record().stored.is_empty());
}

#[tokio::test]
async fn unacknowledged_output_times_out_the_drain_and_a_failed_spawn_is_reported() {
    let link = TestLink::start(Behaviour {
        never_ack: true,
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let mut opts = options(&link, &spool, "lines=2");
    opts.drain_timeout = Duration::from_millis(500);
    assert_eq!(run_agent(opts).await, 2);

    let link = TestLink::start(Behaviour::default()).await;
    let mut opts = options(&link, &spool, "x");
    opts.command = "/nonexistent/claude -p {task}".into();
    assert_eq!(run_agent(opts).await, 0);
    let record = link.record();
    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code, last.final_seq),
        (AgentStatus::Failed.into(), None, 0)
    );
    assert!(
        last.message.contains("/nonexistent/claude"),
        "{}",
        last.message
    );
}

/// About 100 MB through the real binary, with acks held back at first so that the spool fills to
/// its limit and the agent's output waits: every chunk arrives once and in order, the vm-agent's
/// memory stays bounded, the spool never grows past its limit and is gone at the end, and the
/// human-readable log is rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_stream_through_bounded_memory_and_disk() {
    const LINES: u64 = 12_800;
    const SPOOL_MAX: u64 = 16 << 20;
    const LOG_MAX: u64 = 4 << 20;
    // About 4 times what it takes; the same run without the memory window and the spool limit
    // peaks at about 80 MiB.
    const RSS_BOUND_KB: u64 = 64 << 10;
    let link = TestLink::start(Behaviour {
        slow_acks: Some((Duration::from_secs(2), Duration::from_secs(6))),
        digest_only: true,
        ..Behaviour::default()
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let mut vm_agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_vm-agent"))
        .args(["run", "--link-url", &link.url, "--agent-id", "big"])
        .args(["--command", &fake_claude()])
        .args(["--task", &format!("lines={LINES} line_bytes=8192")])
        .args(["--spool-max-bytes", &SPOOL_MAX.to_string()])
        .args(["--log-max-bytes", &LOG_MAX.to_string()])
        .arg("--spool-dir")
        .arg(spool.path())
        .env(AGENT_TOKEN_ENV, TOKEN)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = vm_agent.id().unwrap();
    let spool_segments = spool.path().join("agent_logs/big.spool");
    let (mut peak_rss_kb, mut peak_spool) = (0, 0);
    let status = tokio::time::timeout(BIG_HANG_GUARD, async {
        loop {
            // VmHWM is the peak so far; the last reading before the exit is the run's peak.
            peak_rss_kb = peak_rss_kb.max(vm_hwm_kb(pid).unwrap_or(0));
            peak_spool = peak_spool.max(dir_bytes(&spool_segments));
            tokio::select! {
                status = vm_agent.wait() => break status,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("vm-agent hung")
    .unwrap();
    eprintln!("vm-agent peak RSS {peak_rss_kb} kB, peak spool {peak_spool} bytes");
    assert_eq!(status.code(), Some(0));

    let record = link.record();
    let total = LINES + 5;
    assert_eq!(record.stored.len() as u64, total);
    assert!(record.stored.iter().zip(0..).all(|(o, seq)| o.seq == seq));
    assert!(record.gaps.is_empty(), "gaps: {:?}", record.gaps);
    assert!(record.resend_mismatches.is_empty());
    assert!(record.steps.iter().copied().eq(1..=LINES));
    assert!(record.stored_bytes > 100_000_000, "{}", record.stored_bytes);
    for connection in &record.connections {
        let from = connection.seqs.first().copied().unwrap_or_default();
        assert!(
            connection
                .seqs
                .iter()
                .copied()
                .eq(from..from + connection.seqs.len() as u64)
        );
    }
    let last = record.final_status().expect("final status");
    assert_eq!((last.final_seq, last.exit_code), (total, Some(0)));
    assert!(record.status_stored);

    assert!(
        peak_rss_kb > 0 && peak_rss_kb < RSS_BOUND_KB,
        "peak RSS {peak_rss_kb} kB"
    );
    // The limit, plus a batch and a segment being deleted.
    assert!(
        peak_spool <= SPOOL_MAX + (4 << 20),
        "peak spool {peak_spool}"
    );
    assert!(!spool_segments.exists(), "the spool outlived the delivery");
    let logs = spool.path().join("agent_logs");
    for log in ["big.log", "big.log.1"] {
        let size = std::fs::metadata(logs.join(log)).unwrap().len();
        assert!(size <= LOG_MAX + (64 << 10), "{log}: {size}");
    }
    assert!(dir_bytes(&logs) <= 2 * LOG_MAX + (128 << 10));
}

/// The peak resident set size of a running process, in kB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The total size of the files in `dir` (0 when it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}
