//! The vm-agent against an in-test orchestrator, running the real fake agent script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::vmagent::v1::{Command, Input, command};
use covibe_vm_agent::{RunOptions, run};
use support::{Behaviour, TestLink, fake_claude};

/// Only a guard against hangs; no test depends on how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(60);
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
async fn unacked_output_is_resent_after_the_stream_drops() {
    // The first connection stores 10 chunks, acks 4, forgets the rest and hangs up.
    let behaviour = Behaviour {
        drop_first: Some((10, 4)),
        ..Behaviour::default()
    };
    let link = TestLink::start(behaviour).await;
    let spool = tempfile::tempdir().unwrap();
    assert_eq!(
        run_agent(options(&link, &spool, "lines=30 stderr=1 delay_ms=1")).await,
        0
    );

    // 5 + 30 stdout lines and 1 stderr line, exactly once each after de-duplication.
    assert_eq!(seqs(&link), (0..36).collect::<Vec<_>>());
    let record = link.record();
    assert!(record.gaps.is_empty(), "gaps: {:?}", record.gaps);
    assert!(record.connections.len() >= 2);
    let second = &record.connections[1];
    assert_eq!(second.hello.acked_seq, 4);
    assert_eq!(
        second.seqs.first(),
        Some(&4),
        "resend starts at the first unacked chunk"
    );

    // Only unacknowledged chunks were ever sent twice.
    let mut received: HashMap<u64, usize> = HashMap::new();
    for seq in record.connections.iter().flat_map(|c| &c.seqs) {
        *received.entry(*seq).or_default() += 1;
    }
    assert!(
        received.iter().all(|(seq, n)| *n == 1 || *seq >= 4),
        "{received:?}"
    );
    assert!(
        received.keys().any(|seq| received[seq] > 1),
        "nothing was resent"
    );

    let last = record.final_status().expect("final status");
    assert_eq!(
        (last.status, last.exit_code, last.final_seq),
        (AgentStatus::Completed.into(), Some(0), 36)
    );
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
