//! The VM store over SeaORM, run against SQLite and PostgreSQL alike.

use covibe_testkit::TestDb;
use covibe_types::{TeamId, UserId, VmId};
use covibe_vm_connector::{SeaVmStore, Strategy, Vm, VmStore};

fn vm(user: UserId, team: TeamId, name: &str) -> Vm {
    Vm::new(user, team, name.to_owned(), Strategy::Local)
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

    // An update renames the owner's VM and nothing else; it never reaches another member's
    // VM, another team's, or one that does not exist.
    let before = store.list(sarah).await.unwrap();
    let renamed = Vm {
        name: "old laptop".to_owned(),
        ..before[0].clone()
    };
    assert!(store.update(&renamed).await.unwrap());
    let hijack = Vm {
        user_id: miguel,
        name: "hijacked".to_owned(),
        ..renamed.clone()
    };
    assert!(!store.update(&hijack).await.unwrap());
    let elsewhere = Vm {
        team_id: TeamId::new(),
        name: "elsewhere".to_owned(),
        ..renamed.clone()
    };
    assert!(!store.update(&elsewhere).await.unwrap());
    assert!(!store.update(&vm(sarah, team, "ghost")).await.unwrap());
    assert_eq!(
        store.list(sarah).await.unwrap(),
        vec![renamed, before[1].clone()]
    );
    let theirs = store.list(miguel).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].name, "desktop");
}

#[tokio::test]
async fn vm_store_on_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn vm_store_on_postgres() {
    suite(TestDb::postgres().await).await;
}
