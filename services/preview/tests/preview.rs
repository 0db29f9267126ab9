//! The preview store over SeaORM, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_preview::{Preview, PreviewStore, SeaPreviewStore};
use covibe_testkit::TestDb;
use covibe_types::TeamId;

async fn suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let conn2 = conn.clone();
    let store = SeaPreviewStore::new(conn).await.unwrap();
    let (team, other) = (TeamId::new(), TeamId::new());
    assert_eq!(store.get(team).await.unwrap(), None);

    let pending = Preview {
        team_id: team,
        url: String::new(),
        upstream: String::new(),
        commit: "0123abcd".to_owned(),
        status: "pending".to_owned(),
        updated_at_ms: 1_000,
    };
    store.put(&pending).await.unwrap();
    assert_eq!(store.get(team).await.unwrap(), Some(pending));
    assert_eq!(store.get(other).await.unwrap(), None);

    // A second put replaces the team's preview in place.
    let live = Preview {
        team_id: team,
        url: "https://rocket.preview.example.com".to_owned(),
        upstream: "10.0.0.5:3000".to_owned(),
        commit: "89efcdab".to_owned(),
        status: "live".to_owned(),
        updated_at_ms: 2_000,
    };
    store.put(&live).await.unwrap();
    assert_eq!(store.get(team).await.unwrap(), Some(live.clone()));

    // Another team's preview is its own.
    let theirs = Preview {
        team_id: other,
        url: "https://other.preview.example.com".to_owned(),
        upstream: String::new(),
        commit: "feed".to_owned(),
        status: "pending".to_owned(),
        updated_at_ms: 3_000,
    };
    store.put(&theirs).await.unwrap();
    assert_eq!(store.get(other).await.unwrap(), Some(theirs));
    assert_eq!(store.get(team).await.unwrap(), Some(live));

    deploy_queue(&store).await;
    one_running_per_team(&store, &conn2).await;
}

/// Two replicas may both see a team with nothing running and start one of its deploys each: the
/// database refuses the second, whoever writes it.
async fn one_running_per_team(store: &SeaPreviewStore, conn: &sea_orm::DatabaseConnection) {
    use sea_orm::ConnectionTrait;
    let team = TeamId::new();
    store.enqueue(team, "a", "push", "ada", 100).await.unwrap();
    store.claim(200, 100).await.unwrap().unwrap();
    store.enqueue(team, "b", "push", "ada", 250).await.unwrap();
    // The first deploy's runner died: both are due, and a claimer starts the older.
    let claimed = store.claim(1_000, 10_000).await.unwrap().unwrap();
    assert_eq!(claimed.commit, "a");
    let second = conn
        .execute_unprepared(&format!(
            "UPDATE preview_deployments SET status = 'running' \
             WHERE team_id = '{team}' AND status = 'queued'"
        ))
        .await;
    assert!(second.is_err(), "a second running deploy was stored");
    assert_eq!(store.claim(1_001, 10_000).await.unwrap(), None);
}

