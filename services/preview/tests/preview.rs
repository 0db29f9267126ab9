//! The preview store over SeaORM, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_preview::{Preview, PreviewStore, SeaPreviewStore};
use covibe_testkit::TestDb;
use covibe_types::TeamId;

async fn suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaPreviewStore::new(conn).await.unwrap();
    let (team, other) = (TeamId::new(), TeamId::new());
    assert_eq!(store.get(team).await.unwrap(), None);

    let pending = Preview {
        team_id: team,
        url: String::new(),
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
        commit: "feed".to_owned(),
        status: "pending".to_owned(),
        updated_at_ms: 3_000,
    };
    store.put(&theirs).await.unwrap();
    assert_eq!(store.get(other).await.unwrap(), Some(theirs));
    assert_eq!(store.get(team).await.unwrap(), Some(live));
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
    use covibe_preview::{PreviewGrpc, PreviewStore, SeaPreviewStore};
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
        serde_json::to_vec(&serde_json::json!({
            "ref": "refs/heads/main",
            "after": commit,
            "repository": {"full_name": "rocket/app"},
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
        _keys: tempfile::TempDir,
    }

    async fn fixture(db: &TestDb, secret: Option<&str>) -> Fixture {
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
        let grpc = PreviewGrpc::new(store.clone(), verifier, hot, secret.map(str::to_owned));
        Fixture {
            grpc,
            store,
            fanout,
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
        let mut f = fixture(&db, Some(SECRET)).await;
        let team = TeamId::new();
        let body = push_body(FIRST);

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

        // Other events are acknowledged and ignored.
        let ping = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
        let answer = f
            .grpc
            .receive_push(request(team, "d-ping", "ping", sign(SECRET, &ping), ping))
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.accepted && !answer.duplicate, "{answer:?}");
        assert_eq!(f.store.deliveries(team).await.unwrap(), 1);
        assert!(published(&mut f.fanout).await.is_none());

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
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

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

        // No secret configured: every webhook is refused, even a "signed" one.
        let mut unconfigured = fixture(&db, None).await;
        let other = TeamId::new();
        let body = push_body(FIRST);
        let err = unconfigured
            .grpc
            .receive_push(request(other, "d-3", "push", sign("", &body), body))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("not configured"), "{err:?}");
        assert_eq!(unconfigured.store.get(other).await.unwrap(), None);
        assert_eq!(unconfigured.store.deliveries(other).await.unwrap(), 0);
        assert!(published(&mut unconfigured.fanout).await.is_none());
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
