//! The team domain over its SeaORM store, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use covibe_team::{SeaTeamStore, TeamDomain};
use covibe_testkit::TestDb;
use covibe_types::{Code, UserId};

async fn domain(db: &TestDb, max_uses: u32) -> TeamDomain {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaTeamStore::new(conn).await.unwrap();
    TeamDomain::new(Arc::new(store), 3600, max_uses)
}

async fn suite(db: TestDb) {
    let teams = domain(&db, 2).await;
    let (team, owner, code) = teams
        .create_team("Rocket", "Sarah@Example.com ", "Sarah")
        .await
        .unwrap();
    assert_eq!(owner.email, "sarah@example.com");
    assert_eq!(owner.team_id, team.id);

    // A newcomer joins with the code, typed sloppily.
    let sloppy = code.to_lowercase().replace('-', " ");
    let (joined, miguel) = teams
        .redeem(&sloppy, "miguel@example.com", "Miguel")
        .await
        .unwrap();
    assert_eq!(joined.id, team.id);
    // Signing in again is the same member and uses nothing up.
    let (_, again) = teams
        .redeem(&code, "MIGUEL@example.com", "Miguel")
        .await
        .unwrap();
    assert_eq!(again.id, miguel.id);
    let (_, chen) = teams
        .redeem(&code, "chen@example.com", "Chen")
        .await
        .unwrap();
    // Two uses are spent: a third newcomer is refused the same way as a made-up code.
    let used_up = teams
        .redeem(&code, "dana@example.com", "Dana")
        .await
        .unwrap_err();
    let made_up = teams
        .redeem("AAAA-BBBB-CCCC-DDDD", "dana@example.com", "Dana")
        .await
        .unwrap_err();
    let (a, b) = (
        covibe_types::ApiError::from(used_up),
        covibe_types::ApiError::from(made_up),
    );
    assert_eq!(a, b, "no way to tell a used-up code from an unknown one");
    assert_eq!(a.code, Code::Unauthenticated);

    let (_, members) = teams.team_with_members(owner.id, team.id).await.unwrap();
    let ids: Vec<UserId> = members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![owner.id, miguel.id, chen.id]);

    // Another team's member cannot see this team or mint codes for it.
    let (other_team, stranger, _) = teams
        .create_team("Other", "x@example.com", "X")
        .await
        .unwrap();
    assert_ne!(other_team.id, team.id);
    let err = covibe_types::ApiError::from(
        teams
            .team_with_members(stranger.id, team.id)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, Code::PermissionDenied);
    let err = covibe_types::ApiError::from(
        teams
            .create_invite(stranger.id, team.id, 1, 60)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, Code::PermissionDenied);

    // A fresh code from a member works once.
    let (fresh, invite) = teams.create_invite(owner.id, team.id, 1, 60).await.unwrap();
    assert_eq!(invite.max_uses, 1);
    teams
        .redeem(&fresh, "dana@example.com", "Dana")
        .await
        .unwrap();
    assert!(
        teams
            .redeem(&fresh, "eve@example.com", "Eve")
            .await
            .is_err()
    );

    // Bad input is refused with a clear message.
    let err = covibe_types::ApiError::from(teams.create_team("", "a@b.c", "A").await.unwrap_err());
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.contains("team name"));
    let err = covibe_types::ApiError::from(
        teams
            .create_team("T", "not-an-email", "A")
            .await
            .unwrap_err(),
    );
    assert!(err.message.contains("email"));
    assert!(teams.member(UserId::new()).await.is_err());
}

#[tokio::test]
async fn team_domain_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn team_domain_on_postgres() {
    suite(TestDb::postgres().await).await;
}
