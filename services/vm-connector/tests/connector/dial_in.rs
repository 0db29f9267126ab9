//! The `dial_in` strategy over real gRPC: VM tokens, `Dial` authentication, and a spawn from
//! `StartAgent` delivered down the daemon's stream and answered.

use std::time::Duration;

use covibe_bootstrap::bearer;
use covibe_proto::tonic::{Code, Status, Streaming};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::connector_frame::Frame as In;
use covibe_proto::vmconnector::v1::daemon_frame::Frame as Out;
use covibe_types::TeamId;
use covibe_vm_connector::VmStore;
use tokio::sync::mpsc;

use crate::support::{Client, Member, fixture, member, mint, register};
use tokio_stream::wrappers::ReceiverStream;

pub(crate) struct Daemon {
    pub(crate) tx: mpsc::Sender<pb::DaemonFrame>,
    inbound: Streaming<pb::ConnectorFrame>,
}

pub(crate) fn frame(frame: Out) -> pb::DaemonFrame {
    pb::DaemonFrame { frame: Some(frame) }
}

pub(crate) async fn dial(
    client: &mut Client,
    vm_id: &str,
    vm_token: &str,
) -> Result<Daemon, Status> {
    let (tx, rx) = mpsc::channel(8);
    let hello = pb::DaemonHello {
        vm_id: vm_id.to_owned(),
        vm_token: vm_token.to_owned(),
        version: "test".to_owned(),
        hostname: "testhost".to_owned(),
    };
    tx.send(frame(Out::Hello(hello))).await.unwrap();
    let mut inbound = client.dial(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await? {
        Some(pb::ConnectorFrame {
            frame: Some(In::Welcome(welcome)),
        }) => assert_eq!(welcome.vm_id, vm_id),
        other => panic!("expected a welcome, got {other:?}"),
    }
    Ok(Daemon { tx, inbound })
}

pub(crate) async fn next(daemon: &mut Daemon) -> In {
    tokio::time::timeout(Duration::from_secs(5), daemon.inbound.message())
        .await
        .expect("a frame in time")
        .unwrap()
        .unwrap()
        .frame
        .unwrap()
}

fn start_request(who: &Member, vm_id: &str, agent_id: &str) -> pb::StartAgentRequest {
    pb::StartAgentRequest {
        agent_id: agent_id.to_owned(),
        user_id: who.user.to_string(),
        team_id: who.team.to_string(),
        vm_id: vm_id.to_owned(),
        task: "lines=3 hello".to_owned(),
        agent_token: "agent-secret".to_owned(),
        link_url: "http://orchestrator:1".to_owned(),
    }
}

#[tokio::test]
async fn dial_in_tokens_authenticate_only_their_own_vm() {
    let mut f = fixture().await;
    let team = TeamId::new();
    let (sarah, miguel) = (member(&f.signer, team), member(&f.signer, team));
    let hers = register(&mut f.client, &sarah, "dial_in").await;
    assert_eq!(hers.strategy, "dial_in");
    let his = register(&mut f.client, &miguel, "dial_in").await;
    let local = register(&mut f.client, &sarah, "local").await;

    // Tokens only for one's own dial_in VMs.
    let err = mint(&mut f.client, &sarah, &his.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = mint(&mut f.client, &sarah, &local.id).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let first = mint(&mut f.client, &sarah, &hers.id).await.unwrap();
    let token = mint(&mut f.client, &sarah, &hers.id).await.unwrap();
    assert_ne!(first, token);
    let his_token = mint(&mut f.client, &miguel, &his.id).await.unwrap();
    // Only the hash is stored.
    let stored = f.store.token_hash(hers.id.parse().unwrap()).await.unwrap();
    assert!(stored.is_some_and(|hash| hash != token && hash.len() == 64));

    for (what, vm, secret) in [
        ("wrong token", hers.id.as_str(), "not-the-token"),
        ("replaced token", hers.id.as_str(), first.as_str()),
        ("another VM's token", hers.id.as_str(), his_token.as_str()),
        ("her token for his VM", his.id.as_str(), token.as_str()),
        ("unknown vm", "not-a-vm", token.as_str()),
        ("local vm", local.id.as_str(), token.as_str()),
    ] {
        let err = dial(&mut f.client, vm, secret)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: dial accepted"));
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
    dial(&mut f.client, &hers.id, &token).await.unwrap();
    dial(&mut f.client, &his.id, &his_token).await.unwrap();
}

#[tokio::test]
async fn start_agent_reaches_the_daemon_and_waits_for_its_answer() {
    let mut f = fixture().await;
    let sarah = member(&f.signer, TeamId::new());
    let vm = register(&mut f.client, &sarah, "dial_in").await;
    let token = mint(&mut f.client, &sarah, &vm.id).await.unwrap();

    // No daemon: a clear `unavailable`.
    let err = f
        .client
        .start_agent(bearer(start_request(&sarah, &vm.id, "a0"), &sarah.token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not connected"), "{err:?}");

    let mut daemon = dial(&mut f.client, &vm.id, &token).await.unwrap();
    // Heartbeats are answered and mark the VM seen.
    daemon
        .tx
        .send(frame(Out::Heartbeat(pb::DaemonHeartbeat { sent_at_ms: 1 })))
        .await
        .unwrap();
    assert!(matches!(next(&mut daemon).await, In::Heartbeat(_)));
    let seen = f.store.get(vm.id.parse().unwrap()).await.unwrap().unwrap();
    assert!(seen.last_seen_ms > 0);

    for (agent_id, ok) in [("a1", true), ("a2", false)] {
        let mut client = f.client.clone();
        let request = bearer(start_request(&sarah, &vm.id, agent_id), &sarah.token);
        let started = tokio::spawn(async move { client.start_agent(request).await });
        let In::Spawn(spawn) = next(&mut daemon).await else {
            panic!("expected a spawn");
        };
        assert_eq!(
            (
                spawn.agent_id.as_str(),
                spawn.agent_token.as_str(),
                spawn.task.as_str(),
                spawn.link_url.as_str()
            ),
            (
                agent_id,
                "agent-secret",
                "lines=3 hello",
                "http://orchestrator:1"
            )
        );
        // StartAgent waits for the answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!started.is_finished());
        let result = pb::SpawnResult {
            agent_id: agent_id.to_owned(),
            ok,
            message: if ok { "started" } else { "no such program" }.to_owned(),
        };
        daemon
            .tx
            .send(frame(Out::SpawnResult(result)))
            .await
            .unwrap();
        let answer = started.await.unwrap();
        if ok {
            let answer = answer.unwrap().into_inner();
            assert_eq!(
                (answer.vm_id, answer.strategy.as_str()),
                (vm.id.clone(), "dial_in")
            );
        } else {
            let err = answer.unwrap_err();
            assert_eq!(err.code(), Code::Unavailable);
            assert!(err.message().contains("no such program"), "{err:?}");
        }
    }

    // Once the daemon hangs up, spawns are refused again.
    drop(daemon);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = f
        .client
        .start_agent(bearer(start_request(&sarah, &vm.id, "a3"), &sarah.token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

/// A preview deploy on a VM that dials in: the job travels down its daemon's stream with the
/// health check (its ports are reached from the VM only), and only that VM's daemon can answer
/// it, or answer a spawn on it.
#[tokio::test]
async fn jobs_reach_the_daemon_and_only_its_answer_counts() {
    let mut f = fixture().await;
    let team = TeamId::new();
    let (sarah, miguel) = (member(&f.signer, team), member(&f.signer, team));
    let vm = register(&mut f.client, &sarah, "dial_in").await;
    let his = register(&mut f.client, &miguel, "dial_in").await;
    let granted = crate::ssh::grant(&mut f.client, &sarah, &vm.id)
        .await
        .unwrap();
    assert_eq!(granted.host, "", "CoVibe cannot reach a dial-in VM's ports");
    let grant_text = granted.grant.clone();
    let request = move |script: &str| pb::RunJobRequest {
        grant: grant_text.clone(),
        script: script.to_owned(),
        timeout_secs: 60,
        health: Some(pb::HealthCheck {
            port: 8080,
            path: "/health".to_owned(),
            timeout_secs: 10,
        }),
    };

    // No daemon yet: a clear `unavailable`, at once.
    let err = f.client.run_job(request("echo hi")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not connected"), "{err:?}");

    let token = mint(&mut f.client, &sarah, &vm.id).await.unwrap();
    let mut daemon = dial(&mut f.client, &vm.id, &token).await.unwrap();
    let his_token = mint(&mut f.client, &miguel, &his.id).await.unwrap();
    let intruder = dial(&mut f.client, &his.id, &his_token).await.unwrap();

    let mut client = f.client.clone();
    let deploy = request("make deploy");
    let running = tokio::spawn(async move { client.run_job(deploy).await });
    let In::Job(job) = next(&mut daemon).await else {
        panic!("expected a job");
    };
    assert_eq!((job.script.as_str(), job.timeout_secs), ("make deploy", 60));
    assert_eq!(
        job.health,
        Some(pb::HealthCheck {
            port: 8080,
            path: "/health".to_owned(),
            timeout_secs: 10,
        })
    );
    // Another VM's daemon answers it: that answer does not count.
    let forged = pb::JobResult {
        job_id: job.job_id.clone(),
        exit_code: 0,
        output_tail: "forged".to_owned(),
        healthy: true,
    };
    intruder
        .tx
        .send(frame(Out::JobResult(forged)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished(), "another VM answered the job");
    let result = pb::JobResult {
        job_id: job.job_id,
        exit_code: 0,
        output_tail: "built\nstarted".to_owned(),
        healthy: true,
    };
    daemon.tx.send(frame(Out::JobResult(result))).await.unwrap();
    let answer = running.await.unwrap().unwrap().into_inner();
    assert_eq!(
        (
            answer.exit_code,
            answer.output_tail.as_str(),
            answer.healthy
        ),
        (0, "built\nstarted", true)
    );

    // The same for a spawn: the other VM's daemon cannot answer it.
    let mut client = f.client.clone();
    let start = bearer(start_request(&sarah, &vm.id, "a9"), &sarah.token);
    let started = tokio::spawn(async move { client.start_agent(start).await });
    let In::Spawn(spawn) = next(&mut daemon).await else {
        panic!("expected a spawn");
    };
    let answer = |ok, message: &str| pb::SpawnResult {
        agent_id: spawn.agent_id.clone(),
        ok,
        message: message.to_owned(),
    };
    intruder
        .tx
        .send(frame(Out::SpawnResult(answer(false, "forged"))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!started.is_finished(), "another VM answered the spawn");
    daemon
        .tx
        .send(frame(Out::SpawnResult(answer(true, "started"))))
        .await
        .unwrap();
    assert_eq!(
        started.await.unwrap().unwrap().into_inner().strategy,
        "dial_in"
    );

    // The daemon goes away in the middle of a job: the job ends at once, saying so.
    let mut client = f.client.clone();
    let sleep = request("sleep 100");
    let running = tokio::spawn(async move { client.run_job(sleep).await });
    assert!(matches!(next(&mut daemon).await, In::Job(_)));
    drop(daemon);
    let answer = running.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.exit_code, -1);
    assert!(answer.output_tail.contains("disconnected"), "{answer:?}");

    // The job is in the VM's audit log, with how its health check went.
    let entries = f
        .client
        .list_audit(bearer(
            pb::ListAuditRequest {
                vm_id: vm.id.clone(),
                ..Default::default()
            },
            &sarah.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        entries.iter().any(|e| e.action == "job.run"
            && e.result == "ok"
            && e.detail == "exit code 0, healthy true"),
        "{entries:?}"
    );
}
