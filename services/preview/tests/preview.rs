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
