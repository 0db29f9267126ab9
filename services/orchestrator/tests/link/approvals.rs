//! Tool requests over the link: decided by the team's policy at once (nothing stored), or
//! stored, announced and answered by the agent's owner on any replica (a teammate refused and
//! audited, a second answer told it came late, a resend stored once), or denied by the timeout;
//! an "always" remembered for the agent, after the deny rules.

use std::sync::Mutex;

use covibe_orchestrator::{Answer, PermissionState, PolicySource, Reply, Rules};
use covibe_proto::orchestrator::v1 as orch;

use super::*;

/// The rules a test sets; `None`: the team service is unavailable.
struct FakePolicy(Mutex<Option<Rules>>);

impl FakePolicy {
    fn new(team_allow: &[&str], team_deny: &[&str], mine_deny: &[&str]) -> Arc<Self> {
        let owned = |list: &[&str]| list.iter().map(|r| (*r).to_owned()).collect();
        Arc::new(Self(Mutex::new(Some(Rules {
            team_allow: owned(team_allow),
            team_deny: owned(team_deny),
            mine_allow: Vec::new(),
            mine_deny: owned(mine_deny),
        }))))
    }

    fn unavailable(&self) {
        *self.0.lock().unwrap() = None;
    }
}

#[async_trait::async_trait]
impl PolicySource for FakePolicy {
    async fn rules(&self, _: TeamId, _: UserId) -> Result<Rules, String> {
        self.0
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| "team service unavailable".to_owned())
    }
}

/// A replica deciding by `policy`, its requests timing out after `timeout_ms`.
async fn approving_replica(
    db_url: &str,
    hot: Arc<MemoryHotStore>,
    policy: Arc<dyn PolicySource>,
    timeout_ms: i64,
) -> (Replica, covibe_storage::AuditLog) {
    let conn = covibe_storage::connect(db_url).await.unwrap();
    let store: Arc<dyn AgentStore> = Arc::new(SeaAgentStore::new(conn.clone()).await.unwrap());
    let audit = covibe_storage::AuditLog::new(conn).await.unwrap();
    let connector =
        VmConnectorServiceClient::new(covibe_bootstrap::channel("http://127.0.0.1:9").unwrap());
    let limits = Limits {
        kill_grace_ms: GRACE_MS,
        approval_timeout_ms: timeout_ms,
        ..Limits::default()
    };
    let agents = Arc::new(
        Agents::new(
            store.clone(),
            hot,
            connector,
            "http://127.0.0.1:9".to_owned(),
            limits,
            audit.clone(),
        )
        .with_policy(policy),
    );
    let link = LinkService::start(agents.clone()).await.unwrap();
    let server = GrpcServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .add_service(link.into_server());
    let url = server.url();
    tokio::spawn(server.serve(std::future::pending()));
    let client = AgentLinkClient::new(covibe_bootstrap::channel(&url).unwrap());
    let replica = Replica {
        agents,
        store,
        client,
    };
    (replica, audit)
}

fn ask(id: &str, tool: &str, input: &serde_json::Value) -> AgentFrame {
    ask_in(id, tool, input, "")
}

/// A tool request from an agent working in `project_dir`.
fn ask_in(id: &str, tool: &str, input: &serde_json::Value, project_dir: &str) -> AgentFrame {
    AgentFrame {
        frame: Some(Frame::Permission(PermissionRequest {
            request_id: id.to_owned(),
            tool: tool.to_owned(),
            input_json: input.to_string(),
            tool_use_id: format!("toolu_{id}"),
            suggestions_json: String::new(),
            project_dir: project_dir.to_owned(),
        })),
    }
}

fn bash(id: &str, command: &str) -> AgentFrame {
    ask(id, "Bash", &serde_json::json!({ "command": command }))
}

fn answered(command: Command) -> PermissionAnswer {
    match command.command {
        Some(command::Command::PermissionAnswer(answer)) => answer,
        other => panic!("expected a permission answer, got {other:?}"),
    }
}

fn allowed(id: &str) -> PermissionAnswer {
    PermissionAnswer {
        request_id: id.to_owned(),
        allow: true,
        updated_input_json: String::new(),
        message: String::new(),
    }
}

fn denied(id: &str, message: &str) -> PermissionAnswer {
    PermissionAnswer {
        request_id: id.to_owned(),
        allow: false,
        updated_input_json: String::new(),
        message: message.to_owned(),
    }
}

/// The owner's deny, with their words.
fn deny(message: &str) -> Reply {
    Reply {
        message: message.to_owned(),
        ..Reply::plain(Answer::Deny)
    }
}

