//! Sessions over the SeaORM refresh store, run against SQLite and PostgreSQL alike: access tokens,
//! refresh rotation, reuse detection and membership checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use covibe_auth::{Error, SeaRefreshStore, Sessions};
use covibe_identity::{KeyFiles, Principal, Verifier};
use covibe_testkit::TestDb;
use covibe_types::{ApiError, Code, TeamId, UserId};

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

async fn suite(db: TestDb) {
    let keys = tempfile::tempdir().unwrap();
    let (signer, verifier): (_, Verifier) = covibe_identity::load_or_generate(&KeyFiles {
        signing: keys.path().join("signing.pem"),
        verifying: keys.path().join("verifying.pem"),
    })
    .unwrap();
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaRefreshStore::new(conn).await.unwrap();
    let sessions = Sessions::new(
        signer,
        Arc::new(store),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    );
    let (user, team) = (UserId::new(), TeamId::new());
    let member = Principal::Member {
        user_id: user,
        team_id: team,
    };

    // Sign-in: the access token names the member.
    let first = sessions.start(user, team).await.unwrap();
    assert_eq!(verifier.verify(&first.access_token).unwrap(), member);
    assert!(first.access_expires_at_ms > 0);
    // The same member on a second device: a family of its own.
    let laptop = sessions.start(user, team).await.unwrap();
    assert_ne!(laptop.refresh_token, first.refresh_token);

    // Rotation: a new refresh token, and a new access token for the same member.
    let second = sessions
        .refresh(&first.refresh_token, still_member)
        .await
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(verifier.verify(&second.access_token).unwrap(), member);

    // Replaying the rotated token is refused and revokes the family: the newest token of that
    // family stops working too.
    let replay = refused(
        sessions
            .refresh(&first.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    let newest = refused(
        sessions
            .refresh(&second.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    // A made-up token is refused the same way: nothing tells a caller why.
    let unknown = refused(
        sessions
            .refresh("rt_not-a-token-we-issued", still_member)
            .await
            .unwrap_err(),
    );
    assert_eq!(replay, unknown);
    assert_eq!(newest, unknown);

    // The other device's family is untouched by that revocation.
    let laptop2 = sessions
        .refresh(&laptop.refresh_token, still_member)
        .await
        .unwrap();
    assert_eq!(verifier.verify(&laptop2.access_token).unwrap(), member);

    // A member who left the team cannot refresh, and the family is finished for good.
    refused(
        sessions
            .refresh(&laptop2.refresh_token, gone)
            .await
            .unwrap_err(),
    );
    refused(
        sessions
            .refresh(&laptop2.refresh_token, still_member)
            .await
            .unwrap_err(),
    );
    // The membership check is asked about the token's own member.
    let (other, other_team) = (UserId::new(), TeamId::new());
    let theirs = sessions.start(other, other_team).await.unwrap();
    let asked = sessions
        .refresh(&theirs.refresh_token, |u| async move { Ok(u == other) })
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&asked.access_token).unwrap(),
        Principal::Member {
            user_id: other,
            team_id: other_team
        }
    );

    // Two refreshes of one token at the same moment: exactly one gets new tokens.
    let racing = sessions.start(user, team).await.unwrap();
    let (a, b) = tokio::join!(
        sessions.refresh(&racing.refresh_token, still_member),
        sessions.refresh(&racing.refresh_token, still_member),
    );
    let winners: Vec<_> = [a, b]
        .into_iter()
        .filter_map(|r| match r {
            Ok(tokens) => Some(tokens),
            Err(err) => {
                refused(err);
                None
            }
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one concurrent refresh wins");
    assert_eq!(verifier.verify(&winners[0].access_token).unwrap(), member);
}

#[tokio::test]
async fn sessions_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn sessions_on_postgres() {
    suite(TestDb::postgres().await).await;
}
