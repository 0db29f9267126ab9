//! Sessions over the SeaORM session store, run against SQLite and PostgreSQL alike: access
//! tokens naming their session, refresh rotation with a grace for retries and reuse detection,
//! the end of sessions (refused at once by a verifier that follows them), and one-time codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use covibe_auth::{CodeKind, Error, SeaSessionStore, SessionStore, Sessions, SignInCode};
use covibe_identity::revocation::Ender;
use covibe_identity::{KeyFiles, Principal, Revocations, Verifier};
use covibe_storage::MemoryHotStore;
use covibe_testkit::TestDb;
use covibe_types::{ApiError, Code, TeamId, UserId, now_ms};

async fn still_member(_: UserId) -> Result<bool, Error> {
    Ok(true)
}

async fn gone(_: UserId) -> Result<bool, Error> {
    Ok(false)
}

fn refused(err: Error) -> ApiError {
    let api = ApiError::from(err);
    assert_eq!(api.code, Code::Unauthenticated, "{api:?}");
    api
}

struct Fixture {
    sessions: Sessions,
    store: Arc<SeaSessionStore>,
    verifier: Verifier,
    _keys: tempfile::TempDir,
}

async fn fixture(db: &TestDb, grace: Duration) -> Fixture {
    let keys = tempfile::tempdir().unwrap();
    let (signer, verifier) = covibe_identity::load_or_generate(&KeyFiles {
        signing: keys.path().join("signing.pem"),
        verifying: keys.path().join("verifying.pem"),
    })
    .unwrap();
    let revocations = Revocations::default();
    let verifier = verifier.with_revocations(revocations.clone());
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = Arc::new(SeaSessionStore::new(conn).await.unwrap());
    let sessions = Sessions::new(
        signer,
        store.clone(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
    .with_refresh_grace(grace)
    .with_ender(Ender {
        hot: Arc::new(MemoryHotStore::new(16)),
        revocations,
        hold: Duration::from_secs(600),
    });
    Fixture {
        sessions,
        store,
        verifier,
        _keys: keys,
    }
}

async fn suite(db: TestDb) {
    let f = fixture(&db, Duration::from_secs(3600)).await;
    let (sessions, verifier) = (&f.sessions, &f.verifier);
    let (user, team) = (UserId::new(), TeamId::new());
    let member = |session_id| Principal::Member {
        user_id: user,
        team_id: team,
        session_id,
    };

    // Sign-in: the access token names the member and this device's session.
    let phone = sessions.start(user, team, "Pixel").await.unwrap();
    assert_eq!(
        verifier.verify(&phone.access_token).unwrap(),
        member(phone.session_id)
    );
    // A second device: a session of its own; both are listed, newest first.
    let laptop = sessions
        .start(user, team, " Firefox\u{7} on Linux ")
        .await
        .unwrap();
    assert_ne!(laptop.session_id, phone.session_id);
    let listed = sessions.sessions_of(user).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.device_name.as_str()).collect();
    assert_eq!(names, ["Firefox on Linux", "Pixel"]);

    // Rotation: a new pair for the same session. A retry of the same token within the grace
    // (a phone on a flaky network) gets exactly the same pair.
    let second = sessions
        .refresh(&phone.refresh_token, still_member)
        .await
        .unwrap();
    assert_ne!(second.refresh_token, phone.refresh_token);
    assert_eq!(
        verifier.verify(&second.access_token).unwrap(),
        member(phone.session_id)
    );
    let retried = sessions
        .refresh(&phone.refresh_token, still_member)
        .await
        .unwrap();
    assert_eq!(
        retried, second,
        "a retry within the grace gets the same pair"
    );

    // Two concurrent refreshes of one token: both succeed, with the same pair.
    let (a, b) = tokio::join!(
        sessions.refresh(&second.refresh_token, still_member),
        sessions.refresh(&second.refresh_token, still_member),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "concurrent refreshes share one new pair");
    // Once the pair handed out has been used, the old token is a replay: the session ends,
    // its newest token stops working and its access tokens are refused at once.
    let third = sessions
        .refresh(&a.refresh_token, still_member)
        .await
        .unwrap();
    let replay = refused(
        sessions
            .refresh(&second.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    refused(
        sessions
            .refresh(&third.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    assert!(verifier.verify(&third.access_token).is_err());
    // A made-up token is refused the same way: nothing tells a caller why.
    let unknown = refused(
        sessions
            .refresh("rt_not-a-token-we-issued", still_member)
            .await
            .unwrap_err(),
    );
    assert_eq!(replay, unknown);

    // The other device is untouched, and the ended one is no longer listed.
    let laptop2 = sessions
        .refresh(&laptop.refresh_token, still_member)
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&laptop2.access_token).unwrap(),
        member(laptop.session_id)
    );
    let listed = sessions.sessions_of(user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, laptop.session_id);

    // Logout of one session: its refresh and access tokens stop at once; logout of all the
    // others ends the rest.
    let tablet = sessions.start(user, team, "iPad").await.unwrap();
    assert_eq!(
        sessions
            .end(user, Some(laptop.session_id), "logout")
            .await
            .unwrap(),
        1
    );
    assert!(verifier.verify(&laptop2.access_token).is_err());
    refused(
        sessions
            .refresh(&laptop2.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    assert!(verifier.verify(&tablet.access_token).is_ok());
    assert_eq!(sessions.end(user, None, "logout").await.unwrap(), 1);
    assert!(verifier.verify(&tablet.access_token).is_err());
    assert!(sessions.sessions_of(user).await.unwrap().is_empty());

    // A member who left the team cannot refresh, and that session is finished for good.
    let (other, other_team) = (UserId::new(), TeamId::new());
    let theirs = sessions.start(other, other_team, "phone").await.unwrap();
    refused(
        sessions
            .refresh(&theirs.refresh_token, gone)
            .await
            .unwrap_err(),
    );
    refused(
        sessions
            .refresh(&theirs.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    // The membership check is asked about the token's own member.
    let again = sessions.start(other, other_team, "phone").await.unwrap();
    let asked = sessions
        .refresh(&again.refresh_token, |u| async move { Ok(u == other) })
        .await
        .unwrap();
    assert!(verifier.verify(&asked.access_token).is_ok());

    // Device codes: one use each; unknown, used and expired codes get one answer.
    let (code, expires) = sessions
        .create_code(CodeKind::Device, user, team, Some(user))
        .await
        .unwrap();
    assert!(expires > now_ms());
    let redeemed = sessions.redeem_code(&code.to_lowercase()).await.unwrap();
    assert_eq!((redeemed.user_id, redeemed.kind), (user, CodeKind::Device));
    let used = refused(sessions.redeem_code(&code).await.unwrap_err());
    let made_up = refused(
        sessions
            .redeem_code("AAAA-BBBB-CCCC-DDDD")
            .await
            .unwrap_err(),
    );
    let garbage = refused(sessions.redeem_code("not a code").await.unwrap_err());
    let expired_code = covibe_identity::code::new_code();
    f.store
        .add_code(&SignInCode {
            code_hash: covibe_identity::code::hash_code(&expired_code),
            kind: CodeKind::Recovery,
            user_id: user,
            team_id: team,
            created_by: None,
            created_at_ms: now_ms() - 10_000,
            expires_at_ms: now_ms() - 1,
        })
        .await
        .unwrap();
    let expired = refused(sessions.redeem_code(&expired_code).await.unwrap_err());
    assert_eq!(used, made_up);
    assert_eq!(used, garbage);
    assert_eq!(used, expired);
}

/// After the grace, a replay of a rotated token ends the session even though its successor
/// was never used.
async fn replay_after_grace(db: TestDb) {
    let f = fixture(&db, Duration::ZERO).await;
    let (user, team) = (UserId::new(), TeamId::new());
    let first = f.sessions.start(user, team, "phone").await.unwrap();
    let next = f
        .sessions
        .refresh(&first.refresh_token, still_member)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    refused(
        f.sessions
            .refresh(&first.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    refused(
        f.sessions
            .refresh(&next.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    assert!(f.verifier.verify(&next.access_token).is_err());
}

#[tokio::test]
async fn sessions_on_sqlite() {
    suite(TestDb::sqlite()).await;
    replay_after_grace(TestDb::sqlite()).await;
}

#[tokio::test]
async fn sessions_on_postgres() {
    suite(TestDb::postgres().await).await;
    replay_after_grace(TestDb::postgres().await).await;
}