/// The owner's allow, running the tool with `input` instead.
fn allow_with(input: &serde_json::Value) -> Reply {
    Reply {
        updated_input_json: input.to_string(),
        ..Reply::plain(Answer::Allow)
    }
}

/// The agent's `agent.permission` audit records, oldest first: `(actor, result, detail)`.
async fn decisions(audit: &covibe_storage::AuditLog) -> Vec<(String, String, String)> {
    let mut records: Vec<_> = audit
        .for_vm("local", None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.record.action == "agent.permission")
        .map(|e| {
            (
                e.record.actor_id,
                e.record.result,
                e.record.detail.unwrap_or_default(),
            )
        })
        .collect();
    records.reverse();
    records
}

/// The next tool-request event on the team fan-out (statuses collected on the way).
enum Told {
    Asked(orch::PermissionRequest),
    Resolved(covibe_proto::events::v1::AgentPermissionResolved),
    Status(AgentStatus),
}

async fn told(events: &mut Subscription, agent: AgentId) -> Told {
    loop {
        let FanoutEvent::Message(bytes) = guard("fan-out", events.recv()).await.unwrap() else {
            panic!("fan-out gap");
        };
        match TeamEvent::decode(bytes).unwrap().event.unwrap() {
            team_event::Event::AgentPermission(p) if p.agent_id == agent.to_string() => {
                return Told::Asked(p);
            }
            team_event::Event::AgentPermissionResolved(r) if r.agent_id == agent.to_string() => {
                return Told::Resolved(r);
            }
            team_event::Event::AgentStatus(s) if s.agent_id == agent.to_string() => {
                let status = PbStatus::try_from(s.status)
                    .ok()
                    .and_then(AgentStatus::from_proto)
                    .unwrap();
                return Told::Status(status);
            }
            _ => {}
        }
    }
}

