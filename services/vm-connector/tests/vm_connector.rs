//! The VM store over SeaORM, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_testkit::TestDb;
use covibe_types::{TeamId, UserId, VmId};
use covibe_vm_connector::{SeaVmStore, Vm, VmStore};

fn vm(user: UserId, team: TeamId, name: &str) -> Vm {
    Vm {
        id: VmId::new(),
        user_id: user,
        team_id: team,
        name: name.to_owned(),
        strategy: "local".to_owned(),
        last_seen_ms: 0,
    }
}

async fn suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaVmStore::new(conn).await.unwrap();
    let (sarah, miguel, team) = (UserId::new(), UserId::new(), TeamId::new());
    assert!(store.list(sarah).await.unwrap().is_empty());

    let first = vm(sarah, team, "laptop");
    let theirs = vm(miguel, team, "desktop");
    let second = vm(sarah, team, "cloud box");
    for v in [&first, &theirs, &second] {
        store.insert(v).await.unwrap();
    }
    // Only her own VMs, in a stable order (by id, so oldest first).
    let listed = store.list(sarah).await.unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);
    assert_eq!(store.list(sarah).await.unwrap(), listed);
    assert_eq!(store.list(miguel).await.unwrap(), vec![theirs.clone()]);
    // The same id twice is refused.
    assert!(store.insert(&first).await.is_err());

    // Touching a VM marks it seen, and only that VM.
    store.touch(second.id).await.unwrap();
    let listed = store.list(sarah).await.unwrap();
    assert_eq!(listed[0], first);
    assert!(listed[1].last_seen_ms > 0);
    assert_eq!(
        listed[1],
        Vm {
            last_seen_ms: listed[1].last_seen_ms,
            ..second
        }
    );
    assert_eq!(store.list(miguel).await.unwrap(), vec![theirs]);
    // Touching an unknown VM is harmless.
    store.touch(VmId::new()).await.unwrap();
}

#[tokio::test]
async fn vm_store_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn vm_store_on_postgres() {
    suite(TestDb::postgres().await).await;
}