/// The deploy queue: one deploy at a time per team, pushes meanwhile coalesce into one more of
/// the newest commit, a deploy whose runner died runs again, retries wait their turn.
async fn deploy_queue(store: &SeaPreviewStore) {
    let (team, other) = (TeamId::new(), TeamId::new());
    let first = store
        .enqueue(team, "c1", "push", "sarah", 100)
        .await
        .unwrap();
    assert_eq!(first.status, "queued");
    let running = store.claim(200, 1_000).await.unwrap().unwrap();
    assert_eq!(
        (running.id.as_str(), running.status.as_str()),
        (first.id.as_str(), "running")
    );
    assert_eq!(running.attempts, 1);
    // Five pushes while it runs: one more deploy, of the newest commit.
    let mut queued = Vec::new();
    for (n, commit) in ["c2", "c3", "c4", "c5", "c6"].iter().enumerate() {
        queued.push(
            store
                .enqueue(team, commit, "push", "miguel", 300 + n as i64)
                .await
                .unwrap(),
        );
    }
    assert!(
        queued.iter().all(|d| d.id == queued[0].id),
        "one waiting deploy"
    );
    // Not while the team's first runs; another team's goes meanwhile.
    assert_eq!(store.claim(400, 1_000).await.unwrap(), None);
    let queued_theirs = store
        .enqueue(other, "o1", "manual", "ada", 400)
        .await
        .unwrap();
    let theirs = store.claim(401, 1_000).await.unwrap().unwrap();
    assert_eq!(theirs.id, queued_theirs.id);
    assert!(
        store
            .finish(&theirs.id, theirs.attempts, "failed", "o1", "", 450)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(&running.id, 1, "live", "c1", "log one", 500)
            .await
            .unwrap()
    );
    let next = store.claim(600, 1_000).await.unwrap().unwrap();
    assert_eq!(
        (next.id.as_str(), next.commit.as_str()),
        (queued[0].id.as_str(), "c6")
    );
    // Its runner dies: once the lease passes, it is due again.
    assert_eq!(store.claim(1_000, 1_000).await.unwrap(), None);
    let again = store.claim(1_601, 1_000).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (next.id.as_str(), 2));
    // The first runner was only slow: it can neither renew nor end what the second now runs.
    assert!(!store.extend_lease(&next.id, 1, 9_000).await.unwrap());
    assert!(
        !store
            .finish(&next.id, 1, "failed", "c6", "late", 1_700)
            .await
            .unwrap()
    );
    assert!(store.extend_lease(&again.id, 2, 2_700).await.unwrap());
    // A retry waits for its time.
    assert!(
        store
            .retry_at(&again.id, 2, 5_000, "unreachable")
            .await
            .unwrap()
    );
    assert_eq!(store.claim(4_999, 1_000).await.unwrap(), None);
    let retried = store.claim(5_000, 1_000).await.unwrap().unwrap();
    assert_eq!(retried.log_tail, "unreachable");
    assert!(
        store
            .finish(&retried.id, 3, "live", "c6", "log two", 6_000)
            .await
            .unwrap()
    );
    let history = store.deployments(team, 10).await.unwrap();
    let statuses: Vec<(&str, &str)> = history
        .iter()
        .map(|d| (d.commit.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(statuses, [("c6", "live"), ("c1", "replaced")]);
    assert_eq!(history[1].log_tail, "log one");
}

#[tokio::test]
async fn preview_store_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn preview_store_on_postgres() {
    suite(TestDb::postgres().await).await;
}

mod webhook {
    use std::sync::Arc;
    use std::time::Duration;

    use covibe_identity::KeyFiles;
    use covibe_identity::vault::{self, Binding, Vault};
    use covibe_preview::{PreviewConfig, PreviewGrpc, PreviewStore, SeaPreviewStore, SealedSecret};
    use covibe_proto::events::v1 as ev;
    use covibe_proto::preview::v1 as pb;
    use covibe_proto::preview::v1::preview_service_server::PreviewService;
    use covibe_proto::prost::Message;
    use covibe_proto::tonic::{Code, Request};
    use covibe_storage::{FanoutEvent, HotStore, MemoryHotStore, Subscription};
    use covibe_testkit::TestDb;
    use covibe_types::TeamId;
    use hmac::Mac;

    const SECRET: &str = "webhook-test-secret";
    const FIRST: &str = "0123456789abcdef0123456789abcdef01234567";
    const SECOND: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    }

    fn sha1_form(body: &[u8]) -> String {
        // Well formed for GitHub's legacy header, which is not accepted.
        let _ = body;
        "sha1=0123456789abcdef0123456789abcdef01234567".to_owned()
    }

    fn push_body(commit: &str) -> Vec<u8> {
        push_to(commit, "rocket/app", "main")
    }

    fn push_to(commit: &str, repository: &str, branch: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "ref": format!("refs/heads/{branch}"),
            "after": commit,
            "repository": {
                "full_name": repository,
                "clone_url": format!("https://github.com/{repository}.git"),
            },
            "commits": [],
        }))
        .unwrap()
    }

    fn request(
        team: TeamId,
        delivery: &str,
        event: &str,
        signature: String,
        body: Vec<u8>,
    ) -> Request<pb::ReceivePushRequest> {
        Request::new(pb::ReceivePushRequest {
            team_id: team.to_string(),
            delivery_id: delivery.to_owned(),
            signature_256: signature,
            event: event.to_owned(),
            body,
        })
    }

    struct Fixture {
        grpc: PreviewGrpc,
        store: Arc<SeaPreviewStore>,
        fanout: Subscription,
        vault: Vault,
        master_key: std::path::PathBuf,
        _keys: tempfile::TempDir,
    }

    /// Configures `team`'s preview (as an owner would through the API) with `secret`.
    async fn configure(f: &Fixture, team: TeamId, repository: &str, secret: &str) {
        let id = team.to_string();
        let keys = f.vault.keys().unwrap();
        let binding = Binding {
            team: &id,
            user: "",
            vm: "",
            purpose: "webhook_secret",
        };
        let sealed = SealedSecret {
            team_id: team,
            key_version: keys.current(),
            sealed: keys.seal(&binding, secret.as_bytes()).unwrap(),
        };
        let config = PreviewConfig {
            repository: repository.to_owned(),
            branch: "main".to_owned(),
            start_command: "python3 -m http.server 8000".to_owned(),
            port: 8000,
            health_path: "/".to_owned(),
            ..PreviewConfig::default()
        };
        f.store
            .put_config(team, &config, Some(&sealed))
            .await
            .unwrap();
    }

    async fn fixture(db: &TestDb) -> Fixture {
        let conn = covibe_storage::connect(&db.url).await.unwrap();
        let store = Arc::new(SeaPreviewStore::new(conn).await.unwrap());
        let keys = tempfile::tempdir().unwrap();
        let (_, verifier) = covibe_identity::load_or_generate(&KeyFiles {
            signing: keys.path().join("k.pem"),
            verifying: keys.path().join("k.pub.pem"),
        })
        .unwrap();
        let hot = Arc::new(MemoryHotStore::new(16));
        let fanout = hot.subscribe().await.unwrap();
        let master_key = keys.path().join("master.key");
        let vault = Vault::open_file(&master_key, true).unwrap();
        // Not reached here: these tests configure teams through the store.
        let team = covibe_proto::team::v1::team_service_client::TeamServiceClient::new(
            covibe_bootstrap::channel("http://127.0.0.1:9").unwrap(),
        );
        let vmc = covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient::new(
            covibe_bootstrap::channel("http://127.0.0.1:9").unwrap(),
        );
        // Deploys are tested end to end (covibe's e2e), with a vm-connector to run them.
        let deploys = covibe_preview::DeploySettings {
            run_queue: false,
            ..Default::default()
        };
        let grpc = PreviewGrpc::new(
            store.clone(),
            verifier,
            hot,
            vault.clone(),
            team,
            vmc,
            deploys,
        );
        Fixture {
            grpc,
            store,
            fanout,
            vault,
            master_key,
            _keys: keys,
        }
    }

    /// The next team event published, if one comes soon.
    async fn published(fanout: &mut Subscription) -> Option<ev::TeamEvent> {
        match tokio::time::timeout(Duration::from_millis(200), fanout.recv()).await {
            Ok(Some(FanoutEvent::Message(bytes))) => Some(ev::TeamEvent::decode(bytes).unwrap()),
            Ok(other) => panic!("unexpected fan-out item: {other:?}"),
            Err(_) => None,
        }
    }

    async fn suite(db: TestDb) {
        let mut f = fixture(&db).await;
        let team = TeamId::new();
        let body = push_body(FIRST);
        // Before the team configured its preview, even a signed push is refused.
        let err = f
            .grpc
            .receive_push(request(
                team,
                "d-early",
                "push",
                sign(SECRET, &body),
                body.clone(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        configure(&f, team, "rocket/app", SECRET).await;
        // Another team, with a secret of its own.
        let other = TeamId::new();
        configure(
            &f,
            other,
            "https://github.com/rocket/app.git",
            "the-other-secret",
        )
        .await;

        // Refused: missing, wrong, sha1-only, and a body changed after signing. Nothing is
        // recorded, nothing published.
        let mut changed = body.clone();
        changed.extend_from_slice(b" ");
        for (what, signature, body) in [
            ("missing", String::new(), body.clone()),
            ("wrong", sign("not-the-secret", &body), body.clone()),
            ("sha1 only", sha1_form(&body), body.clone()),
            ("garbage", "sha256=nothex".to_owned(), body.clone()),
            ("changed after signing", sign(SECRET, &body), changed),
            (
                "another team's secret",
                sign("the-other-secret", &body),
                body.clone(),
            ),
        ] {
            let err = f
                .grpc
                .receive_push(request(team, "d-forged", "push", signature, body))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        }
        assert_eq!(f.store.get(team).await.unwrap(), None);
        assert_eq!(f.store.deliveries(team).await.unwrap(), 0);
        assert!(published(&mut f.fanout).await.is_none());

        // Accepted and recorded, and the team hears of it.
        let answer = f
            .grpc
            .receive_push(request(
                team,
                "d-1",
                "push",
                sign(SECRET, &body),
                body.clone(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.accepted && !answer.duplicate, "{answer:?}");
        let preview = f.store.get(team).await.unwrap().unwrap();
        assert_eq!(preview.commit, FIRST);
        assert_eq!(preview.status, "pending");
        assert_eq!(answer.preview.unwrap().commit, FIRST);
        assert_eq!(f.store.deliveries(team).await.unwrap(), 1);
        let event = published(&mut f.fanout).await.unwrap();
        assert_eq!(event.team_id, team.to_string());
        let Some(ev::team_event::Event::PreviewUpdated(updated)) = event.event else {
            panic!("not preview_updated: {event:?}");
        };
        assert_eq!(updated.commit, FIRST);
        assert_eq!(updated.repository, "rocket/app");
        assert_eq!(updated.git_ref, "refs/heads/main");

        // The same delivery again: acknowledged as a duplicate, nothing new. Even with another
        // body, a delivery id counts once.
        for body in [body.clone(), push_body(SECOND)] {
            let answer = f
                .grpc
                .receive_push(request(team, "d-1", "push", sign(SECRET, &body), body))
                .await
                .unwrap()
                .into_inner();
            assert!(answer.accepted && answer.duplicate, "{answer:?}");
            assert_eq!(answer.preview.unwrap().commit, FIRST);
        }
        assert_eq!(f.store.deliveries(team).await.unwrap(), 1);
        assert_eq!(f.store.get(team).await.unwrap().unwrap().commit, FIRST);
        assert!(published(&mut f.fanout).await.is_none());

        // A ping, other events, and pushes to another branch or repository are acknowledged
        // and ignored.
        let ping = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
        let ignored = [
            ("ping", "ping", ping.clone(), "ping"),
            ("issues", "issues", ping, "not a push"),
            (
                "branch",
                "push",
                push_to(SECOND, "rocket/app", "feature"),
                "another branch",
            ),
            (
                "repo",
                "push",
                push_to(SECOND, "rocket/other", "main"),
                "another repository",
            ),
        ];
        for (delivery, event, body, why) in ignored {
            let answer = f
                .grpc
                .receive_push(request(team, delivery, event, sign(SECRET, &body), body))
                .await
                .unwrap()
                .into_inner();
            assert!(!answer.accepted && !answer.duplicate, "{answer:?}");
            assert_eq!(answer.ignored, why);
        }
        assert_eq!(f.store.deliveries(team).await.unwrap(), 1);
        assert_eq!(f.store.get(team).await.unwrap().unwrap().commit, FIRST);
        assert!(published(&mut f.fanout).await.is_none());
        // The other team's repository is named by its clone URL: its pushes match.
        let theirs = push_body(SECOND);
        let answer = f
            .grpc
            .receive_push(request(
                other,
                "d-o",
                "push",
                sign("the-other-secret", &theirs),
                theirs,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.accepted, "{answer:?}");
        assert_eq!(f.store.get(other).await.unwrap().unwrap().commit, SECOND);
        assert!(published(&mut f.fanout).await.is_some());

        // Signed but not a push body, or no team: a clear invalid argument.
        let bad = b"{not json".to_vec();
        let err = f
            .grpc
            .receive_push(request(team, "d-bad", "push", sign(SECRET, &bad), bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let mut no_team = request(team, "d-x", "push", sign(SECRET, &body), body.clone());
        no_team.get_mut().team_id = String::new();
        let err = f.grpc.receive_push(no_team).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

        // A new delivery moves the preview on.
        let body = push_body(SECOND);
        let answer = f
            .grpc
            .receive_push(request(team, "d-2", "push", sign(SECRET, &body), body))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.accepted && !answer.duplicate, "{answer:?}");
        assert_eq!(f.store.get(team).await.unwrap().unwrap().commit, SECOND);
        assert_eq!(f.store.deliveries(team).await.unwrap(), 2);

        // The master key rotates: the secrets are re-encrypted and still verify.
        vault::rotate(&f.master_key).unwrap();
        assert_eq!(
            covibe_preview::reseal_secrets(f.store.as_ref(), &f.vault)
                .await
                .unwrap(),
            2
        );
        vault::retire(&f.master_key, 2).unwrap();
        let body = push_body(FIRST);
        let answer = f
            .grpc
            .receive_push(request(team, "d-3", "push", sign(SECRET, &body), body))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.accepted && !answer.duplicate, "{answer:?}");
    }

    #[tokio::test]
    async fn webhooks_on_sqlite() {
        suite(TestDb::sqlite()).await;
    }

    #[tokio::test]
    async fn webhooks_on_postgres() {
        suite(TestDb::postgres().await).await;
    }
}