/// A path rule is read from the directory the agent works in, which its vm-agent sends.
#[tokio::test]
async fn path_rules_are_read_from_the_agents_project_dir() {
    let db = TestDb::sqlite();
    let policy = FakePolicy::new(&["Edit(src/**)"], &[], &[]);
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let (r, _audit) = approving_replica(&db.url, hot, policy.clone(), 60_000).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (mut link, _) = attach(&r.client, a.id, &token).await;
    let edit =
        |path: &str| serde_json::json!({"file_path": path, "old_string": "a", "new_string": "b"});

    // Claude Code names files by their absolute path: inside the project's src/, allowed.
    link.send([ask_in(
        "1",
        "Edit",
        &edit("/work/app/src/main.rs"),
        "/work/app",
    )])
    .await;
    assert_eq!(answered(link.command().await), allowed("1"));
    // Outside it (or climbing out of it), the owner is asked.
    for (id, path) in [
        ("2", "/work/other/src/main.rs"),
        ("3", "/work/app/src/../.env"),
    ] {
        link.send([ask_in(id, "Edit", &edit(path), "/work/app")])
            .await;
        guard("stored for the owner", async {
            while r.store.permission(a.id, id).await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// A question is answered by the owner's allow carrying the chosen option as changed input: the
/// vm-agent gets exactly that input, and gets it again when it asks again after a reconnect. A
/// changed input the rules deny is refused and the request still waits, so an allow can never
/// carry a denied command past the policy.
#[tokio::test]
async fn an_answered_question_reaches_the_agent_and_changed_input_obeys_the_policy() {
    let db = TestDb::sqlite();
    let policy = FakePolicy::new(&[], &["Bash(rm:*)"], &[]);
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let (r, audit) = approving_replica(&db.url, hot, policy, 60_000).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (mut link, _) = attach(&r.client, a.id, &token).await;
    let stored = |id: &'static str| {
        let store = r.store.clone();
        async move {
            guard("stored for the owner", async {
                loop {
                    if let Some(p) = store.permission(a.id, id).await.unwrap() {
                        return p;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
        }
    };

    let question = serde_json::json!({"questions": [{
        "question": "Which greeting?", "header": "Greeting", "multiSelect": false,
        "options": [{"label": "Hello", "description": ""}, {"label": "Hi", "description": ""}],
    }]});
    link.send([ask("q", "AskUserQuestion", &question)]).await;
    assert_eq!(stored("q").await.summary, "Which greeting?");
    let mut answer = question.clone();
    answer["answers"] = serde_json::json!({"Which greeting?": "Hi"});
    let decided = r
        .agents
        .answer_permission(owner, team, a.id, "q", &allow_with(&answer))
        .await
        .unwrap();
    assert_eq!(decided.state, PermissionState::Allowed);
    let told = answered(link.command().await);
    assert!(told.allow);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&told.updated_input_json).unwrap(),
        answer
    );
    // Asked again after a reconnect: the same answer, with the same chosen option.
    drop(link);
    let (mut link, _) = attach(&r.client, a.id, &token).await;
    link.send([ask("q", "AskUserQuestion", &question)]).await;
    assert_eq!(answered(link.command().await), told);

    // A command the team denies cannot ride on the owner's allow of another one.
    link.send([bash("b", "ls")]).await;
    stored("b").await;
    let err = ApiError::from(
        r.agents
            .answer_permission(
                owner,
                team,
                a.id,
                "b",
                &allow_with(&serde_json::json!({"command": "rm -rf /"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, Code::PermissionDenied);
    assert_eq!(
        err.message,
        "the changed input is denied by the team's policy: Bash(rm:*)"
    );
    assert_eq!(stored("b").await.state, PermissionState::Pending);
    // An input the rules leave open is the owner's to give.
    let changed = serde_json::json!({"command": "ls -la"});
    r.agents
        .answer_permission(owner, team, a.id, "b", &allow_with(&changed))
        .await
        .unwrap();
    let told = answered(link.command().await);
    assert_eq!(
        (
            told.request_id.as_str(),
            told.allow,
            told.updated_input_json.as_str()
        ),
        ("b", true, changed.to_string().as_str())
    );
    let records = decisions(&audit).await;
    assert_eq!(
        records
            .last()
            .map(|(_, result, detail)| (result.as_str(), detail.as_str())),
        Some((
            "allowed",
            "Bash: allowed by its owner, with the input changed (request b)"
        ))
    );
}

/// The policy allows and denies at once, nothing stored, each decision audited naming its
/// rule; what it leaves open (or cannot be read) is asked, never allowed.
#[tokio::test]
async fn the_policy_decides_without_asking() {
    let db = TestDb::sqlite();
    let policy = FakePolicy::new(&["Bash(git status:*)"], &["Bash(rm:*)"], &["Bash(curl:*)"]);
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let (r, audit) = approving_replica(&db.url, hot, policy.clone(), 60_000).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (mut link, _) = attach(&r.client, a.id, &token).await;

    link.send([bash("1", "git status --short")]).await;
    assert_eq!(answered(link.command().await), allowed("1"));
    link.send([bash("2", "git status && rm -rf /")]).await;
    assert_eq!(
        answered(link.command().await),
        denied("2", "denied by the team's policy: Bash(rm:*)")
    );
    link.send([bash("3", "curl example.com")]).await;
    assert_eq!(
        answered(link.command().await),
        denied("3", "denied by the owner's own policy: Bash(curl:*)")
    );
    for id in ["1", "2", "3"] {
        assert_eq!(r.store.permission(a.id, id).await.unwrap(), None);
    }
    assert_eq!(
        decisions(&audit).await,
        vec![
            (
                "policy".to_owned(),
                "allowed".to_owned(),
                "Bash: allowed by the team's policy: Bash(git status:*) (request 1)".to_owned()
            ),
            (
                "policy".to_owned(),
                "denied".to_owned(),
                "Bash: denied by the team's policy: Bash(rm:*) (request 2)".to_owned()
            ),
            (
                "policy".to_owned(),
                "denied".to_owned(),
                "Bash: denied by the owner's own policy: Bash(curl:*) (request 3)".to_owned()
            ),
        ]
    );

    // Undecided, or the policy unreadable: stored for the owner, no answer yet.
    link.send([bash("4", "cargo test")]).await;
    policy.unavailable();
    link.send([bash("5", "git status")]).await;
    link.send([output(0)]).await;
    link.acks_upto(1).await;
    for id in ["4", "5"] {
        let waiting = guard("stored", async {
            loop {
                if let Some(p) = r.store.permission(a.id, id).await.unwrap() {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(waiting.state, PermissionState::Pending);
    }
    assert_eq!(
        status_of(r.store.as_ref(), a.id).await.status,
        AgentStatus::WaitingForApproval
    );
}

/// Asked, stored once, announced; the owner's allow on another replica reaches the vm-agent;
/// a teammate is refused (and audited), a second answer is told it came late, the agent runs
/// again.
async fn the_owner_answers(db: TestDb) {
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let mut events = hot.subscribe().await.unwrap();
    let policy = FakePolicy::new(&["Bash(git status:*)"], &[], &[]);
    let (ra, audit) = approving_replica(&db.url, hot.clone(), policy.clone(), 60_000).await;
    let (rb, _) = approving_replica(&db.url, hot, policy, 60_000).await;
    let (team, owner, teammate) = (TeamId::new(), UserId::new(), UserId::new());
    let (a, token) = new_agent(ra.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (link, _) = attach(&ra.client, a.id, &token).await;

    let edit =
        serde_json::json!({"file_path": "src/main.rs", "old_string": "a", "new_string": "b\nc"});
    link.send([ask("req-1", "Edit", &edit)]).await;
    let Told::Asked(asked) = told(&mut events, a.id).await else {
        panic!("expected the request first");
    };
    assert_eq!(
        (
            asked.request_id.as_str(),
            asked.tool.as_str(),
            asked.summary.as_str()
        ),
        ("req-1", "Edit", "src/main.rs (-1 +2 lines)")
    );
    assert_eq!(asked.owner_id, owner.to_string());
    assert_eq!(asked.tool_use_id, "toolu_req-1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&asked.input_json).unwrap(),
        edit
    );
    assert!(matches!(
        told(&mut events, a.id).await,
        Told::Status(AgentStatus::WaitingForApproval)
    ));

    // Sent again (on this link, then after a reconnect): stored once, no second card.
    link.send([ask("req-1", "Edit", &edit)]).await;
    drop(link);
    let (mut link, _) = attach(&ra.client, a.id, &token).await;
    link.send([ask("req-1", "Edit", &edit)]).await;
    link.send([output(0)]).await;
    link.acks_upto(1).await;
    let pending = rb.agents.pending_permissions(team).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].request_id, "req-1");
    assert!(
        rb.agents
            .pending_permissions(TeamId::new())
            .await
            .unwrap()
            .is_empty()
    );

    // A teammate may not answer; another team does not see the agent at all.
    let err = rb
        .agents
        .answer_permission(teammate, team, a.id, "req-1", &Reply::plain(Answer::Allow))
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(err).code, Code::PermissionDenied);
    let err = rb
        .agents
        .answer_permission(
            owner,
            TeamId::new(),
            a.id,
            "req-1",
            &Reply::plain(Answer::Allow),
        )
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(err).code, Code::NotFound);
    let err = rb
        .agents
        .answer_permission(owner, team, a.id, "nope", &Reply::plain(Answer::Allow))
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(err).code, Code::NotFound);

    // The owner allows, on the other replica: the vm-agent hears it on this one.
    let decided = rb
        .agents
        .answer_permission(owner, team, a.id, "req-1", &Reply::plain(Answer::Allow))
        .await
        .unwrap();
    assert_eq!(decided.state, PermissionState::Allowed);
    assert_eq!(decided.decided_by, Some(owner.to_string()));
    assert_eq!(answered(link.command().await), allowed("req-1"));
    let Told::Resolved(resolved) = told(&mut events, a.id).await else {
        panic!("expected the resolution");
    };
    assert_eq!(
        (resolved.request_id.as_str(), resolved.decided_by.as_str()),
        ("req-1", owner.to_string().as_str())
    );
    assert_eq!(resolved.state, orch::PermissionState::Allowed as i32);
    assert!(matches!(
        told(&mut events, a.id).await,
        Told::Status(AgentStatus::Running)
    ));
    assert!(
        rb.agents
            .pending_permissions(team)
            .await
            .unwrap()
            .is_empty()
    );

    // A second answer came late; the request asked again gets the same answer.
    let err = ApiError::from(
        ra.agents
            .answer_permission(owner, team, a.id, "req-1", &deny("no"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, Code::Conflict);
    assert_eq!(
        err.message,
        "this request was already answered: allowed by the agent's owner"
    );
    link.send([ask("req-1", "Edit", &edit)]).await;
    assert_eq!(answered(link.command().await), allowed("req-1"));

    // A deny with the owner's words.
    link.send([bash("req-2", "make deploy")]).await;
    assert!(matches!(told(&mut events, a.id).await, Told::Asked(_)));
    rb.agents
        .answer_permission(owner, team, a.id, "req-2", &deny("not today"))
        .await
        .unwrap();
    assert_eq!(answered(link.command().await), denied("req-2", "not today"));

    let records = decisions(&audit).await;
    let teammate_id = teammate.to_string();
    let owner_id = owner.to_string();
    assert_eq!(
        records
            .iter()
            .map(|(actor, result, detail)| (actor.as_str(), result.as_str(), detail.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (
                teammate_id.as_str(),
                "refused",
                "an answer to request req-1 refused: not the agent's owner"
            ),
            (
                owner_id.as_str(),
                "allowed",
                "Edit: allowed by its owner (request req-1)"
            ),
            (
                owner_id.as_str(),
                "denied",
                "Bash: denied by its owner (request req-2)"
            ),
        ]
    );
    assert!(
        records
            .iter()
            .all(|(_, _, detail)| !detail.contains("src/main.rs"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_answers_on_sqlite() {
    the_owner_answers(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_answers_on_postgres() {
    the_owner_answers(TestDb::postgres().await).await;
}

/// "Always for this agent" allows the tool's later uses without asking (the deny rules still
/// first, other tools still asked); an unanswered request is denied by the timeout and the
/// agent runs on; a request of an agent that ended is closed without an answer.
#[tokio::test]
async fn always_and_the_timeout() {
    let db = TestDb::sqlite();
    let hot = Arc::new(MemoryHotStore::new(1_000));
    let mut events = hot.subscribe().await.unwrap();
    let policy = FakePolicy::new(&[], &["Bash(rm:*)"], &[]);
    // Requests expire at once: only the sweep, called here, denies them.
    let (r, audit) = approving_replica(&db.url, hot, policy, 1).await;
    let (team, owner) = (TeamId::new(), UserId::new());
    let (a, token) = new_agent(r.store.as_ref(), team, owner, AgentStatus::Running).await;
    let (mut link, _) = attach(&r.client, a.id, &token).await;

    link.send([bash("1", "cargo build")]).await;
    assert!(matches!(told(&mut events, a.id).await, Told::Asked(_)));
    let decided = r
        .agents
        .answer_permission(owner, team, a.id, "1", &Reply::plain(Answer::AllowAlways))
        .await
        .unwrap();
    assert_eq!(decided.state, PermissionState::Allowed);
    assert_eq!(answered(link.command().await), allowed("1"));
    link.send([bash("2", "cargo test --all")]).await;
    assert_eq!(answered(link.command().await), allowed("2"));
    assert_eq!(r.store.permission(a.id, "2").await.unwrap(), None);
    link.send([bash("3", "rm -rf target")]).await;
    assert_eq!(
        answered(link.command().await),
        denied("3", "denied by the team's policy: Bash(rm:*)")
    );

    // Another tool is still asked; nobody answers: the sweep denies it.
    link.send([ask(
        "4",
        "Write",
        &serde_json::json!({"file_path": "a", "content": "x"}),
    )])
    .await;
    while !matches!(told(&mut events, a.id).await, Told::Asked(_)) {}
    assert_eq!(r.agents.expire_permissions().await.unwrap(), 1);
    assert_eq!(
        answered(link.command().await),
        denied("4", "no answer within 1 second")
    );
    let stored = r.store.permission(a.id, "4").await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.decided_by.as_deref()),
        (PermissionState::TimedOut, Some("timeout"))
    );
    assert_eq!(
        r.agents.expire_permissions().await.unwrap(),
        0,
        "decided once"
    );
    assert_eq!(
        status_of(r.store.as_ref(), a.id).await.status,
        AgentStatus::Running
    );
    let err = ApiError::from(
        r.agents
            .answer_permission(owner, team, a.id, "4", &Reply::plain(Answer::Allow))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "this request was already answered: denied by the timeout"
    );

    // The agent ends with a request open: closed as `ended`, nothing sent.
    let fetch = serde_json::json!({"url": "https://example.com", "prompt": "read"});
    link.send([ask("5", "WebFetch", &fetch)]).await;
    while !matches!(told(&mut events, a.id).await, Told::Asked(_)) {}
    r.agents
        .transition(a.id, AgentStatus::Killed, None)
        .await
        .unwrap();
    assert_eq!(r.agents.expire_permissions().await.unwrap(), 1);
    let stored = r.store.permission(a.id, "5").await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.decided_by.as_deref()),
        (PermissionState::Denied, Some("ended"))
    );

    let results: Vec<(String, String)> = decisions(&audit)
        .await
        .into_iter()
        .map(|(actor, result, _)| (actor, result))
        .collect();
    let owner_id = owner.to_string();
    let expect = |actor: &str, result: &str| (actor.to_owned(), result.to_owned());
    assert_eq!(
        results,
        vec![
            expect(&owner_id, "allowed"),
            expect(&owner_id, "allowed"),
            expect("policy", "denied"),
            expect("timeout", "denied"),
            expect("ended", "denied"),
        ]
    );
}
