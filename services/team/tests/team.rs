//! The team domain over its SeaORM store, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, HotStore, MemoryHotStore, Subscription};
use covibe_team::{Before, Chat, PresenceStatus, SeaTeamStore, TeamDomain};
use covibe_testkit::TestDb;
use covibe_types::{ApiError, Code, UserId};

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

async fn next_event(fanout: &mut Subscription) -> ev::team_event::Event {
    let event = tokio::time::timeout(Duration::from_secs(10), fanout.recv())
        .await
        .expect("a team event")
        .expect("fan-out open");
    let FanoutEvent::Message(bytes) = event else {
        panic!("unexpected gap");
    };
    ev::TeamEvent::decode(bytes).unwrap().event.unwrap()
}

async fn chat_suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = Arc::new(SeaTeamStore::new(conn).await.unwrap());
    let teams = TeamDomain::new(store.clone(), 3600, 10);
    let hot = Arc::new(MemoryHotStore::new(16));
    let chat = Chat::new(store.clone(), hot.clone());
    let mut fanout = hot.subscribe().await.unwrap();

    let (team, sarah, code) = teams
        .create_team("Rocket", "sarah@example.com", "Sarah")
        .await
        .unwrap();
    let (_, miguel) = teams
        .redeem(&code, "miguel@example.com", "Miguel")
        .await
        .unwrap();
    let (other, chen, _) = teams
        .create_team("Other", "chen@example.com", "Chen")
        .await
        .unwrap();

    // A message is trimmed, stored with its author's name, and published to the team.
    let first = chat
        .post(sarah.id, team.id, "  hello team \n")
        .await
        .unwrap();
    assert_eq!(first.text, "hello team");
    assert_eq!(first.display_name, "Sarah");
    assert_eq!((first.team_id, first.user_id), (team.id, sarah.id));
    let ev::team_event::Event::ChatMessage(published) = next_event(&mut fanout).await else {
        panic!("expected a chat message");
    };
    assert_eq!(published.id, first.id.to_string());
    assert_eq!(published.text, "hello team");
    assert_eq!(published.team_id, team.id.to_string());

    // Many messages, some in the same millisecond: history pages walk them all exactly once.
    let mut posted = vec![first.clone()];
    for i in 0..9 {
        let author = if i % 2 == 0 { miguel.id } else { sarah.id };
        posted.push(
            chat.post(author, team.id, &format!("message {i}"))
                .await
                .unwrap(),
        );
    }
    let all = chat.history(miguel.id, team.id, None, 0).await.unwrap();
    assert!(!all.has_more);
    assert_eq!(all.messages, posted, "oldest first");
    let newest = chat.history(miguel.id, team.id, None, 3).await.unwrap();
    assert!(newest.has_more);
    assert_eq!(newest.messages, posted[7..].to_vec());
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let page = chat.history(sarah.id, team.id, before, 4).await.unwrap();
        let oldest = page.messages.first().unwrap().clone();
        walked.splice(0..0, page.messages);
        if !page.has_more {
            break;
        }
        before = Some(Before {
            at_ms: oldest.created_at_ms,
            id: Some(oldest.id),
        });
    }
    assert_eq!(walked, posted, "paging back loses and repeats nothing");
    // Before a time alone: strictly older messages.
    let older = chat
        .history(
            sarah.id,
            team.id,
            Some(Before {
                at_ms: first.created_at_ms,
                id: None,
            }),
            10,
        )
        .await
        .unwrap();
    assert!(older.messages.is_empty() && !older.has_more);

    // Bad messages are refused clearly and store nothing.
    for (bad, needle) in [
        ("", "empty"),
        (" \n\t ", "empty"),
        (&*"x".repeat(4001), "too long"),
        ("a\u{0}b", "control"),
    ] {
        let err = ApiError::from(chat.post(sarah.id, team.id, bad).await.unwrap_err());
        assert_eq!(err.code, Code::InvalidArgument, "{bad:?}");
        assert!(err.message.contains(needle), "{}", err.message);
    }
    let longest = "y".repeat(4000);
    assert_eq!(
        chat.post(sarah.id, team.id, &longest).await.unwrap().text,
        longest
    );
    posted.push(
        chat.history(sarah.id, team.id, None, 1)
            .await
            .unwrap()
            .messages[0]
            .clone(),
    );
    assert_eq!(
        chat.history(sarah.id, team.id, None, 0)
            .await
            .unwrap()
            .messages,
        posted
    );

    // Another team's member can neither read nor write this chat, and sees none of it.
    for err in [
        chat.post(chen.id, team.id, "hi").await.unwrap_err(),
        chat.history(chen.id, team.id, None, 10).await.unwrap_err(),
        chat.presence(chen.id, team.id).await.unwrap_err(),
        chat.update_presence(chen.id, team.id, Some(PresenceStatus::Online))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(ApiError::from(err).code, Code::PermissionDenied);
    }
    let theirs = chat.history(chen.id, other.id, None, 10).await.unwrap();
    assert!(theirs.messages.is_empty());
    assert!(chat.post(UserId::new(), team.id, "ghost").await.is_err());

    // Drain the events of the posts above.
    for _ in 1..posted.len() {
        assert!(matches!(
            next_event(&mut fanout).await,
            ev::team_event::Event::ChatMessage(_)
        ));
    }

    // Presence: every member listed, offline until they say otherwise.
    let roster = chat.presence(miguel.id, team.id).await.unwrap();
    assert_eq!(
        roster
            .users
            .iter()
            .map(|u| (u.user_id, u.status))
            .collect::<Vec<_>>(),
        vec![
            (sarah.id, PresenceStatus::Offline),
            (miguel.id, PresenceStatus::Offline)
        ]
    );
    // "Still here" from someone with no live status makes them online.
    let now = chat.update_presence(sarah.id, team.id, None).await.unwrap();
    assert_eq!(now.status_of(sarah.id), Some(PresenceStatus::Online));
    assert!(now.users[0].last_seen_ms > 0);
    let ev::team_event::Event::TeamPresence(published) = next_event(&mut fanout).await else {
        panic!("expected presence");
    };
    assert_eq!(published.users.len(), 2);
    assert!(published.version > 0);
    let first_version = published.version;
    assert_eq!(published.users[0].user_id, sarah.id.to_string());
    assert_eq!(published.users[0].display_name, "Sarah");
    // Repeating a status keeps it alive and tells nobody: the next event is Miguel's change.
    chat.update_presence(sarah.id, team.id, Some(PresenceStatus::Online))
        .await
        .unwrap();
    let now = chat
        .update_presence(miguel.id, team.id, Some(PresenceStatus::Away))
        .await
        .unwrap();
    assert_eq!(now.status_of(miguel.id), Some(PresenceStatus::Away));
    assert_eq!(now.status_of(sarah.id), Some(PresenceStatus::Online));
    let ev::team_event::Event::TeamPresence(published) = next_event(&mut fanout).await else {
        panic!("expected presence");
    };
    assert!(
        published.version > first_version,
        "later snapshots have higher versions"
    );
    let statuses: Vec<i32> = published.users.iter().map(|u| u.status).collect();
    assert_eq!(
        statuses,
        vec![
            covibe_proto::team::v1::PresenceStatus::Online as i32,
            covibe_proto::team::v1::PresenceStatus::Away as i32
        ]
    );
    // Going offline is a change too, and keeps when the member was last seen.
    // "Still here" keeps away as it is, and tells nobody (the next event is Sarah's).
    let now = chat
        .update_presence(miguel.id, team.id, None)
        .await
        .unwrap();
    assert_eq!(now.status_of(miguel.id), Some(PresenceStatus::Away));
    let now = chat
        .update_presence(sarah.id, team.id, Some(PresenceStatus::Offline))
        .await
        .unwrap();
    assert_eq!(now.status_of(sarah.id), Some(PresenceStatus::Offline));
    assert!(now.users[0].last_seen_ms > 0);
    assert!(matches!(
        next_event(&mut fanout).await,
        ev::team_event::Event::TeamPresence(_)
    ));
    // Another team's roster holds only its own members.
    let theirs = chat.presence(chen.id, other.id).await.unwrap();
    assert_eq!(theirs.users.len(), 1);
    assert_eq!(theirs.users[0].user_id, chen.id);
    assert_eq!(theirs.users[0].status, PresenceStatus::Offline);
}

#[tokio::test]
async fn chat_and_presence_on_sqlite() {
    chat_suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn chat_and_presence_on_postgres() {
    chat_suite(TestDb::postgres().await).await;
}
