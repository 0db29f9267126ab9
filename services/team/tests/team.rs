//! The team domain over its SeaORM store, run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use covibe_identity::Revocations;
use covibe_identity::revocation::Ender;
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, HotStore, MemoryHotStore, Subscription};
use covibe_team::{Before, Chat, PresenceStatus, PresenceUpdate, Role, SeaTeamStore, TeamDomain};
use covibe_testkit::TestDb;
use covibe_types::AgentId;
use covibe_types::{ApiError, Code, UserId};

#[path = "team/policy.rs"]
mod policy;

async fn domain(db: &TestDb, max_uses: u32, revocations: &Revocations) -> TeamDomain {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = SeaTeamStore::new(conn).await.unwrap();
    TeamDomain::new(Arc::new(store), 3600, max_uses).with_session_ender(Ender {
        hot: Arc::new(MemoryHotStore::new(16)),
        revocations: revocations.clone(),
        hold: Duration::from_secs(600),
    })
}

fn api(err: covibe_team::Error) -> ApiError {
    ApiError::from(err)
}

async fn suite(db: TestDb) {
    let revocations = Revocations::default();
    let teams = domain(&db, 2, &revocations).await;
    let (team, sarah, code) = teams
        .create_team("Rocket", "Sarah@Example.com ", "Sarah")
        .await
        .unwrap();
    assert_eq!(sarah.email, "sarah@example.com");
    assert_eq!((sarah.team_id, sarah.role), (team.id, Role::Owner));

    // A newcomer joins with the code, typed sloppily, as a plain member.
    let sloppy = code.to_lowercase().replace('-', " ");
    let (joined, miguel) = teams
        .redeem(&sloppy, "miguel@example.com", "Miguel")
        .await
        .unwrap();
    assert_eq!((joined.id, miguel.role), (team.id, Role::Member));
    // The code never signs anybody in: a member's email (the owner's included) is refused
    // exactly like a made-up code, and uses nothing up.
    let made_up = api(teams
        .redeem("AAAA-BBBB-CCCC-DDDD", "dana@example.com", "Dana")
        .await
        .unwrap_err());
    assert_eq!(made_up.code, Code::Unauthenticated);
    for email in ["MIGUEL@example.com", "sarah@example.com"] {
        let err = api(teams.redeem(&code, email, "X").await.unwrap_err());
        assert_eq!(err, made_up, "{email}: no way to learn who is a member");
    }
    let (_, chen) = teams
        .redeem(&code, "chen@example.com", "Chen")
        .await
        .unwrap();
    // Two uses are spent: a third newcomer is refused the same way as a made-up code.
    let used_up = api(teams
        .redeem(&code, "dana@example.com", "Dana")
        .await
        .unwrap_err());
    assert_eq!(
        used_up, made_up,
        "no way to tell a used-up code from an unknown one"
    );

    // Everyone sees the members and their roles; only owners and admins see others' emails.
    let (_, members) = teams.team_with_members(sarah.id, team.id).await.unwrap();
    let ids: Vec<UserId> = members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![sarah.id, miguel.id, chen.id]);
    assert!(members.iter().all(|m| !m.email.is_empty()));
    let (_, seen) = teams.team_with_members(miguel.id, team.id).await.unwrap();
    let emails: Vec<&str> = seen.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(emails, ["", "miguel@example.com", ""]);
    let roles: Vec<Role> = seen.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::Owner, Role::Member, Role::Member]);

    // Another team's member cannot see this team or mint codes for it.
    let (other_team, stranger, _) = teams
        .create_team("Other", "x@example.com", "X")
        .await
        .unwrap();
    assert_ne!(other_team.id, team.id);
    for err in [
        api(teams
            .team_with_members(stranger.id, team.id)
            .await
            .unwrap_err()),
        api(teams
            .create_invite(stranger.id, team.id, 1, 60)
            .await
            .unwrap_err()),
        api(teams.invites(stranger.id, team.id).await.unwrap_err()),
        api(teams
            .remove_member(stranger.id, team.id, chen.id)
            .await
            .unwrap_err()),
    ] {
        assert_eq!(err.code, Code::PermissionDenied, "{err:?}");
    }
    // A plain member manages nothing.
    for err in [
        api(teams
            .create_invite(miguel.id, team.id, 1, 60)
            .await
            .unwrap_err()),
        api(teams.invites(miguel.id, team.id).await.unwrap_err()),
        api(teams
            .remove_member(miguel.id, team.id, chen.id)
            .await
            .unwrap_err()),
        api(teams
            .set_role(miguel.id, team.id, chen.id, Role::Admin)
            .await
            .unwrap_err()),
        api(teams
            .transfer_ownership(miguel.id, team.id, miguel.id)
            .await
            .unwrap_err()),
    ] {
        assert_eq!(err.code, Code::PermissionDenied, "{err:?}");
    }

    // The owner's invites: listed (never with their code), revoked, then refused like any.
    let (fresh, invite) = teams.create_invite(sarah.id, team.id, 1, 60).await.unwrap();
    assert_eq!(invite.max_uses, 1);
    let listed = teams.invites(sarah.id, team.id).await.unwrap();
    assert_eq!(listed[0].id, invite.id, "newest first");
    assert!(listed[0].usable(covibe_types::now_ms()));
    let revoked = teams
        .revoke_invite(sarah.id, team.id, &invite.id)
        .await
        .unwrap();
    assert!(revoked.revoked);
    let err = api(teams
        .redeem(&fresh, "dana@example.com", "Dana")
        .await
        .unwrap_err());
    assert_eq!(err, made_up);
    let err = api(teams
        .revoke_invite(stranger.id, other_team.id, &invite.id)
        .await
        .unwrap_err());
    assert_eq!(
        err.code,
        Code::NotFound,
        "another team's invite does not exist for them"
    );

    // The owner makes Miguel an admin: he mints invites and removes members, not admins nor
    // the owner, and changes no roles.
    let promoted = teams
        .set_role(sarah.id, team.id, miguel.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(promoted.role, Role::Admin);
    let err = api(teams
        .set_role(sarah.id, team.id, miguel.id, Role::Owner)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::InvalidArgument);
    let (code, _) = teams
        .create_invite(miguel.id, team.id, 5, 60)
        .await
        .unwrap();
    assert_eq!(teams.invites(miguel.id, team.id).await.unwrap().len(), 3);
    let (_, dana) = teams
        .redeem(&code, "dana@example.com", "Dana")
        .await
        .unwrap();
    let err = api(teams
        .set_role(miguel.id, team.id, dana.id, Role::Admin)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::PermissionDenied);
    let err = api(teams
        .remove_member(miguel.id, team.id, sarah.id)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::PermissionDenied);
    teams
        .remove_member(miguel.id, team.id, dana.id)
        .await
        .unwrap();
    // Removed: no longer a member anywhere, every session of theirs ended, and a retry is
    // harmless.
    assert!(revocations.is_removed(dana.id));
    assert!(teams.member(dana.id).await.is_err());
    teams
        .remove_member(miguel.id, team.id, dana.id)
        .await
        .unwrap();
    let err = api(teams.team_with_members(dana.id, team.id).await.unwrap_err());
    assert_eq!(err.code, Code::PermissionDenied);
    // Their email may join again, as a new member.
    let (_, dana_again) = teams
        .redeem(&code, "dana@example.com", "Dana")
        .await
        .unwrap();
    assert_ne!(dana_again.id, dana.id);
    assert!(!revocations.is_removed(dana_again.id));
    // Nobody removes themselves this way, nor a member of another team.
    let err = api(teams
        .remove_member(sarah.id, team.id, sarah.id)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::InvalidArgument);
    let err = api(teams
        .remove_member(sarah.id, team.id, stranger.id)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::NotFound);

    // Ownership moves to Chen; Sarah becomes an admin and can no longer change roles.
    let (_, after) = teams
        .transfer_ownership(sarah.id, team.id, chen.id)
        .await
        .unwrap();
    let role_of = |id| after.iter().find(|m| m.id == id).map(|m| m.role);
    assert_eq!(role_of(chen.id), Some(Role::Owner));
    assert_eq!(role_of(sarah.id), Some(Role::Admin));
    let err = api(teams
        .set_role(sarah.id, team.id, miguel.id, Role::Member)
        .await
        .unwrap_err());
    assert_eq!(err.code, Code::PermissionDenied);
    teams
        .remove_member(chen.id, team.id, sarah.id)
        .await
        .unwrap();
    assert!(revocations.is_removed(sarah.id));

    // Bad input is refused with a clear message.
    let err = api(teams.create_team("", "a@b.c", "A").await.unwrap_err());
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.contains("team name"));
    let err = api(teams
        .create_team("T", "not-an-email", "A")
        .await
        .unwrap_err());
    assert!(err.message.contains("email"));
    assert!(teams.member(UserId::new()).await.is_err());
}

