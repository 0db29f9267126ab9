//! The tool-use policy: every member reads it, owners and admins write the team's, each member
//! their own; bad rules are refused by name; the orchestrator reads a member's with its service
//! token. On SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use covibe_identity::{KeyFiles, Signer};
use covibe_proto::events::v1 as ev;
use covibe_proto::team::v1 as pb;
use covibe_proto::team::v1::team_service_server::TeamService;
use covibe_proto::tonic::{Code as GrpcCode, Request};
use covibe_storage::{HotStore, MemoryHotStore};
use covibe_team::{
    Chat, Member, Policies, PolicyRules, PolicyScope, PolicyView, Role, SeaTeamStore, TeamDomain,
    TeamGrpc,
};
use covibe_testkit::TestDb;
use covibe_types::{ApiError, Code, SessionId};

use super::{api, next_event};

fn strings(rules: &[&str]) -> Vec<String> {
    rules.iter().map(|r| (*r).to_owned()).collect()
}

fn rules(allow: &[&str], deny: &[&str]) -> PolicyRules {
    PolicyRules {
        allow: strings(allow),
        deny: strings(deny),
    }
}

/// A request carrying `token` as a bearer token.
fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn member_token(signer: &Signer, member: &Member) -> String {
    signer
        .access_token(
            member.id,
            member.team_id,
            SessionId::new(),
            Duration::from_secs(600),
        )
        .unwrap()
        .0
}

