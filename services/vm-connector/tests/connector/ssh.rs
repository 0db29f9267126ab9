//! The `ssh_proxy` strategy against a real `sshd` on a loopback port: the connector copies its
//! program to the VM and starts it there, reuses one connection, pins the host key, refuses a
//! changed one until the owner accepts it, and reports every failure clearly. The "VM" is
//! this machine, logged in to over SSH; the program it starts records what it was given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use covibe_bootstrap::bearer;
use covibe_proto::tonic::Code;
use covibe_proto::vmconnector::v1 as pb;
use covibe_testkit::SshServer;
use covibe_testkit::sshd::PASSPHRASE;
use covibe_types::TeamId;
use covibe_vm_connector::VmAgentCommand;
use covibe_vm_connector::ssh::fingerprint;
use sea_orm::ConnectionTrait;

use crate::dial_in::{dial, frame, next};
use crate::support::{Client, Fixture, Member, Options, fixture_with, member, mint};

/// The program the connector copies to the VM: it writes down the agent token it was given
/// (from its environment) under the VM's directory, named by agent.
const RECORDER: &str = r#"#!/bin/sh
out="$(dirname "$0")/../ran"
mkdir -p "$out"
agent=""
workdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent-id) agent="$2" ;;
    --workdir) workdir="$2" ;;
  esac
  shift
done
printf '%s\n%s\n' "$COVIBE_AGENT_TOKEN" "$(cd "$workdir" && pwd)" > "$out/$agent.tmp"
mv "$out/$agent.tmp" "$out/$agent"
"#;

struct Setup {
    f: Fixture,
    sshd: SshServer,
    /// Where the VM keeps covibe (`ssh.remote_dir`).
    remote: tempfile::TempDir,
    sarah: Member,
}

async fn setup(postgres: bool) -> Setup {
    setup_idle(postgres, Options::default().idle).await
}

async fn setup_idle(postgres: bool, idle: Duration) -> Setup {
    let sshd = SshServer::start().await;
    let remote = tempfile::tempdir().unwrap();
    let program = sshd.dir.path().join("recorder.sh");
    std::fs::write(&program, RECORDER).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let f = fixture_with(Options {
        program: VmAgentCommand {
            program,
            prefix_args: Vec::new(),
        },
        remote_dir: remote.path().display().to_string(),
        postgres,
        idle,
    })
    .await;
    let sarah = member(&f.signer, TeamId::new());
    Setup {
        f,
        sshd,
        remote,
        sarah,
    }
}

fn key(pem: &str, passphrase: &str) -> pb::SshCredential {
    pb::SshCredential {
        private_key: pem.to_owned(),
        passphrase: passphrase.to_owned(),
        password: String::new(),
    }
}

fn password(pw: &str) -> pb::SshCredential {
    pb::SshCredential {
        password: pw.to_owned(),
        ..Default::default()
    }
}

async fn register_ssh(
    client: &mut Client,
    who: &Member,
    port: u16,
    user: &str,
    credential: pb::SshCredential,
) -> Result<pb::Vm, covibe_proto::tonic::Status> {
    let request = pb::RegisterVmRequest {
        name: "build box".to_owned(),
        strategy: "ssh_proxy".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: u32::from(port),
        username: user.to_owned(),
        project_dir: String::new(),
        credential: Some(credential),
    };
    Ok(client
        .register_vm(bearer(request, &who.token))
        .await?
        .into_inner())
}

async fn start(
    client: &mut Client,
    who: &Member,
    vm_id: &str,
    agent_id: &str,
) -> Result<pb::StartAgentResponse, covibe_proto::tonic::Status> {
    let request = pb::StartAgentRequest {
        agent_id: agent_id.to_owned(),
        user_id: who.user.to_string(),
        team_id: who.team.to_string(),
        vm_id: vm_id.to_owned(),
        task: "fix the flaky test".to_owned(),
        agent_token: format!("agent-token-{agent_id}"),
        link_url: "http://127.0.0.1:1".to_owned(),
    };
    Ok(client
        .start_agent(bearer(request, &who.token))
        .await?
        .into_inner())
}