/// Teams created before roles existed: their creator (the first member) becomes the owner,
/// the others members, and their invites get ids.
async fn migration_suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    for statement in [
        "CREATE TABLE teams (id varchar(40) NOT NULL PRIMARY KEY, name varchar(128) NOT NULL, \
         created_at_ms bigint NOT NULL)",
        "CREATE TABLE members (id varchar(40) NOT NULL PRIMARY KEY, team_id varchar(40) NOT NULL, \
         email varchar(254) NOT NULL, display_name varchar(128) NOT NULL, created_at_ms bigint NOT NULL)",
        "CREATE UNIQUE INDEX members_team_email ON members (team_id, email)",
        "CREATE TABLE invites (code_hash varchar(64) NOT NULL PRIMARY KEY, team_id varchar(40) NOT NULL, \
         created_by varchar(40) NOT NULL, expires_at_ms bigint NOT NULL, max_uses bigint NOT NULL, \
         uses bigint NOT NULL, revoked boolean NOT NULL)",
        "INSERT INTO teams VALUES ('00000000-0000-7000-8000-000000000001', 'Old', 1)",
        "INSERT INTO members VALUES ('00000000-0000-7000-8000-000000000003', \
         '00000000-0000-7000-8000-000000000001', 'later@example.com', 'Later', 20)",
        "INSERT INTO members VALUES ('00000000-0000-7000-8000-000000000002', \
         '00000000-0000-7000-8000-000000000001', 'creator@example.com', 'Creator', 10)",
        "INSERT INTO invites VALUES ('abababababababababababababababababababababababababababababababab', \
         '00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-000000000002', \
         99999999999999, 5, 1, FALSE)",
    ] {
        sea_orm::ConnectionTrait::execute_unprepared(&conn, statement)
            .await
            .unwrap();
    }
    let teams = domain(&db, 2, &Revocations::default()).await;
    let creator: UserId = "00000000-0000-7000-8000-000000000002".parse().unwrap();
    let team = "00000000-0000-7000-8000-000000000001".parse().unwrap();
    let (_, members) = teams.team_with_members(creator, team).await.unwrap();
    let roles: Vec<(&str, Role)> = members
        .iter()
        .map(|m| (m.display_name.as_str(), m.role))
        .collect();
    assert_eq!(roles, [("Creator", Role::Owner), ("Later", Role::Member)]);
    let invites = teams.invites(creator, team).await.unwrap();
    assert_eq!(invites.len(), 1);
    assert!(!invites[0].id.is_empty());
}