async fn policy_suite(db: TestDb) {
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = Arc::new(SeaTeamStore::new(conn).await.unwrap());
    let teams = Arc::new(TeamDomain::new(store.clone(), 3600, 10));
    let hot = Arc::new(MemoryHotStore::new(16));
    let policies = Policies::new(store.clone(), hot.clone());
    let mut fanout = hot.subscribe().await.unwrap();

    let (team, sarah, code) = teams
        .create_team("Rocket", "sarah@example.com", "Sarah")
        .await
        .unwrap();
    let (_, ada) = teams.redeem(&code, "ada@example.com", "Ada").await.unwrap();
    teams
        .set_role(sarah.id, team.id, ada.id, Role::Admin)
        .await
        .unwrap();
    let (_, miguel) = teams
        .redeem(&code, "miguel@example.com", "Miguel")
        .await
        .unwrap();
    let (other, stranger, _) = teams
        .create_team("Other", "sam@example.com", "Sam")
        .await
        .unwrap();

    // Before anything is set: empty lists; only owners and admins may edit the team's.
    let empty = policies.get(miguel.id, team.id).await.unwrap();
    assert_eq!(empty, PolicyView::default());
    assert!(policies.get(ada.id, team.id).await.unwrap().can_edit_team);

    // The owner sets the team's rules: stored as the policy reads them, published to the team.
    let set = policies
        .put(
            sarah.id,
            team.id,
            PolicyScope::Team,
            &strings(&["Bash(git diff:*)", "  Read  ", "Edit(src/**)"]),
            &strings(&["Read(.env)"]),
            None,
        )
        .await
        .unwrap();
    let owners = rules(
        &["Bash(git diff:*)", "Read", "Edit(src/**)"],
        &["Read(.env)"],
    );
    assert_eq!(set.team.rules, owners);
    assert_eq!(set.team.updated_by, Some(sarah.id));
    assert!(set.team.updated_at_ms > 0 && set.can_edit_team);
    let ev::team_event::Event::PolicyUpdated(published) = next_event(&mut fanout).await else {
        panic!("expected policy_updated");
    };
    assert_eq!(published.updated_by, sarah.id.to_string());
    assert_eq!(published.updated_at_ms, set.team.updated_at_ms);

    // Every member reads it; a plain member may not edit it.
    let read = policies.get(miguel.id, team.id).await.unwrap();
    assert_eq!(read.team, set.team);
    assert!(!read.can_edit_team);
    assert!(read.mine.allow.is_empty() && read.mine.deny.is_empty());

    // An admin writes it too.
    let by_ada = policies
        .put(
            ada.id,
            team.id,
            PolicyScope::Team,
            &strings(&["Bash(git diff:*)", "WebFetch(domain:github.com)"]),
            &strings(&["Read(.env)", "Bash(rm:*)"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(by_ada.team.updated_by, Some(ada.id));
    let ev::team_event::Event::PolicyUpdated(published) = next_event(&mut fanout).await else {
        panic!("expected policy_updated");
    };
    assert_eq!(published.updated_by, ada.id.to_string());

    // Two admins editing at once: the save made from rules read before the other's is refused
    // and changes nothing; one made from what is there now goes through.
    let stale = api(policies
        .put(
            sarah.id,
            team.id,
            PolicyScope::Team,
            &strings(&["Bash"]),
            &[],
            Some(set.team.updated_at_ms),
        )
        .await
        .unwrap_err());
    assert_eq!(stale.code, Code::Conflict, "{stale:?}");
    assert!(
        stale.message.contains("changed by someone else"),
        "{stale:?}"
    );
    assert_eq!(
        policies.get(sarah.id, team.id).await.unwrap().team,
        by_ada.team
    );
    let fresh = policies
        .put(
            ada.id,
            team.id,
            PolicyScope::Team,
            &by_ada.team.rules.allow,
            &by_ada.team.rules.deny,
            Some(by_ada.team.updated_at_ms),
        )
        .await
        .unwrap();
    assert!(fresh.team.updated_at_ms > by_ada.team.updated_at_ms);
    let ev::team_event::Event::PolicyUpdated(_) = next_event(&mut fanout).await else {
        panic!("expected policy_updated");
    };
    // Rules never set are read as 0: a second "first" save of another team is refused.
    let first = policies
        .put(
            stranger.id,
            other.id,
            PolicyScope::Team,
            &[],
            &strings(&["Bash(rm:*)"]),
            Some(0),
        )
        .await
        .unwrap();
    let second = api(policies
        .put(stranger.id, other.id, PolicyScope::Team, &[], &[], Some(0))
        .await
        .unwrap_err());
    assert_eq!(second.code, Code::Conflict, "{second:?}");
    let ev::team_event::Event::PolicyUpdated(_) = next_event(&mut fanout).await else {
        panic!("expected policy_updated");
    };
    let by_ada = fresh;

    // A plain member's write of the team's rules is refused and changes nothing; so is a
    // stranger's, and a stranger reads nothing of this team's.
    let refused = api(policies
        .put(
            miguel.id,
            team.id,
            PolicyScope::Team,
            &strings(&["Bash"]),
            &[],
            None,
        )
        .await
        .unwrap_err());
    assert_eq!(refused.code, Code::PermissionDenied, "{refused:?}");
    for err in [
        api(policies
            .put(stranger.id, team.id, PolicyScope::Team, &[], &[], None)
            .await
            .unwrap_err()),
        api(policies
            .put(stranger.id, team.id, PolicyScope::Mine, &[], &[], None)
            .await
            .unwrap_err()),
        api(policies.get(stranger.id, team.id).await.unwrap_err()),
    ] {
        assert_eq!(err.code, Code::PermissionDenied, "{err:?}");
    }
    assert_eq!(
        policies.get(sarah.id, team.id).await.unwrap().team,
        by_ada.team
    );
    let theirs = policies.get(stranger.id, other.id).await.unwrap();
    assert_eq!(theirs.team, first.team);

    // A member writes their own rules: theirs alone, the team's untouched.
    let mine = policies
        .put(
            miguel.id,
            team.id,
            PolicyScope::Mine,
            &strings(&["Bash(git diff:*)"]),
            &strings(&["Edit(secrets/**)"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        mine.mine,
        rules(&["Bash(git diff:*)"], &["Edit(secrets/**)"])
    );
    assert_eq!(mine.team, by_ada.team);
    assert_eq!(
        policies.get(sarah.id, team.id).await.unwrap().mine,
        PolicyRules::default()
    );

    // A bad rule is refused with its list and position, in the policy crate's words, and
    // nothing is stored.
    let invalid = api(policies
        .put(
            sarah.id,
            team.id,
            PolicyScope::Team,
            &strings(&["Read"]),
            &strings(&["Read(.env)", "Bash(git diff"]),
            None,
        )
        .await
        .unwrap_err());
    assert_eq!(invalid.code, Code::InvalidArgument);
    assert_eq!(invalid.message, "deny rule 2: missing `)` at the end");
    let invalid = api(policies
        .put(
            miguel.id,
            team.id,
            PolicyScope::Mine,
            &strings(&["Bash(git *)"]),
            &[],
            None,
        )
        .await
        .unwrap_err());
    assert_eq!(invalid.code, Code::InvalidArgument);
    assert!(
        invalid.message.starts_with("allow rule 1: "),
        "{}",
        invalid.message
    );
    let now = policies.get(miguel.id, team.id).await.unwrap();
    assert_eq!(
        (now.team, now.mine),
        (by_ada.team.clone(), mine.mine.clone())
    );

    // The orchestrator's read for an agent: the team's rules and that member's own; a member
    // of another team is not found.
    let agent = policies.for_agent(team.id, miguel.id).await.unwrap();
    assert_eq!((agent.team, agent.mine), (by_ada.team.clone(), mine.mine));
    let err = api(policies.for_agent(other.id, miguel.id).await.unwrap_err());
    assert_eq!(err.code, Code::NotFound);

    // Over gRPC: GetAgentPolicy answers the orchestrator's service token, never a member's
    // nor another service's; GetPolicy and PutPolicy take a member's.
    let keys = tempfile::tempdir().unwrap();
    let (signer, verifier) = covibe_identity::load_or_generate(&KeyFiles {
        signing: keys.path().join("k.pem"),
        verifying: keys.path().join("k.pub.pem"),
    })
    .unwrap();
    let chat = Arc::new(Chat::new(store.clone(), hot.clone()));
    let grpc = TeamGrpc::new(teams.clone(), chat, verifier);
    let ask = || pb::GetAgentPolicyRequest {
        team_id: team.id.to_string(),
        user_id: miguel.id.to_string(),
    };
    for token in [
        member_token(&signer, &sarah),
        member_token(&signer, &miguel),
        signer
            .service_token("auth", Duration::from_secs(60))
            .unwrap(),
    ] {
        let status = grpc
            .get_agent_policy(with_token(ask(), &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), GrpcCode::PermissionDenied, "{status:?}");
    }
    let status = grpc
        .get_agent_policy(Request::new(ask()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), GrpcCode::Unauthenticated);
    let orchestrator = signer
        .service_token("orchestrator", Duration::from_secs(60))
        .unwrap();
    let answer = grpc
        .get_agent_policy(with_token(ask(), &orchestrator))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.team.unwrap().deny, by_ada.team.rules.deny);
    assert_eq!(answer.mine.unwrap().deny, ["Edit(secrets/**)"]);
    assert!(!answer.can_edit_team);
    assert_eq!(answer.team_updated_by, ada.id.to_string());
    let status = grpc
        .get_agent_policy(with_token(
            pb::GetAgentPolicyRequest {
                team_id: other.id.to_string(),
                user_id: miguel.id.to_string(),
            },
            &orchestrator,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), GrpcCode::NotFound);

    let put = |scope: pb::PolicyScope, deny: &[&str]| pb::PutPolicyRequest {
        scope: scope as i32,
        rules: Some(pb::PolicyRules {
            allow: Vec::new(),
            deny: strings(deny),
        }),
        if_updated_at_ms: None,
    };
    let miguels = member_token(&signer, &miguel);
    let status = grpc
        .put_policy(with_token(put(pb::PolicyScope::Team, &["Bash"]), &miguels))
        .await
        .unwrap_err();
    assert_eq!(status.code(), GrpcCode::PermissionDenied);
    let status = grpc
        .put_policy(with_token(
            put(pb::PolicyScope::Unspecified, &["Bash"]),
            &miguels,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), GrpcCode::InvalidArgument);
    let status = grpc
        .put_policy(with_token(
            put(pb::PolicyScope::Team, &["Read", "Bash(x"]),
            &member_token(&signer, &ada),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), GrpcCode::InvalidArgument);
    assert_eq!(status.message(), "deny rule 2: missing `)` at the end");
    let answer = grpc
        .put_policy(with_token(put(pb::PolicyScope::Mine, &["Bash"]), &miguels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.mine.unwrap().deny, ["Bash"]);
    let answer = grpc
        .get_policy(with_token(pb::GetPolicyRequest {}, &miguels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.team.unwrap().allow, by_ada.team.rules.allow);
    assert_eq!(answer.team_updated_at_ms, by_ada.team.updated_at_ms);
}

#[tokio::test]
async fn policy_on_sqlite() {
    policy_suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn policy_on_postgres() {
    policy_suite(TestDb::postgres().await).await;
}

/// A rule is checked as the policy crate reads it, and kept as it writes it back.
#[test]
fn rules_are_checked_and_kept_as_written_back() {
    let kept =
        covibe_team::check_rules(&[" Bash(npm run test) "], &["WebFetch(domain:x.io)"]).unwrap();
    assert_eq!(kept.allow, ["Bash(npm run test)"]);
    let err: ApiError = covibe_team::check_rules(&["Nope("], &[]).unwrap_err();
    assert!(err.message.starts_with("allow rule 1: "), "{}", err.message);
}
