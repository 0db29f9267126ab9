//! Members' VMs over SSH, end to end: `covibe standalone` logs in to a real `sshd` on a
//! loopback port with a member's sealed key, copies itself there, and starts the real
//! vm-agent, whose output reaches a teammate's socket; the audit log has every step, an
//! unwritable one refuses spawns and kills, and neither the database nor the logs hold the key.

use std::time::Duration;

use covibe_testkit::sshd::PASSPHRASE;
use covibe_testkit::{SioClient, SshServer};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::support::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn an_ssh_vm_runs_the_real_vm_agent_for_the_whole_team() {
    let sshd = SshServer::start().await;
    let remote = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = remote.path().display().to_string();
    let (mut proc, gw) =
        start_standalone_with(dir.path(), &[("COVIBE_SSH__REMOTE_DIR", &remote_dir)]).await;
    let http = reqwest::Client::new();
    let (status, sarah) = create_team(&http, &gw, "Rocket", "sarah@example.com", "Sarah").await;
    assert_eq!(status, 201, "{sarah}");
    let team_id = sarah["team"]["id"].as_str().unwrap().to_owned();
    let sarah_token = sarah["accessToken"].as_str().unwrap().to_owned();
    let miguel = join_with_invite(
        &http,
        &gw,
        &sarah["inviteCode"],
        "miguel@example.com",
        "Miguel",
    )
    .await;
    let miguel_token = miguel["accessToken"].as_str().unwrap().to_owned();
    let mut sio = SioClient::start().await;
    sio.connect("miguel", &gw).await;
    join(
        &mut sio,
        "miguel",
        json!({"teamId": team_id, "token": miguel_token}),
    )
    .await;

    // Sarah registers her VM over SSH with a passphrase-protected key; it is never shown again.
    let (status, vm) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&sarah_token),
        json!({
            "name": "build box", "strategy": "ssh_proxy", "host": "127.0.0.1",
            "port": sshd.port, "username": sshd.user, "projectDir": dir.path(),
            "privateKey": sshd.client_key_with_passphrase, "passphrase": PASSPHRASE,
        }),
    )
    .await;
    assert_eq!(status, 201, "{vm}");
    let vm_id = vm["vm"]["id"].as_str().unwrap().to_owned();
    assert_eq!(vm["vm"]["credential"], "key");
    assert!(!vm.to_string().contains("PRIVATE KEY"), "{vm}");

    // A spawn on it runs the real vm-agent there; Miguel sees every line, in order.
    let spawn_url = format!("{gw}/api/agent/spawn");
    let spawn = |task: &str| {
        post(
            &http,
            &spawn_url,
            Some(&sarah_token),
            json!({"task": task, "vmId": vm_id}),
        )
    };
    let lines = 20;
    let (status, spawned) = spawn(&format!("lines={lines} delay_ms=2 tidy the docs")).await;
    assert_eq!(status, 201, "{spawned}");
    assert_eq!(spawned["agent"]["strategy"], "ssh_proxy", "{spawned}");
    assert_eq!(spawned["agent"]["vmId"], vm_id.as_str());
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    let mut seqs = Vec::new();
    collect_until(&mut sio, "miguel", &agent, &mut seqs, is_completed).await;
    assert_seqs(
        &seqs,
        0..expected_lines(lines),
        "miguel's view of the SSH agent",
    );
    let copied: Vec<_> = std::fs::read_dir(remote.path().join("bin"))
        .unwrap()
        .collect();
    assert_eq!(copied.len(), 1, "covibe was copied to the VM once");

    // A second spawn reuses the connection: still one login on the server.
    let (status, second) = spawn("lines=2 again").await;
    assert_eq!(status, 201, "{second}");
    let second = second["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, &gw, &sarah_token, &second, "completed").await;
    assert_eq!(sshd.logins(), 1, "{}", sshd.log());

    // Her VM's health and audit are hers alone.
    let (status, health) = get(&http, &format!("{gw}/api/vm/{vm_id}"), &sarah_token).await;
    assert_eq!(status, 200);
    assert_eq!(
        health["vm"]["hostKeyFingerprint"].as_str().unwrap().len(),
        50
    );
    assert_eq!(health["vm"]["connected"], true);
    let (status, _) = get(&http, &format!("{gw}/api/vm/{vm_id}"), &miguel_token).await;
    assert_eq!(status, 404);
    let (status, page) = get(&http, &format!("{gw}/api/vm/{vm_id}/audit"), &sarah_token).await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("ssh.start"), 2, "{page}");
    assert_eq!(count("agent.spawn"), 2, "{page}");
    assert_eq!(count("ssh.install"), 1, "{page}");
    let (status, _) = get(&http, &format!("{gw}/api/vm/{vm_id}/audit"), &miguel_token).await;
    assert_eq!(status, 404);

    // A kill is audited before it is passed on; with the audit log unwritable, a spawn and a
    // kill are refused and nothing runs or stops.
    let (status, waiting) = spawn("wait_stdin").await;
    assert_eq!(status, 201, "{waiting}");
    let waiting = waiting["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, &gw, &sarah_token, &waiting, "running").await;
    let db = covibe_storage::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("covibe.db").display()
    ))
    .await
    .unwrap();
    db.execute_unprepared(
        "CREATE TRIGGER audit_log_full BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .await
    .unwrap();
    let (status, refused) = spawn("lines=1 never").await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit log could not be written"),
        "{refused}"
    );
    let (status, refused) = delete(&http, &format!("{gw}/api/agent/{waiting}"), &sarah_token).await;
    assert_eq!(status, 503, "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, still) = get(&http, &format!("{gw}/api/agent/{waiting}"), &sarah_token).await;
    assert_eq!(still["agent"]["status"], "running", "{still}");
    assert_eq!(sshd.logins(), 1);
    db.execute_unprepared("DROP TRIGGER audit_log_full")
        .await
        .unwrap();
    let (status, _) = delete(&http, &format!("{gw}/api/agent/{waiting}"), &sarah_token).await;
    assert_eq!(status, 202);
    wait_for_status(&http, &gw, &sarah_token, &waiting, "killed").await;
    let (_, page) = get(&http, &format!("{gw}/api/vm/{vm_id}/audit"), &sarah_token).await;
    let kills: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.kill")
        .collect();
    assert_eq!(kills.len(), 1, "{page}");
    assert_eq!(kills[0]["actorId"], sarah["user"]["id"]);

    // The operator rotates the master key while the server runs: the credential is
    // re-encrypted, a rerun has nothing left to do, the old version is retired, and the VM
    // still works (a fresh connection opens the re-encrypted credential).
    let admin_env = [(
        "COVIBE_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    )];
    let admin = |args: &'static [&'static str]| crate::support::admin_with(&admin_env, args);
    let (ok, text) = admin(&["retire-master-key", "--below", "2"]).await;
    assert!(!ok, "retiring the only version: {text}");
    let (ok, text) = admin(&["rotate-master-key"]).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("version 2 added") && text.contains("1 VM credentials re-encrypted"),
        "{text}"
    );
    let (ok, text) = admin(&["retire-master-key", "--below", "2"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("retired master key version 1"), "{text}");
    let (status, _) = post(
        &http,
        &format!("{gw}/api/vm/{vm_id}/credential"),
        Some(&sarah_token),
        json!({"privateKey": sshd.client_key}),
    )
    .await;
    assert_eq!(
        status, 200,
        "replacing the credential closes the connection"
    );
    let (status, rotated) = spawn("lines=1 after the rotation").await;
    assert_eq!(status, 201, "{rotated}");
    let rotated = rotated["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, &gw, &sarah_token, &rotated, "completed").await;
    assert_eq!(sshd.logins(), 2, "a new connection with the new credential");

    // Neither the database files nor anything the server printed hold the key or passphrase.
    drop(db);
    let body: String = sshd
        .client_key_with_passphrase
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let needles: Vec<Vec<u8>> = vec![
        body.as_bytes()[..40].to_vec(),
        b64.decode(&body).unwrap()[60..100].to_vec(),
        b64.encode(sshd.client_key_with_passphrase.as_bytes())
            .as_bytes()[..40]
            .to_vec(),
        PASSPHRASE.as_bytes().to_vec(),
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("covibe.db")
        {
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "key material in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 1);
    let printed = proc.drain().join("\n");
    for needle in &needles {
        assert!(
            !contains(printed.as_bytes(), needle),
            "key material in the server's output"
        );
    }
}