/// A join retried with its join key, after a first try that made the member but whose answer
/// was lost: the same member again, though that try used the invite up. Only the same email
/// and key do; a key is never a way in without the code.
async fn join_retry_suite(db: TestDb) {
    let teams = domain(&db, 1, &Revocations::default()).await;
    let (team, sarah, code) = teams
        .create_team("Rocket", "sarah@example.com", "Sarah")
        .await
        .unwrap();
    let key = "k3y-0f-th1s-j0in_attempt";
    let (joined, miguel) = teams
        .redeem_retryable(&code, "miguel@example.com", "Miguel", key)
        .await
        .unwrap();
    assert_eq!(joined.id, team.id);
    let (again, miguel_again) = teams
        .redeem_retryable(&code, " Miguel@Example.com", "Miguel", key)
        .await
        .unwrap();
    assert_eq!((again.id, miguel_again.id), (team.id, miguel.id));
    let refused = api(teams
        .redeem("AAAA-BBBB-CCCC-DDDD", "dana@example.com", "Dana")
        .await
        .unwrap_err());
    for (email, other_key) in [
        ("miguel@example.com", "an0ther-key-0f-someone"),
        ("miguel@example.com", ""),
        ("dana@example.com", key),
    ] {
        let err = api(teams
            .redeem_retryable(&code, email, "X", other_key)
            .await
            .unwrap_err());
        assert_eq!(err, refused, "{email} {other_key:?}");
    }
    let err = api(teams
        .redeem_retryable("AAAA-BBBB-CCCC-DDDD", "miguel@example.com", "M", key)
        .await
        .unwrap_err());
    assert_eq!(err, refused, "the key without the code");
    for bad in ["short", "has spaces in it, sixteen+", &"k".repeat(129)] {
        let err = api(teams
            .redeem_retryable(&code, "dana@example.com", "Dana", bad)
            .await
            .unwrap_err());
        assert_eq!(err.code, Code::InvalidArgument, "{bad:?}");
    }
    // Removed, the member is no retry's to sign in.
    teams
        .remove_member(sarah.id, team.id, miguel.id)
        .await
        .unwrap();
    let err = api(teams
        .redeem_retryable(&code, "miguel@example.com", "Miguel", key)
        .await
        .unwrap_err());
    assert_eq!(err, refused);
}