async fn get(client: &mut Client, who: &Member, vm_id: &str) -> pb::Vm {
    client
        .get_vm(bearer(
            pb::GetVmRequest {
                vm_id: vm_id.to_owned(),
            },
            &who.token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn audit(client: &mut Client, who: &Member, vm_id: &str) -> Vec<pb::AuditEntry> {
    client
        .list_audit(bearer(
            pb::ListAuditRequest {
                vm_id: vm_id.to_owned(),
                before: 0,
                limit: 200,
            },
            &who.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// What the program started on the VM for `agent` wrote: its token and working directory.
async fn ran(remote: &Path, agent: &str) -> Vec<String> {
    let path = remote.join("ran").join(agent);
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text.lines().map(str::to_owned).collect();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the vm-agent for {agent} never ran on the VM");
}

fn installed(remote: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(remote.join("bin"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_spawn_over_ssh_runs_there_pins_the_key_and_reuses_the_connection() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(false).await;
    let vm = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key_with_passphrase, PASSPHRASE),
    )
    .await
    .unwrap();
    assert_eq!(vm.strategy, "ssh_proxy");
    assert_eq!(vm.credential, "key");
    assert_eq!(
        vm.host_key_fingerprint, "",
        "nothing pinned before first contact"
    );
    // No answer carries the secret, in any field.
    assert!(!format!("{vm:?}").contains("PRIVATE KEY"));

    let first = start(&mut f.client, &sarah, &vm.id, "agent-1")
        .await
        .unwrap();
    assert_eq!(first.strategy, "ssh_proxy");
    let seen = ran(remote.path(), "agent-1").await;
    assert_eq!(
        seen[0], "agent-token-agent-1",
        "the token reached the VM's vm-agent"
    );
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    assert_eq!(
        std::fs::canonicalize(&seen[1]).unwrap(),
        std::fs::canonicalize(home).unwrap(),
        "with no project dir, agents work in the login's home"
    );
    let after = get(&mut f.client, &sarah, &vm.id).await;
    assert_eq!(after.host_key_fingerprint, fingerprint(&sshd.host_key()));
    assert_eq!(after.last_error, "");
    assert!(after.last_seen_ms > 0);
    assert!(after.connected);

    // The second spawn reuses the master connection: one login on the server, one copy of
    // the program on the VM.
    start(&mut f.client, &sarah, &vm.id, "agent-2")
        .await
        .unwrap();
    assert_eq!(
        ran(remote.path(), "agent-2").await[0],
        "agent-token-agent-2"
    );
    assert_eq!(f.ssh.connects(), 1);
    assert_eq!(sshd.logins(), 1, "{}", sshd.log());
    assert_eq!(installed(remote.path()).len(), 1);

    // The audit log has each step, with the command's digest and never the token.
    let entries = audit(&mut f.client, &sarah, &vm.id).await;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "vm.register",
        "agent.spawn",
        "ssh.host_key.pin",
        "ssh.install",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let starts: Vec<_> = entries.iter().filter(|e| e.action == "ssh.start").collect();
    assert_eq!(starts.len(), 2);
    for entry in &starts {
        assert_eq!(entry.result, "ok");
        assert_eq!(entry.command_digest.len(), 64);
        assert_eq!(entry.actor_id, sarah.user.to_string());
    }
    assert!(!format!("{entries:?}").contains("agent-token"));

    // A new program version is copied again, by checksum.
    std::fs::write(
        remote
            .path()
            .join("bin")
            .join(installed(remote.path())[0].file_name().unwrap()),
        "tampered",
    )
    .unwrap();
    start(&mut f.client, &sarah, &vm.id, "agent-3")
        .await
        .unwrap();
    ran(remote.path(), "agent-3").await;

    // Her default VM takes the spawns that name none.
    let other = crate::support::register(&mut f.client, &sarah, "local").await;
    for (default, strategy, agent) in [
        (&other.id, "local", "agent-4"),
        (&vm.id, "ssh_proxy", "agent-5"),
    ] {
        let update = pb::UpdateVmRequest {
            vm_id: default.clone(),
            is_default: Some(true),
            ..Default::default()
        };
        let updated = f
            .client
            .update_vm(bearer(update, &sarah.token))
            .await
            .unwrap()
            .into_inner();
        assert!(updated.is_default);
        let used = start(&mut f.client, &sarah, "", agent).await.unwrap();
        assert_eq!((&used.vm_id, used.strategy.as_str()), (default, strategy));
    }
    ran(remote.path(), "agent-5").await;
}

#[tokio::test]
async fn bad_credentials_unreachable_hosts_and_changed_keys_fail_clearly() {
    let Setup {
        mut f,
        mut sshd,
        remote,
        sarah,
    } = setup(false).await;
    let good = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    let cases = [
        (
            "a key the VM does not know",
            sshd.port,
            key(&sshd.stranger_key, ""),
            Code::PermissionDenied,
            "refused the login",
        ),
        (
            "a wrong password",
            sshd.port,
            password("not-the-password"),
            Code::PermissionDenied,
            "refused the login",
        ),
        (
            "a wrong passphrase",
            sshd.port,
            key(&sshd.client_key_with_passphrase, "wrong"),
            Code::PermissionDenied,
            "could not be loaded",
        ),
        (
            "no server there",
            covibe_testkit::free_port(),
            key(&sshd.client_key, ""),
            Code::Unavailable,
            "could not reach the VM",
        ),
    ];
    for (n, (what, port, credential, code, says)) in cases.into_iter().enumerate() {
        let vm = register_ssh(&mut f.client, &sarah, port, &sshd.user, credential)
            .await
            .unwrap();
        let err = start(&mut f.client, &sarah, &vm.id, &format!("bad-{n}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
        assert!(!err.message().contains("PRIVATE"), "{what}");
        let health = get(&mut f.client, &sarah, &vm.id).await;
        assert!(health.last_error.contains(says), "{what}: {health:?}");
        assert!(health.last_error_ms > 0);
        assert!(!remote.path().join("ran").join(format!("bad-{n}")).exists());
        // Nothing else broke: the good VM still starts agents.
        start(&mut f.client, &sarah, &good.id, &format!("good-{n}"))
            .await
            .unwrap();
        ran(remote.path(), &format!("good-{n}")).await;
    }

    // The VM is re-keyed; its connection went idle. The next spawn is refused.
    let pinned = get(&mut f.client, &sarah, &good.id)
        .await
        .host_key_fingerprint;
    sshd.rekey().await;
    f.ssh.disconnect(good.id.parse().unwrap()).await;
    let err = start(&mut f.client, &sarah, &good.id, "after-rekey")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a conflict: {err:?}");
    assert!(
        err.message().contains("host key has changed"),
        "{}",
        err.message()
    );
    let vm = get(&mut f.client, &sarah, &good.id).await;
    assert_eq!(vm.host_key_fingerprint, pinned, "the old key stays pinned");
    assert_eq!(
        vm.pending_host_key_fingerprint,
        fingerprint(&sshd.host_key())
    );
    assert!(vm.last_error.contains("host key has changed"));
    assert!(!remote.path().join("ran").join("after-rekey").exists());

    // Accepting needs the fingerprint the owner was shown; then the next spawn works.
    let accept = |fp: &str| pb::AcceptHostKeyRequest {
        vm_id: good.id.clone(),
        fingerprint: fp.to_owned(),
    };
    let wrong = f
        .client
        .accept_host_key(bearer(accept(&pinned), &sarah.token))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Aborted);
    assert!(
        wrong.message().contains("not the one given"),
        "{}",
        wrong.message()
    );
    let accepted = f
        .client
        .accept_host_key(bearer(
            accept(&vm.pending_host_key_fingerprint),
            &sarah.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.host_key_fingerprint, fingerprint(&sshd.host_key()));
    assert_eq!(accepted.pending_host_key_fingerprint, "");
    start(&mut f.client, &sarah, &good.id, "after-accept")
        .await
        .unwrap();
    ran(remote.path(), "after-accept").await;
    assert_eq!(get(&mut f.client, &sarah, &good.id).await.last_error, "");
}

#[tokio::test]
async fn an_idle_connection_closes_and_the_next_spawn_opens_another() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup_idle(false, Duration::from_secs(3)).await;
    let vm = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    start(&mut f.client, &sarah, &vm.id, "before")
        .await
        .unwrap();
    ran(remote.path(), "before").await;
    assert!(get(&mut f.client, &sarah, &vm.id).await.connected);
    // `ssh` closes the master once it has been idle for three seconds. (Much shorter, and the
    // master that registering the VM opened could close under the first spawn, which reuses it.)
    // Asking whether it is connected uses it, so the test asks less often than that.
    let mut closed = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if !get(&mut f.client, &sarah, &vm.id).await.connected {
            closed = true;
            break;
        }
    }
    assert!(closed, "the idle connection stayed open");
    start(&mut f.client, &sarah, &vm.id, "after").await.unwrap();
    ran(remote.path(), "after").await;
    assert_eq!(f.ssh.connects(), 2);
    assert_eq!(sshd.logins(), 2);
}

#[tokio::test]
async fn a_connected_daemon_is_used_first_and_ssh_when_it_is_gone() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(false).await;
    let vm = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    let token = mint(&mut f.client, &sarah, &vm.id).await.unwrap();
    let mut daemon = dial(&mut f.client, &vm.id, &token).await.unwrap();
    let mut client = f.client.clone();
    let who = Member {
        user: sarah.user,
        team: sarah.team,
        token: sarah.token.clone(),
    };
    let vm_id = vm.id.clone();
    let spawn = tokio::spawn(async move { start(&mut client, &who, &vm_id, "via-daemon").await });
    match next(&mut daemon).await {
        covibe_proto::vmconnector::v1::connector_frame::Frame::Spawn(s) => {
            assert_eq!(s.agent_id, "via-daemon");
            daemon
                .tx
                .send(frame(
                    covibe_proto::vmconnector::v1::daemon_frame::Frame::SpawnResult(
                        pb::SpawnResult {
                            agent_id: s.agent_id,
                            ok: true,
                            message: String::new(),
                        },
                    ),
                ))
                .await
                .unwrap();
        }
        other => panic!("expected a spawn, got {other:?}"),
    }
    assert_eq!(spawn.await.unwrap().unwrap().strategy, "dial_in");
    assert_eq!(f.ssh.connects(), 0, "no SSH while the daemon is there");
    assert_eq!(sshd.logins(), 0);

    drop(daemon);
    for _ in 0..200 {
        if !get(&mut f.client, &sarah, &vm.id).await.connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let used = start(&mut f.client, &sarah, &vm.id, "via-ssh")
        .await
        .unwrap();
    assert_eq!(used.strategy, "ssh_proxy");
    ran(remote.path(), "via-ssh").await;
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_the_spawn_and_nothing_runs() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(false).await;
    let vm = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    f.db.execute_unprepared(
        "CREATE TRIGGER audit_log_full BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .await
    .unwrap();
    let err = start(&mut f.client, &sarah, &vm.id, "unaudited")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("audit log could not be written"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("disk full"),
        "internal detail stays in the log"
    );
    assert_eq!(sshd.logins(), 0, "nothing reached the VM");
    assert!(!remote.path().join("ran").join("unaudited").exists());
    // Registering and replacing credentials are refused the same way.
    let refused = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

#[tokio::test]
async fn credentials_are_sealed_bound_to_their_row_and_never_stored_in_the_clear() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(true).await;
    let miguel = member(&f.signer, sarah.team);
    let hers = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    let his = register_ssh(
        &mut f.client,
        &miguel,
        sshd.port,
        &sshd.user,
        password("hunter2"),
    )
    .await
    .unwrap();

    // Another member can neither use, read, replace, accept for, nor remove her VM.
    let not_found = |r: Result<_, covibe_proto::tonic::Status>| {
        assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::NotFound);
    };
    not_found(
        start(&mut f.client, &miguel, &hers.id, "stolen")
            .await
            .map(|_| ()),
    );
    let vm_req = || pb::GetVmRequest {
        vm_id: hers.id.clone(),
    };
    not_found(
        f.client
            .get_vm(bearer(vm_req(), &miguel.token))
            .await
            .map(|_| ()),
    );
    not_found(
        f.client
            .replace_credential(bearer(
                pb::ReplaceCredentialRequest {
                    vm_id: hers.id.clone(),
                    credential: Some(key(&sshd.stranger_key, "")),
                },
                &miguel.token,
            ))
            .await
            .map(|_| ()),
    );
    not_found(
        f.client
            .list_audit(bearer(
                pb::ListAuditRequest {
                    vm_id: hers.id.clone(),
                    ..Default::default()
                },
                &miguel.token,
            ))
            .await
            .map(|_| ()),
    );
    not_found(
        f.client
            .delete_vm(bearer(vm_req(), &miguel.token))
            .await
            .map(|_| ()),
    );
    // Naming her VM in his own spawn request is refused before anything runs.
    let forged = pb::StartAgentRequest {
        agent_id: "forged".to_owned(),
        user_id: sarah.user.to_string(),
        team_id: sarah.team.to_string(),
        vm_id: hers.id.clone(),
        task: "x".to_owned(),
        agent_token: "t".to_owned(),
        link_url: "http://127.0.0.1:1".to_owned(),
    };
    let err = f
        .client
        .start_agent(bearer(forged, &miguel.token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(sshd.logins(), 0);

    // The database holds no key material: not the key, its body, its bytes, nor base64 of it.
    let dump = pg_dump(&f._db.url);
    let body: String = sshd
        .client_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap();
    let needles: Vec<Vec<u8>> = vec![
        sshd.client_key.as_bytes().to_vec(),
        body.as_bytes()[..40].to_vec(),
        raw[raw.len() - 48..].to_vec(),
        base64::engine::general_purpose::STANDARD
            .encode(sshd.client_key.as_bytes())
            .as_bytes()[..40]
            .to_vec(),
        b"hunter2".to_vec(),
    ];
    for needle in &needles {
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle.as_slice()),
            "key material in the database dump"
        );
    }

    // His sealed password copied onto her VM's row does not open there.
    f.db.execute_unprepared(&format!(
        "UPDATE vm_credentials SET sealed = (SELECT sealed FROM vm_credentials WHERE vm_id = '{}'), \
         kind = 'password' WHERE vm_id = '{}'",
        his.id, hers.id
    ))
    .await
    .unwrap();
    let err = start(&mut f.client, &sarah, &hers.id, "moved")
        .await
        .unwrap_err();
    assert!(err.message().contains("does not open"), "{}", err.message());
    assert!(!err.message().contains("hunter2"));
    assert_eq!(sshd.logins(), 0);
    assert!(!remote.path().join("ran").join("moved").exists());
}

fn pg_dump(url: &str) -> Vec<u8> {
    let output = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(url)
        .output()
        .expect("pg_dump");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("vm_credentials"));
    output.stdout
}

#[tokio::test]
async fn rotation_reencrypts_every_credential_and_retiring_refuses_leftovers() {
    use covibe_identity::vault;
    use covibe_vm_connector::VmStore;
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(false).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let vm = register_ssh(
            &mut f.client,
            &sarah,
            sshd.port,
            &sshd.user,
            key(&sshd.client_key, ""),
        )
        .await
        .unwrap();
        ids.push(vm.id);
    }
    let first: covibe_types::VmId = ids[0].parse().unwrap();
    let old = f.store.credential(first).await.unwrap().unwrap();
    assert_eq!(vault::rotate(&f.master_key).unwrap(), 2);
    let keys = vault::Vault::new(&f.master_key);

    // A run stopped after one row: that row is on version 2, the others still on 1.
    let store: std::sync::Arc<dyn VmStore> = f.store.clone();
    let stored = f.store.credential(first).await.unwrap().unwrap();
    let (team, user, vm) = (
        stored.team_id.to_string(),
        stored.user_id.to_string(),
        stored.vm_id.to_string(),
    );
    let binding = vault::Binding {
        team: &team,
        user: &user,
        vm: &vm,
        purpose: "ssh_key",
    };
    let k = keys.keys().unwrap();
    let resealed = k
        .seal(&binding, &k.open(&binding, &stored.sealed).unwrap())
        .unwrap();
    assert!(
        store
            .reseal(first, &stored.sealed, &resealed, 2)
            .await
            .unwrap()
    );
    // A rerun finishes the rest; a third run has nothing to do.
    assert_eq!(
        covibe_vm_connector::reseal_credentials(store.as_ref(), &keys)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        covibe_vm_connector::reseal_credentials(store.as_ref(), &keys)
            .await
            .unwrap(),
        0
    );
    assert!(store.credentials_below(2).await.unwrap().is_empty());
    // Retire version 1: every credential still opens, and the VMs still work.
    vault::retire(&f.master_key, 2).unwrap();
    for (n, id) in ids.iter().enumerate() {
        start(&mut f.client, &sarah, id, &format!("rotated-{n}"))
            .await
            .unwrap();
        ran(remote.path(), &format!("rotated-{n}")).await;
    }
    // A leftover ciphertext of the retired version fails clearly.
    f.ssh.disconnect(first).await;
    store.set_credential(&old).await.unwrap();
    let err = start(&mut f.client, &sarah, &ids[0], "leftover")
        .await
        .unwrap_err();
    assert!(err.message().contains("no longer has"), "{}", err.message());
}

pub(crate) async fn grant(
    client: &mut Client,
    who: &Member,
    vm_id: &str,
) -> Result<pb::CreateJobGrantResponse, covibe_proto::tonic::Status> {
    let request = pb::CreateJobGrantRequest {
        vm_id: vm_id.to_owned(),
        purpose: "preview".to_owned(),
    };
    Ok(client
        .create_job_grant(bearer(request, &who.token))
        .await?
        .into_inner())
}

async fn job(
    client: &mut Client,
    grant: &str,
    script: &str,
) -> Result<pb::RunJobResponse, covibe_proto::tonic::Status> {
    let request = pb::RunJobRequest {
        grant: grant.to_owned(),
        script: script.to_owned(),
        timeout_secs: 30,
        health: None,
    };
    Ok(client.run_job(request).await?.into_inner())
}

/// The preview's jobs: a member grants the team's preview the use of their VM; the grant, not
/// a member's token, runs a script there (over SSH, or on this machine), audited; a new grant
/// replaces the old, and another member cannot grant someone else's VM.
#[tokio::test]
async fn job_grants_run_scripts_on_their_vm_only() {
    let Setup {
        mut f,
        sshd,
        remote,
        sarah,
    } = setup(false).await;
    let vm = register_ssh(
        &mut f.client,
        &sarah,
        sshd.port,
        &sshd.user,
        key(&sshd.client_key, ""),
    )
    .await
    .unwrap();
    let granted = grant(&mut f.client, &sarah, &vm.id).await.unwrap();
    assert_eq!(
        (granted.vm_id.as_str(), granted.host.as_str()),
        (vm.id.as_str(), "127.0.0.1")
    );
    let marker = remote.path().join("job-ran");
    let script = format!(
        "echo to stdout; echo to stderr >&2; touch '{}'; exit 3",
        marker.display()
    );
    let done = job(&mut f.client, &granted.grant, &script).await.unwrap();
    assert_eq!(done.exit_code, 3);
    assert!(
        done.output_tail.contains("to stdout") && done.output_tail.contains("to stderr"),
        "{done:?}"
    );
    assert!(marker.exists(), "the script ran on the VM");
    assert_eq!(sshd.logins(), 1);
    // Only the end of a long output is kept.
    let long = job(
        &mut f.client,
        &granted.grant,
        "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done",
    )
    .await
    .unwrap();
    assert!(long.output_tail.len() <= 64 * 1024);
    assert!(long.output_tail.trim_end().ends_with("line 19999"));

    // The run is in the VM's audit log, by the service, with the script's digest.
    let entries = audit(&mut f.client, &sarah, &vm.id).await;
    // Each run: a record before it ("requested"), and one of how it ended.
    let runs: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "job.run" && e.result != "requested")
        .collect();
    assert_eq!(runs.len(), 2, "{entries:?}");
    assert_eq!(
        entries.iter().filter(|e| e.result == "requested").count(),
        2
    );
    assert_eq!(runs[1].actor_id, "preview-service");
    assert_eq!(runs[1].result, "error");
    assert_eq!(runs[1].command_digest.len(), 64);

    // A made-up grant, and a grant replaced by a newer one, are refused.
    let err = job(&mut f.client, "made-up", "true").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let newer = grant(&mut f.client, &sarah, &vm.id).await.unwrap();
    let err = job(&mut f.client, &granted.grant, "true")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        job(&mut f.client, &newer.grant, "true")
            .await
            .unwrap()
            .exit_code,
        0
    );

    // Another member cannot grant her VM; his own default VM (this machine) works for him.
    let miguel = member(&f.signer, sarah.team);
    let err = grant(&mut f.client, &miguel, &vm.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let his = grant(&mut f.client, &miguel, "").await.unwrap();
    assert_eq!(his.host, "127.0.0.1");
    let here = job(&mut f.client, &his.grant, "echo here").await.unwrap();
    assert_eq!((here.exit_code, here.output_tail.trim()), (0, "here"));

    // Removing the VM revokes its grant.
    f.client
        .delete_vm(bearer(
            pb::GetVmRequest {
                vm_id: vm.id.clone(),
            },
            &sarah.token,
        ))
        .await
        .unwrap();
    let err = job(&mut f.client, &newer.grant, "true").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