#[tokio::test]
async fn team_domain_on_sqlite() {
    suite(TestDb::sqlite()).await;
    migration_suite(TestDb::sqlite()).await;
    join_retry_suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn team_domain_on_postgres() {
    suite(TestDb::postgres().await).await;
    migration_suite(TestDb::postgres().await).await;
    join_retry_suite(TestDb::postgres().await).await;
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

/// A presence update from `holder`, watching nothing.
fn from(holder: &str, status: Option<PresenceStatus>) -> PresenceUpdate {
    PresenceUpdate {
        status,
        holder: holder.to_owned(),
        watching: Vec::new(),
    }
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
        .post(sarah.id, team.id, "  hello team \n", None)
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
            chat.post(author, team.id, &format!("message {i}"), None)
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
        let err = ApiError::from(chat.post(sarah.id, team.id, bad, None).await.unwrap_err());
        assert_eq!(err.code, Code::InvalidArgument, "{bad:?}");
        assert!(err.message.contains(needle), "{}", err.message);
    }
    let longest = "y".repeat(4000);
    assert_eq!(
        chat.post(sarah.id, team.id, &longest, None)
            .await
            .unwrap()
            .text,
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
        chat.post(chen.id, team.id, "hi", None).await.unwrap_err(),
        chat.history(chen.id, team.id, None, 10).await.unwrap_err(),
        chat.presence(chen.id, team.id).await.unwrap_err(),
        chat.update_presence(chen.id, team.id, from("gw-a", Some(PresenceStatus::Online)))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(ApiError::from(err).code, Code::PermissionDenied);
    }
    let theirs = chat.history(chen.id, other.id, None, 10).await.unwrap();
    assert!(theirs.messages.is_empty());
    assert!(
        chat.post(UserId::new(), team.id, "ghost", None)
            .await
            .is_err()
    );

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
    let now = chat
        .update_presence(sarah.id, team.id, from("gw-a", None))
        .await
        .unwrap();
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
    chat.update_presence(
        sarah.id,
        team.id,
        from("gw-a", Some(PresenceStatus::Online)),
    )
    .await
    .unwrap();
    let now = chat
        .update_presence(miguel.id, team.id, from("gw-a", Some(PresenceStatus::Away)))
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
        .update_presence(miguel.id, team.id, from("gw-a", None))
        .await
        .unwrap();
    assert_eq!(now.status_of(miguel.id), Some(PresenceStatus::Away));
    let now = chat
        .update_presence(
            sarah.id,
            team.id,
            from("gw-a", Some(PresenceStatus::Offline)),
        )
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

    retried_messages_are_stored_once(&chat, &mut fanout, team.id, sarah.id, miguel.id).await;
    presence_is_per_device(
        &store,
        &hot,
        &chat,
        &mut fanout,
        team.id,
        sarah.id,
        miguel.id,
    )
    .await;
}

async fn next_message(fanout: &mut Subscription) -> covibe_proto::team::v1::ChatMessage {
    match next_event(fanout).await {
        ev::team_event::Event::ChatMessage(message) => message,
        other => panic!("expected a chat message, got {other:?}"),
    }
}

async fn next_presence(fanout: &mut Subscription) -> covibe_proto::team::v1::TeamPresence {
    match next_event(fanout).await {
        ev::team_event::Event::TeamPresence(presence) => presence,
        other => panic!("expected presence, got {other:?}"),
    }
}

/// A send retried with its client id (after a lost answer, or twice at once) is one message,
/// published once; client ids are per author.
async fn retried_messages_are_stored_once(
    chat: &Chat,
    fanout: &mut Subscription,
    team: covibe_types::TeamId,
    sarah: UserId,
    miguel: UserId,
) {
    let sent = chat
        .post(miguel, team, "on a train", Some("c-1"))
        .await
        .unwrap();
    assert_eq!(sent.client_id.as_deref(), Some("c-1"));
    let retried = chat
        .post(miguel, team, "on a train", Some("c-1"))
        .await
        .unwrap();
    assert_eq!(retried, sent, "the first one, same id and time");
    let (x, y) = tokio::join!(
        chat.post(sarah, team, "twice", Some("c-2")),
        chat.post(sarah, team, "twice", Some("c-2"))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y, "two copies at once: one message");
    let hers = chat.post(sarah, team, "mine", Some("c-1")).await.unwrap();
    assert_ne!(hers.id, sent.id, "another author's client id is theirs");
    for bad in ["", "a b", "ü", &"x".repeat(65)] {
        let err = ApiError::from(chat.post(sarah, team, "x", Some(bad)).await.unwrap_err());
        assert_eq!(err.code, Code::InvalidArgument, "{bad:?}");
        assert!(err.message.contains("clientId"), "{}", err.message);
    }
    for want in [&sent, &x, &hers] {
        let got = next_message(fanout).await;
        assert_eq!(got.id, want.id.to_string(), "each published once, in order");
        assert_eq!(got.client_id, want.client_id);
    }
    let page = chat.history(sarah, team, None, 3).await.unwrap();
    assert_eq!(page.messages, vec![sent, x, hers]);
}

/// Presence per holder (gateway replica): merged across a member's devices, with the agents
/// they watch; a holder that dies is noticed by the next call of anyone once its entries
/// expire.
async fn presence_is_per_device(
    store: &Arc<SeaTeamStore>,
    hot: &Arc<MemoryHotStore>,
    chat: &Chat,
    fanout: &mut Subscription,
    team: covibe_types::TeamId,
    sarah: UserId,
    miguel: UserId,
) {
    use covibe_proto::team::v1::PresenceStatus as Pb;
    let of = |p: &covibe_proto::team::v1::TeamPresence, user: UserId| {
        let u = p
            .users
            .iter()
            .find(|u| u.user_id == user.to_string())
            .unwrap();
        (Pb::try_from(u.status).unwrap(), u.watching.clone())
    };
    let agent = AgentId::new();
    let watching = |on: &[AgentId]| on.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut version = 0;
    let mut step = async |update: PresenceUpdate, want: (Pb, Vec<String>)| {
        let got = chat.update_presence(sarah, team, update).await.unwrap();
        let published = next_presence(fanout).await;
        assert_eq!(of(&published, sarah), want);
        assert_eq!(published.version, got.version);
        assert!(published.version > version, "versions only grow");
        version = published.version;
    };
    // Sarah's laptop on gateway A watches an agent; her phone on gateway B says busy.
    step(
        PresenceUpdate {
            watching: vec![agent],
            ..from("gw-a", None)
        },
        (Pb::Online, watching(&[agent])),
    )
    .await;
    step(
        from("gw-b", Some(PresenceStatus::Busy)),
        (Pb::Busy, watching(&[agent])),
    )
    .await;
    // The phone goes: the laptop keeps her online, still watching.
    step(
        from("gw-b", Some(PresenceStatus::Offline)),
        (Pb::Online, watching(&[agent])),
    )
    .await;
    // She closes the agent view: news too.
    step(from("gw-a", None), (Pb::Online, Vec::new())).await;
    // The laptop goes: offline.
    step(
        from("gw-a", Some(PresenceStatus::Offline)),
        (Pb::Offline, Vec::new()),
    )
    .await;

    // Gateway C dies holding her: its entry expires, and Miguel's next heartbeat (through
    // gateway A) is what finds it: the team is told she is offline.
    let dying = Chat::new(store.clone(), hot.clone()).with_presence_ttl(Duration::from_millis(1));
    dying
        .update_presence(sarah, team, from("gw-c", None))
        .await
        .unwrap();
    assert_eq!(of(&next_presence(fanout).await, sarah).0, Pb::Online);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let seen = chat
                .update_presence(miguel, team, from("gw-a", None))
                .await
                .unwrap();
            if seen.status_of(sarah) == Some(PresenceStatus::Offline) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the dead holder's entry expires");
    let told = next_presence(fanout).await;
    assert_eq!(of(&told, sarah).0, Pb::Offline);
    assert_eq!(of(&told, miguel).0, Pb::Away, "kept by his heartbeats");

    // A holder must be a plain name.
    let err = chat
        .update_presence(sarah, team, from("~seen", None))
        .await
        .err();
    assert!(err.is_some());
}

#[tokio::test]
async fn chat_and_presence_on_sqlite() {
    chat_suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn chat_and_presence_on_postgres() {
    chat_suite(TestDb::postgres().await).await;
}
