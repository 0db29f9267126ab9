//! The permission model, as one table: every REST route, every Socket.io event and every gRPC
//! method of the services (called on each service's own port), tried by six callers. The
//! model: team, read all and write chat; agent, read all and control your own; VM, your own
//! only; invites and removal, owners and admins; roles and ownership, the owner; nothing
//! crosses teams. A route, event or method without a row fails the test, and so does a row
//! that names nothing the stack has.

use std::collections::BTreeSet;

use covibe_bootstrap::bearer;
use covibe_proto::auth::v1 as auth_pb;
use covibe_proto::auth::v1::auth_service_client::AuthServiceClient;
use covibe_proto::common::v1 as common;
use covibe_proto::orchestrator::v1 as orch_pb;
use covibe_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use covibe_proto::preview::v1 as preview_pb;
use covibe_proto::preview::v1::preview_service_client::PreviewServiceClient;
use covibe_proto::prost::Message;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::{Request, Status};
use covibe_proto::vmagent::v1 as link_pb;
use covibe_proto::vmagent::v1::agent_link_client::AgentLinkClient;
use covibe_proto::vmconnector::v1 as vmc_pb;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_testkit::{SioClient, TestDb};
use serde_json::{Value, json};

use crate::identity::{Signed, join_team, new_team, second_device};
use crate::support::{Stack, get, join, post, roomy_mesh, wait_for_status};

/// What a caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum E {
    /// Done (for a caller of another team: on their own team, and nothing of this one shows).
    A,
    /// Refused: `unauthenticated` without a token, else `permission_denied` or `not_found`.
    D,
    /// Not a member's call at all (a signature or a secret of its own decides): every caller
    /// gets the same answer, whatever token they bring.
    S,
}
use E::{A, D, S};

/// A well-formed private key no server accepts: these tests never reach a VM.
const DUMMY_KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAnotarealkey\n-----END OPENSSH PRIVATE KEY-----\n";

/// The callers, in the order of every row.
const WHO: [&str; 6] = [
    "no token",
    "another team's owner",
    "a member",
    "an admin",
    "the owner",
    "the resource's own member",
];
/// Their emails (none for "no token").
const EMAILS: [&str; 6] = [
    "",
    "sam@example.com",
    "max@example.com",
    "ada@example.com",
    "olivia@example.com",
    "rita@example.com",
];
/// A rule only the team under test has in its tool-use policy.
const SECRET_RULE: &str = "Bash(alpha-only-deploy:*)";
const NONE: usize = 0;
const STRANGER: usize = 1;
const OWN: usize = 5;

/// The table. Rows run in this order (ending every session comes last).
const MATRIX: &[(&str, [E; 6])] = &[
    // REST
    ("POST /api/team/create", [A, A, A, A, A, A]),
    ("POST /api/team/invite", [D, A, D, A, A, D]),
    ("GET /api/team/invites", [D, A, D, A, A, D]),
    ("DELETE /api/team/invite/{id}", [D, D, D, A, A, D]),
    ("GET /api/team", [D, A, A, A, A, A]),
    ("DELETE /api/team/members/{id}", [D, D, D, A, A, D]),
    ("PUT /api/team/members/{id}/role", [D, D, D, D, A, D]),
    (
        "POST /api/team/members/{id}/recovery-code",
        [D, D, D, A, A, D],
    ),
    ("POST /api/team/transfer-ownership", [D, D, D, D, A, D]),
    // The tool-use policy: read by all, the team's written by owners and admins, each
    // member's own by themselves (another team's owner: on their own team).
    ("GET /api/team/policy", [D, A, A, A, A, A]),
    ("PUT /api/team/policy", [D, A, D, A, A, D]),
    ("PUT /api/team/policy/mine", [D, A, A, A, A, A]),
    ("GET /api/team/presence", [D, A, A, A, A, A]),
    ("POST /api/auth/login", [A, A, A, A, A, A]),
    ("POST /api/auth/refresh", [A, A, A, A, A, A]),
    ("GET /api/auth/me", [D, A, A, A, A, A]),
    ("POST /api/auth/device", [D, A, A, A, A, A]),
    ("POST /api/auth/device/redeem", [A, A, A, A, A, A]),
    ("GET /api/auth/sessions", [D, A, A, A, A, A]),
    ("DELETE /api/auth/sessions/{id}", [D, D, D, D, D, A]),
    ("POST /api/auth/logout", [D, A, A, A, A, A]),
    ("POST /api/agent/spawn", [D, A, A, A, A, A]),
    ("GET /api/agent/list", [D, A, A, A, A, A]),
    ("GET /api/agent/{id}", [D, D, A, A, A, A]),
    ("DELETE /api/agent/{id}", [D, D, D, D, D, A]),
    // Tool requests: every member sees that an agent waits; only its owner answers.
    ("GET /api/agent/permissions", [D, A, A, A, A, A]),
    (
        "POST /api/agent/{id}/permissions/{requestId}",
        [D, D, D, D, D, A],
    ),
    ("GET /api/agent/{id}/output", [D, D, A, A, A, A]),
    ("POST /api/chat/message", [D, A, A, A, A, A]),
    ("GET /api/chat/history", [D, A, A, A, A, A]),
    ("POST /api/vm/register", [D, A, A, A, A, A]),
    ("PUT /api/vm/update", [D, D, D, D, D, A]),
    ("POST /api/vm/token", [D, D, D, D, D, A]),
    ("GET /api/vm/list", [D, A, A, A, A, A]),
    ("GET /api/vm/{id}", [D, D, D, D, D, A]),
    ("DELETE /api/vm/{id}", [D, D, D, D, D, A]),
    ("POST /api/vm/{id}/credential", [D, D, D, D, D, A]),
    ("POST /api/vm/{id}/host-key/accept", [D, D, D, D, D, A]),
    ("GET /api/vm/{id}/audit", [D, D, D, D, D, A]),
    ("GET /api/preview", [D, A, A, A, A, A]),
    ("GET /api/preview/deployments", [D, A, A, A, A, A]),
    ("POST /api/preview/access", [D, A, A, A, A, A]),
    ("GET /api/preview/config", [D, A, D, A, A, D]),
    ("PUT /api/preview/config", [D, A, D, A, A, D]),
    (
        "POST /api/preview/config/webhook-secret",
        [D, A, D, A, A, D],
    ),
    ("POST /api/preview/deploy", [D, A, D, A, A, D]),
    ("POST /api/webhook/push", [S, S, S, S, S, S]),
    ("GET /api/openapi.json", [A, A, A, A, A, A]),
    ("GET /healthz", [A, A, A, A, A, A]),
    ("GET /readyz", [A, A, A, A, A, A]),
    // Socket.io
    ("socket join_team", [D, D, A, A, A, A]),
    ("socket agent_spawn", [D, A, A, A, A, A]),
    ("socket agent_control", [D, D, D, D, D, A]),
    ("socket agent_permission_answer", [D, D, D, D, D, A]),
    ("socket chat_message", [D, A, A, A, A, A]),
    ("socket presence_update", [D, A, A, A, A, A]),
    ("socket agent_watch", [D, A, A, A, A, A]),
    // gRPC, on each service's own port
    (
        "grpc covibe.auth.v1.AuthService/Register",
        [A, A, A, A, A, A],
    ),
    ("grpc covibe.auth.v1.AuthService/Login", [A, A, A, A, A, A]),
    (
        "grpc covibe.auth.v1.AuthService/Refresh",
        [A, A, A, A, A, A],
    ),
    ("grpc covibe.auth.v1.AuthService/Verify", [D, A, A, A, A, A]),
    ("grpc covibe.auth.v1.AuthService/Me", [D, A, A, A, A, A]),
    (
        "grpc covibe.auth.v1.AuthService/CreateDeviceCode",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.auth.v1.AuthService/CreateRecoveryCode",
        [D, D, D, A, A, D],
    ),
    (
        "grpc covibe.auth.v1.AuthService/ListSessions",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.auth.v1.AuthService/RevokeSession",
        [D, D, D, D, D, A],
    ),
    ("grpc covibe.auth.v1.AuthService/Logout", [D, A, A, A, A, A]),
    (
        "grpc covibe.auth.v1.AuthService/RedeemSignInCode",
        [A, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/CreateTeam",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/RedeemInvite",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/GetMember",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/CreateInvite",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/ListInvites",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/RevokeInvite",
        [D, D, D, A, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/GetTeam",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/RemoveMember",
        [D, D, D, A, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/SetMemberRole",
        [D, D, D, D, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/TransferOwnership",
        [D, D, D, D, A, D],
    ),
    (
        "grpc covibe.team.v1.TeamService/PostMessage",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/ChatHistory",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/UpdatePresence",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/GetPresence",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/GetPolicy",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.team.v1.TeamService/PutPolicy",
        [D, A, D, A, A, D],
    ),
    // The orchestrator's, with its service token: no member's token will do.
    (
        "grpc covibe.team.v1.TeamService/GetAgentPolicy",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/SpawnAgent",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/ListPermissions",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/AnswerPermission",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/ListAgents",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/GetAgent",
        [D, D, A, A, A, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/GetOutput",
        [D, D, A, A, A, A],
    ),
    (
        "grpc covibe.orchestrator.v1.OrchestratorService/ControlAgent",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmagent.v1.AgentLink/Attach",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/StartAgent",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/ListVms",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/RegisterVm",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/UpdateVm",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/CreateVmToken",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/Dial",
        [D, D, D, D, D, D],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/GetVm",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/DeleteVm",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/ReplaceCredential",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/AcceptHostKey",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/ListAudit",
        [D, D, D, D, D, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/CreateJobGrant",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.vmconnector.v1.VmConnectorService/RunJob",
        [S, S, S, S, S, S],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/GetPreview",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/GetConfig",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/PutConfig",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/RotateWebhookSecret",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/ListDeployments",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/Redeploy",
        [D, A, D, A, A, D],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/OpenPreview",
        [D, A, A, A, A, A],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/ResolvePreview",
        [S, S, S, S, S, S],
    ),
    (
        "grpc covibe.preview.v1.PreviewService/ReceivePush",
        [S, S, S, S, S, S],
    ),
    // Last: these end every session of the caller (who signs in again after).
    ("POST /api/auth/logout-all", [D, A, A, A, A, A]),
    (
        "grpc covibe.auth.v1.AuthService/LogoutAll",
        [D, A, A, A, A, A],
    ),
];

/// What a call came back with: its answer as text, or the error code.
type Outcome = Result<String, String>;

struct World<'a> {
    stack: &'a Stack,
    http: reqwest::Client,
    sio: SioClient,
    /// Index by caller; `None` for "no token".
    people: [Option<Signed>; 6],
    rita_agent: String,
    rita_local_vm: String,
    rita_dial_vm: String,
    /// Rita's `ssh_proxy` VM (its host is never reached in these tests).
    rita_ssh_vm: String,
    /// The stack's database, to give the SSH VM a changed host key to accept.
    db: sea_orm::DatabaseConnection,
    /// Ids of the team under test that a caller from another team must never see.
    secret_ids: Vec<String>,
    fresh: u32,
    /// The OpenAPI document every REST answer is checked against.
    doc: Value,
    /// The operations whose answers were checked.
    validated: BTreeSet<String>,
    auth: AuthServiceClient<covibe_bootstrap::Client>,
    team: TeamServiceClient<covibe_bootstrap::Client>,
    orch: OrchestratorServiceClient<covibe_bootstrap::Client>,
    link: AgentLinkClient<covibe_bootstrap::Client>,
    vmc: VmConnectorServiceClient<covibe_bootstrap::Client>,
    preview: PreviewServiceClient<covibe_bootstrap::Client>,
}

fn grpc_outcome<T: std::fmt::Debug>(
    result: Result<covibe_proto::tonic::Response<T>, Status>,
) -> Outcome {
    match result {
        Ok(response) => Ok(format!("{:?}", response.into_inner())),
        Err(status) => Err(covibe_types::Code::from_grpc(status.code())
            .as_str()
            .to_owned()),
    }
}

/// A request with the caller's token, or none.
fn req<T>(message: T, token: &str) -> Request<T> {
    if token.is_empty() {
        Request::new(message)
    } else {
        bearer(message, token)
    }
}

impl World<'_> {
    fn token(&self, who: usize) -> String {
        self.people[who]
            .as_ref()
            .map(|p| p.token.clone())
            .unwrap_or_default()
    }

    fn person(&self, who: usize) -> &Signed {
        self.people[who].as_ref().unwrap()
    }

    fn owner(&self) -> &Signed {
        self.person(4)
    }

    fn email(&mut self) -> String {
        self.fresh += 1;
        format!("fresh{}@example.com", self.fresh)
    }

    /// A REST call whose answer (success or error) must be what the OpenAPI document says the
    /// operation `row` answers with that status.
    async fn checked(
        &mut self,
        row: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Outcome {
        let (method, template) = row.split_once(' ').unwrap();
        let (status, text) = match self.rest_unchecked(method, path, token, body).await {
            Ok(answer) => answer,
            Err((status, code, text)) => {
                self.conform(method, template, status, &text);
                return Err(code);
            }
        };
        self.conform(method, template, status, &text);
        Ok(text)
    }

    /// Checks an answer against the document: the status is documented for the operation, and
    /// a JSON body matches the schema documented for it.
    fn conform(&mut self, method: &str, template: &str, status: u16, text: &str) {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(
            !operation.is_null(),
            "{method} {template} is not in the OpenAPI document"
        );
        let response = &operation["responses"][status.to_string()];
        assert!(
            !response.is_null(),
            "{method} {template} answered {status}, which the document does not list: {text}"
        );
        if let Some(schema) = response["content"]["application/json"].get("schema") {
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{method} {template} {status}: not JSON ({e}): {text}"));
            if let Err(why) = conforms(&value, schema, &self.doc) {
                panic!("{method} {template} {status} does not match the document: {why}\n{text}");
            }
        }
        self.validated.insert(format!("{method} {template}"));
    }

    async fn rest_unchecked(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), (u16, String, String)> {
        let url = format!("{}{path}", self.stack.gw);
        let mut request = self.http.request(method.parse().unwrap(), &url);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        if status.is_success() {
            return Ok((status.as_u16(), text));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .map_or_else(|| status.as_str().to_owned(), str::to_owned);
        Err((status.as_u16(), code, text))
    }

    async fn socket(&mut self, who: usize, event: &str, data: Value) -> Outcome {
        let client = format!("p{who}");
        if self.people[who].is_none() {
            // A socket that never joins is closed after the join timeout: a fresh one each time.
            self.sio.close(&client).await;
            self.sio.connect(&client, &self.stack.gw).await;
        }
        let ack = self.sio.emit_ack(&client, event, data).await;
        if ack["ok"] == true {
            Ok(ack.to_string())
        } else {
            Err(ack["error"]["code"]
                .as_str()
                .unwrap_or("no code")
                .to_owned())
        }
    }

    /// A fresh invite of the team under test: (id, code).
    async fn invite(&self) -> (String, String) {
        let (status, body) = post(
            &self.http,
            &format!("{}/api/team/invite", self.stack.gw),
            Some(&self.owner().token),
            json!({}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["inviteCode"].as_str().unwrap().to_owned(),
        )
    }

    /// A fresh plain member of the team under test, to be removed, promoted or recovered.
    async fn victim(&mut self) -> Signed {
        let (_, code) = self.invite().await;
        let email = self.email();
        let (status, body) = join_team(&self.http, &self.stack.gw, &code, &email).await;
        assert_eq!(status, 200, "{body}");
        Signed::of(&body)
    }

    /// A fresh session of the caller, to end without ending their own.
    async fn temp(&self, who: usize) -> String {
        match &self.people[who] {
            Some(person) => {
                second_device(&self.http, &self.stack.gw, person, "temp")
                    .await
                    .token
            }
            None => String::new(),
        }
    }

    /// A fresh session of Rita's: (its id).
    async fn rita_session(&self) -> String {
        let token = self.temp(OWN).await;
        let (_, me) = get(
            &self.http,
            &format!("{}/api/auth/me", self.stack.gw),
            &token,
        )
        .await;
        me["session"]["id"].as_str().unwrap().to_owned()
    }

    /// The agent a control call targets: a fresh running one when Rita herself may kill it,
    /// else her long-running agent (which must survive every refused call).
    /// A new VM of Rita's, for a call that removes one.
    async fn fresh_vm(&self) -> String {
        let (status, vm) = post(
            &self.http,
            &format!("{}/api/vm/register", self.stack.gw),
            Some(&self.person(OWN).token),
            json!({"name": "spare", "strategy": "dial_in"}),
        )
        .await;
        assert_eq!(status, 201, "{vm}");
        vm["vm"]["id"].as_str().unwrap().to_owned()
    }

    /// Makes Rita's SSH VM have presented a changed host key (as a refused connection would
    /// record), and returns its fingerprint.
    async fn changed_host_key(&self) -> String {
        use sea_orm::ConnectionTrait;
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        self.db
            .execute_unprepared(&format!(
                "UPDATE vms SET pending_host_key = '{key}' WHERE id = '{}'",
                self.rita_ssh_vm
            ))
            .await
            .unwrap();
        covibe_vm_connector::ssh::fingerprint(key)
    }

    /// A tool request of Rita's agent waiting for her answer (as the orchestrator stores one
    /// its vm-agent sent); its id.
    async fn waiting_request(&self) -> String {
        use sea_orm::ConnectionTrait;
        let request = uuid_like();
        let rita = self.person(OWN);
        let now = covibe_types::now_ms();
        self.db
            .execute_unprepared(&format!(
                "INSERT INTO agent_permissions (agent_id, request_id, team_id, owner_id, tool, \
                 tool_use_id, input_json, summary, state, message, created_at_ms, expires_at_ms) \
                 VALUES ('{}', '{request}', '{}', '{}', 'Bash', 'toolu_1', \
                 '{{\"command\":\"ls\"}}', 'ls', 'pending', '', {now}, {})",
                self.rita_agent,
                rita.team_id,
                rita.user_id,
                now + 3_600_000
            ))
            .await
            .unwrap();
        request
    }

    async fn control_target(&self, who: usize, allowed: bool) -> String {
        if who != OWN || !allowed {
            return self.rita_agent.clone();
        }
        let (status, body) = post(
            &self.http,
            &format!("{}/api/agent/spawn", self.stack.gw),
            Some(&self.person(OWN).token),
            json!({"task": "wait_stdin"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["agent"]["id"].as_str().unwrap().to_owned()
    }

    /// A sign-in code for Rita, made by herself.
    async fn rita_code(&self) -> String {
        let (status, body) = post(
            &self.http,
            &format!("{}/api/auth/device", self.stack.gw),
            Some(&self.person(OWN).token),
            json!({}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["code"].as_str().unwrap().to_owned()
    }

    /// The owner gives the team under test a rule no other team has.
    async fn put_secret_policy(&self) {
        let (status, body) = crate::support::put(
            &self.http,
            &format!("{}/api/team/policy", self.stack.gw),
            &self.owner().token,
            json!({"allow": [SECRET_RULE], "deny": []}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The team's policy as the owner reads it: its rules and who changed them when.
    async fn team_policy(&self) -> Value {
        let (status, mut body) = get(
            &self.http,
            &format!("{}/api/team/policy", self.stack.gw),
            &self.owner().token,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["mine"] = Value::Null;
        body
    }

    /// After a successful transfer of ownership to `to`, hand it back to the owner.
    async fn transfer_back(&self, to: &Signed) {
        let (status, body) = post(
            &self.http,
            &format!("{}/api/team/transfer-ownership", self.stack.gw),
            Some(&to.token),
            json!({"userId": self.owner().user_id}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Signs the caller in again after they ended every session: an operator's recovery code.
    async fn relogin(&mut self, who: usize) {
        let Some(person) = self.people[who].clone() else {
            return;
        };
        let (ok, printed) = self
            .stack
            .admin(&[
                "recovery-code",
                "--team",
                &person.team_id,
                "--email",
                EMAILS[who],
            ])
            .await;
        assert!(ok, "{printed}");
        let code = printed
            .split_whitespace()
            .find(|w| w.len() == 19 && w.matches('-').count() == 3)
            .unwrap()
            .to_owned();
        let (status, body) = post(
            &self.http,
            &format!("{}/api/auth/device/redeem", self.stack.gw),
            None,
            json!({"code": code}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        self.people[who] = Some(Signed::of(&body));
    }

    /// Calls `row` as caller `who`.
    #[allow(clippy::too_many_lines)]
    async fn call(&mut self, row: &str, who: usize, expect: E) -> Outcome {
        let token = self.token(who);
        let t = token.as_str();
        let allowed = expect == A;
        match row {
            "POST /api/team/create" => {
                let email = self.email();
                let body = json!({"name": "New", "email": email, "displayName": "N"});
                self.checked(row, "/api/team/create", t, Some(body)).await
            }
            "POST /api/team/invite" => {
                self.checked(
                    row,
                    "/api/team/invite",
                    t,
                    Some(json!({"maxUses": 1, "expiresInHours": 1})),
                )
                .await
            }
            "GET /api/team/invites" => self.checked(row, "/api/team/invites", t, None).await,
            "DELETE /api/team/invite/{id}" => {
                let (id, _) = self.invite().await;
                self.checked(row, &format!("/api/team/invite/{id}"), t, None)
                    .await
            }
            "GET /api/team" => self.checked(row, "/api/team", t, None).await,
            "DELETE /api/team/members/{id}" => {
                let victim = self.victim().await;
                self.checked(
                    row,
                    &format!("/api/team/members/{}", victim.user_id),
                    t,
                    None,
                )
                .await
            }
            "PUT /api/team/members/{id}/role" => {
                let victim = self.victim().await;
                let path = format!("/api/team/members/{}/role", victim.user_id);
                self.checked(row, &path, t, Some(json!({"role": "admin"})))
                    .await
            }
            "POST /api/team/members/{id}/recovery-code" => {
                let victim = self.victim().await;
                let path = format!("/api/team/members/{}/recovery-code", victim.user_id);
                self.checked(row, &path, t, None).await
            }
            "POST /api/team/transfer-ownership" => {
                let victim = self.victim().await;
                let body = json!({"userId": victim.user_id});
                let outcome = self
                    .checked(row, "/api/team/transfer-ownership", t, Some(body))
                    .await;
                if outcome.is_ok() {
                    self.transfer_back(&victim).await;
                }
                outcome
            }
            "GET /api/team/presence" => self.checked(row, "/api/team/presence", t, None).await,
            "GET /api/team/policy" => {
                self.put_secret_policy().await;
                let outcome = self.checked(row, "/api/team/policy", t, None).await;
                if who == STRANGER {
                    let text = outcome.as_deref().unwrap_or_default();
                    assert!(
                        !text.contains(SECRET_RULE),
                        "the team's policy leaked to another team: {text}"
                    );
                }
                outcome
            }
            "PUT /api/team/policy" => {
                let before = self.team_policy().await;
                let body = json!({"allow": ["Bash(git diff:*)", "Read"], "deny": ["Read(.env)"]});
                let outcome = self.checked(row, "/api/team/policy", t, Some(body)).await;
                let after = self.team_policy().await;
                if outcome.is_ok() && who != STRANGER {
                    assert_eq!(after["updatedBy"], json!(self.person(who).user_id));
                    assert_eq!(after["team"]["deny"], json!(["Read(.env)"]));
                } else {
                    assert_eq!(after, before, "the team's policy changed: {outcome:?}");
                }
                outcome
            }
            "PUT /api/team/policy/mine" => {
                let body = json!({"allow": [], "deny": ["Bash(rm:*)"]});
                self.checked(row, "/api/team/policy/mine", t, Some(body))
                    .await
            }
            "POST /api/auth/login" => {
                let (_, code) = self.invite().await;
                let email = self.email();
                let body = json!({"inviteCode": code, "email": email, "displayName": "L"});
                self.checked(row, "/api/auth/login", t, Some(body)).await
            }
            "POST /api/auth/refresh" => {
                let temp = second_device(&self.http, &self.stack.gw, self.person(OWN), "r").await;
                let body = json!({"refreshToken": temp.refresh});
                self.checked(row, "/api/auth/refresh", t, Some(body)).await
            }
            "GET /api/auth/me" => self.checked(row, "/api/auth/me", t, None).await,
            "POST /api/auth/device" => self.checked(row, "/api/auth/device", t, None).await,
            "POST /api/auth/device/redeem" => {
                let code = self.rita_code().await;
                self.checked(
                    row,
                    "/api/auth/device/redeem",
                    t,
                    Some(json!({"code": code})),
                )
                .await
            }
            "GET /api/auth/sessions" => self.checked(row, "/api/auth/sessions", t, None).await,
            "DELETE /api/auth/sessions/{id}" => {
                let id = self.rita_session().await;
                self.checked(row, &format!("/api/auth/sessions/{id}"), t, None)
                    .await
            }
            "POST /api/auth/logout" => {
                let temp = self.temp(who).await;
                self.checked(row, "/api/auth/logout", &temp, None).await
            }
            "POST /api/auth/logout-all" => self.checked(row, "/api/auth/logout-all", t, None).await,
            "POST /api/agent/spawn" => {
                self.checked(row, "/api/agent/spawn", t, Some(json!({"task": "lines=1"})))
                    .await
            }
            "GET /api/agent/list" => self.checked(row, "/api/agent/list", t, None).await,
            "GET /api/agent/permissions" => {
                self.checked(row, "/api/agent/permissions", t, None).await
            }
            "POST /api/agent/{id}/permissions/{requestId}" => {
                let request = self.waiting_request().await;
                let path = format!("/api/agent/{}/permissions/{request}", self.rita_agent);
                self.checked(row, &path, t, Some(json!({"decision": "deny"})))
                    .await
            }
            "GET /api/agent/{id}" => {
                self.checked(row, &format!("/api/agent/{}", self.rita_agent), t, None)
                    .await
            }
            "DELETE /api/agent/{id}" => {
                let agent = self.control_target(who, allowed).await;
                self.checked(row, &format!("/api/agent/{agent}"), t, None)
                    .await
            }
            "GET /api/agent/{id}/output" => {
                self.checked(
                    row,
                    &format!("/api/agent/{}/output", self.rita_agent),
                    t,
                    None,
                )
                .await
            }
            "POST /api/chat/message" => {
                self.checked(row, "/api/chat/message", t, Some(json!({"message": "hi"})))
                    .await
            }
            "GET /api/chat/history" => self.checked(row, "/api/chat/history", t, None).await,
            "POST /api/vm/register" => {
                self.checked(row, "/api/vm/register", t, Some(json!({"name": "mine"})))
                    .await
            }
            "PUT /api/vm/update" => {
                let body = json!({"vmId": self.rita_dial_vm, "name": "renamed"});
                self.checked(row, "/api/vm/update", t, Some(body)).await
            }
            "POST /api/vm/token" => {
                let body = json!({"vmId": self.rita_dial_vm});
                self.checked(row, "/api/vm/token", t, Some(body)).await
            }
            "GET /api/vm/list" => self.checked(row, "/api/vm/list", t, None).await,
            "GET /api/vm/{id}" => {
                let path = format!("/api/vm/{}", self.rita_ssh_vm);
                self.checked(row, &path, t, None).await
            }
            "DELETE /api/vm/{id}" => {
                let path = format!("/api/vm/{}", self.fresh_vm().await);
                self.checked(row, &path, t, None).await
            }
            "POST /api/vm/{id}/credential" => {
                let path = format!("/api/vm/{}/credential", self.rita_ssh_vm);
                let body = json!({"privateKey": DUMMY_KEY});
                self.checked(row, &path, t, Some(body)).await
            }
            "POST /api/vm/{id}/host-key/accept" => {
                let fingerprint = self.changed_host_key().await;
                let path = format!("/api/vm/{}/host-key/accept", self.rita_ssh_vm);
                let body = json!({"fingerprint": fingerprint});
                self.checked(row, &path, t, Some(body)).await
            }
            "GET /api/vm/{id}/audit" => {
                let path = format!("/api/vm/{}/audit", self.rita_ssh_vm);
                self.checked(row, &path, t, None).await
            }
            "GET /api/preview" => self.checked(row, "/api/preview", t, None).await,
            "GET /api/preview/deployments" => {
                self.checked(row, "/api/preview/deployments", t, None).await
            }
            "POST /api/preview/access" => self.checked(row, "/api/preview/access", t, None).await,
            "POST /api/preview/deploy" => self.checked(row, "/api/preview/deploy", t, None).await,
            "GET /api/preview/config" => self.checked(row, "/api/preview/config", t, None).await,
            "PUT /api/preview/config" => {
                let body =
                    json!({"repository": "rocket/app", "startCommand": "serve", "port": 8000});
                self.checked(row, "/api/preview/config", t, Some(body))
                    .await
            }
            "POST /api/preview/config/webhook-secret" => {
                self.checked(row, "/api/preview/config/webhook-secret", t, None)
                    .await
            }
            "POST /api/webhook/push" => {
                let team = &self.owner().team_id;
                self.checked(
                    row,
                    &format!("/api/webhook/push?team={team}"),
                    t,
                    Some(json!({})),
                )
                .await
            }
            "GET /api/openapi.json" => self.checked(row, "/api/openapi.json", t, None).await,
            "GET /healthz" => self.checked(row, "/healthz", t, None).await,
            "GET /readyz" => self.checked(row, "/readyz", t, None).await,

            "socket join_team" => {
                let data = json!({"teamId": self.owner().team_id, "token": t});
                self.socket(who, "join_team", data).await
            }
            "socket agent_spawn" => {
                self.socket(who, "agent_spawn", json!({"task": "lines=1"}))
                    .await
            }
            "socket agent_permission_answer" => {
                let request = self.waiting_request().await;
                let data =
                    json!({"agentId": self.rita_agent, "requestId": request, "decision": "deny"});
                self.socket(who, "agent_permission_answer", data).await
            }
            "socket agent_control" => {
                let agent = self.control_target(who, allowed).await;
                self.socket(
                    who,
                    "agent_control",
                    json!({"agentId": agent, "command": "kill"}),
                )
                .await
            }
            "socket chat_message" => {
                self.socket(who, "chat_message", json!({"message": "hi"}))
                    .await
            }
            "socket presence_update" => {
                self.socket(who, "presence_update", json!({"status": "away"}))
                    .await
            }
            "socket agent_watch" => {
                self.socket(who, "agent_watch", json!({"agentId": null}))
                    .await
            }

            "grpc covibe.auth.v1.AuthService/Register" => {
                let email = self.email();
                let r = auth_pb::RegisterRequest {
                    team_name: "G".into(),
                    email,
                    display_name: "G".into(),
                    device_name: String::new(),
                };
                grpc_outcome(self.auth.clone().register(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/Login" => {
                let (_, code) = self.invite().await;
                let email = self.email();
                let r = auth_pb::LoginRequest {
                    invite_code: code,
                    email,
                    display_name: "G".into(),
                    device_name: String::new(),
                    join_key: String::new(),
                };
                grpc_outcome(self.auth.clone().login(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/Refresh" => {
                let temp = second_device(&self.http, &self.stack.gw, self.person(OWN), "r").await;
                let r = auth_pb::RefreshRequest {
                    refresh_token: temp.refresh,
                };
                grpc_outcome(self.auth.clone().refresh(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/Verify" => {
                let r = auth_pb::VerifyRequest {
                    access_token: token.clone(),
                };
                grpc_outcome(self.auth.clone().verify(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/Me" => {
                grpc_outcome(self.auth.clone().me(req(auth_pb::MeRequest {}, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/CreateDeviceCode" => grpc_outcome(
                self.auth
                    .clone()
                    .create_device_code(req(auth_pb::CreateDeviceCodeRequest {}, t))
                    .await,
            ),
            "grpc covibe.auth.v1.AuthService/CreateRecoveryCode" => {
                let victim = self.victim().await;
                let r = auth_pb::CreateRecoveryCodeRequest {
                    user_id: victim.user_id,
                };
                grpc_outcome(self.auth.clone().create_recovery_code(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/ListSessions" => grpc_outcome(
                self.auth
                    .clone()
                    .list_sessions(req(auth_pb::ListSessionsRequest {}, t))
                    .await,
            ),
            "grpc covibe.auth.v1.AuthService/RevokeSession" => {
                let id = self.rita_session().await;
                let r = auth_pb::RevokeSessionRequest { session_id: id };
                grpc_outcome(self.auth.clone().revoke_session(req(r, t)).await)
            }
            "grpc covibe.auth.v1.AuthService/Logout" => {
                let temp = self.temp(who).await;
                grpc_outcome(
                    self.auth
                        .clone()
                        .logout(req(auth_pb::LogoutRequest {}, &temp))
                        .await,
                )
            }
            "grpc covibe.auth.v1.AuthService/LogoutAll" => grpc_outcome(
                self.auth
                    .clone()
                    .logout_all(req(auth_pb::LogoutRequest {}, t))
                    .await,
            ),
            "grpc covibe.auth.v1.AuthService/RedeemSignInCode" => {
                let code = self.rita_code().await;
                let r = auth_pb::RedeemSignInCodeRequest {
                    code,
                    device_name: String::new(),
                };
                grpc_outcome(self.auth.clone().redeem_sign_in_code(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/CreateTeam" => {
                let r = team_pb::CreateTeamRequest {
                    name: "Internal".into(),
                    email: self.email(),
                    display_name: "I".into(),
                };
                grpc_outcome(self.team.clone().create_team(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/RedeemInvite" => {
                let (_, code) = self.invite().await;
                let r = team_pb::RedeemInviteRequest {
                    invite_code: code,
                    email: self.email(),
                    display_name: "I".into(),
                    join_key: String::new(),
                };
                grpc_outcome(self.team.clone().redeem_invite(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/GetMember" => {
                let r = team_pb::GetMemberRequest {
                    user_id: self.person(OWN).user_id.clone(),
                };
                grpc_outcome(self.team.clone().get_member(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/CreateInvite" => {
                let r = team_pb::CreateInviteRequest {
                    max_uses: 1,
                    ttl_seconds: 60,
                };
                grpc_outcome(self.team.clone().create_invite(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/ListInvites" => grpc_outcome(
                self.team
                    .clone()
                    .list_invites(req(team_pb::ListInvitesRequest {}, t))
                    .await,
            ),
            "grpc covibe.team.v1.TeamService/RevokeInvite" => {
                let (id, _) = self.invite().await;
                let r = team_pb::RevokeInviteRequest { invite_id: id };
                grpc_outcome(self.team.clone().revoke_invite(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/GetTeam" => grpc_outcome(
                self.team
                    .clone()
                    .get_team(req(team_pb::GetTeamRequest {}, t))
                    .await,
            ),
            "grpc covibe.team.v1.TeamService/RemoveMember" => {
                let victim = self.victim().await;
                let r = team_pb::RemoveMemberRequest {
                    user_id: victim.user_id,
                };
                grpc_outcome(self.team.clone().remove_member(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/SetMemberRole" => {
                let victim = self.victim().await;
                let r = team_pb::SetMemberRoleRequest {
                    user_id: victim.user_id,
                    role: common::Role::Admin as i32,
                };
                grpc_outcome(self.team.clone().set_member_role(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/TransferOwnership" => {
                let victim = self.victim().await;
                let r = team_pb::TransferOwnershipRequest {
                    user_id: victim.user_id.clone(),
                };
                let outcome = grpc_outcome(self.team.clone().transfer_ownership(req(r, t)).await);
                if outcome.is_ok() {
                    self.transfer_back(&victim).await;
                }
                outcome
            }
            "grpc covibe.team.v1.TeamService/PostMessage" => {
                let r = team_pb::PostMessageRequest {
                    text: "hi".into(),
                    ..Default::default()
                };
                grpc_outcome(self.team.clone().post_message(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/ChatHistory" => grpc_outcome(
                self.team
                    .clone()
                    .chat_history(req(team_pb::ChatHistoryRequest::default(), t))
                    .await,
            ),
            "grpc covibe.team.v1.TeamService/UpdatePresence" => {
                let r = team_pb::UpdatePresenceRequest {
                    status: team_pb::PresenceStatus::Away as i32,
                    ..Default::default()
                };
                grpc_outcome(self.team.clone().update_presence(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/GetPresence" => grpc_outcome(
                self.team
                    .clone()
                    .get_presence(req(team_pb::GetPresenceRequest {}, t))
                    .await,
            ),
            "grpc covibe.team.v1.TeamService/GetPolicy" => grpc_outcome(
                self.team
                    .clone()
                    .get_policy(req(team_pb::GetPolicyRequest {}, t))
                    .await,
            ),
            "grpc covibe.team.v1.TeamService/PutPolicy" => {
                let r = team_pb::PutPolicyRequest {
                    scope: team_pb::PolicyScope::Team as i32,
                    rules: Some(team_pb::PolicyRules {
                        allow: vec!["Read".into()],
                        deny: vec!["Read(.env)".into()],
                    }),
                    if_updated_at_ms: None,
                };
                grpc_outcome(self.team.clone().put_policy(req(r, t)).await)
            }
            "grpc covibe.team.v1.TeamService/GetAgentPolicy" => {
                let r = team_pb::GetAgentPolicyRequest {
                    team_id: self.owner().team_id.clone(),
                    user_id: self.person(OWN).user_id.clone(),
                };
                grpc_outcome(self.team.clone().get_agent_policy(req(r, t)).await)
            }
            "grpc covibe.orchestrator.v1.OrchestratorService/SpawnAgent" => {
                let r = orch_pb::SpawnAgentRequest {
                    task: "lines=1".into(),
                    vm_id: String::new(),
                };
                grpc_outcome(self.orch.clone().spawn_agent(req(r, t)).await)
            }
            "grpc covibe.orchestrator.v1.OrchestratorService/ListPermissions" => grpc_outcome(
                self.orch
                    .clone()
                    .list_permissions(req(orch_pb::ListPermissionsRequest {}, t))
                    .await,
            ),
            "grpc covibe.orchestrator.v1.OrchestratorService/AnswerPermission" => {
                let r = orch_pb::AnswerPermissionRequest {
                    agent_id: self.rita_agent.clone(),
                    request_id: self.waiting_request().await,
                    decision: orch_pb::PermissionDecision::Deny.into(),
                    message: String::new(),
                    updated_input_json: String::new(),
                };
                grpc_outcome(self.orch.clone().answer_permission(req(r, t)).await)
            }
            "grpc covibe.orchestrator.v1.OrchestratorService/ListAgents" => grpc_outcome(
                self.orch
                    .clone()
                    .list_agents(req(orch_pb::ListAgentsRequest {}, t))
                    .await,
            ),
            "grpc covibe.orchestrator.v1.OrchestratorService/GetAgent" => {
                let r = orch_pb::GetAgentRequest {
                    agent_id: self.rita_agent.clone(),
                };
                grpc_outcome(self.orch.clone().get_agent(req(r, t)).await)
            }
            "grpc covibe.orchestrator.v1.OrchestratorService/GetOutput" => {
                let r = orch_pb::GetOutputRequest {
                    agent_id: self.rita_agent.clone(),
                    from_seq: 0,
                    limit: 10,
                };
                grpc_outcome(self.orch.clone().get_output(req(r, t)).await)
            }
            "grpc covibe.orchestrator.v1.OrchestratorService/ControlAgent" => {
                let agent = self.control_target(who, allowed).await;
                let command = covibe_proto::vmagent::v1::Command {
                    command: Some(covibe_proto::vmagent::v1::command::Command::Kill(
                        covibe_proto::vmagent::v1::Kill { grace_ms: 0 },
                    )),
                };
                let r = orch_pb::ControlAgentRequest {
                    agent_id: agent,
                    command: Some(command),
                };
                grpc_outcome(self.orch.clone().control_agent(req(r, t)).await)
            }
            "grpc covibe.vmagent.v1.AgentLink/Attach" => {
                // A member's token is no agent's link token.
                let hello = link_pb::AgentFrame {
                    frame: Some(link_pb::agent_frame::Frame::Hello(link_pb::Hello {
                        agent_id: self.rita_agent.clone(),
                        agent_token: token.clone(),
                        ..Default::default()
                    })),
                };
                let stream = futures_once(hello);
                match self.link.clone().attach(req(stream, t)).await {
                    Ok(response) => {
                        let mut inbound = response.into_inner();
                        match inbound.message().await {
                            Ok(Some(frame)) => Ok(format!("{frame:?}")),
                            Ok(None) => Err("unavailable".to_owned()),
                            Err(status) => Err(covibe_types::Code::from_grpc(status.code())
                                .as_str()
                                .to_owned()),
                        }
                    }
                    Err(status) => Err(covibe_types::Code::from_grpc(status.code())
                        .as_str()
                        .to_owned()),
                }
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/StartAgent" => {
                let rita = self.person(OWN);
                let r = vmc_pb::StartAgentRequest {
                    agent_id: uuid_like(),
                    user_id: rita.user_id.clone(),
                    team_id: rita.team_id.clone(),
                    vm_id: self.rita_local_vm.clone(),
                    task: "lines=1".into(),
                    agent_token: "not-an-agent-token".into(),
                    link_url: self.stack.orchestrator.clone(),
                };
                grpc_outcome(self.vmc.clone().start_agent(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/ListVms" => grpc_outcome(
                self.vmc
                    .clone()
                    .list_vms(req(vmc_pb::ListVmsRequest {}, t))
                    .await,
            ),
            "grpc covibe.vmconnector.v1.VmConnectorService/RegisterVm" => {
                let r = vmc_pb::RegisterVmRequest {
                    name: "mine".into(),
                    ..Default::default()
                };
                grpc_outcome(self.vmc.clone().register_vm(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/UpdateVm" => {
                let r = vmc_pb::UpdateVmRequest {
                    vm_id: self.rita_dial_vm.clone(),
                    name: Some("renamed".into()),
                    ..Default::default()
                };
                grpc_outcome(self.vmc.clone().update_vm(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/GetVm" => {
                let r = vmc_pb::GetVmRequest {
                    vm_id: self.rita_ssh_vm.clone(),
                };
                grpc_outcome(self.vmc.clone().get_vm(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/DeleteVm" => {
                let r = vmc_pb::GetVmRequest {
                    vm_id: self.fresh_vm().await,
                };
                grpc_outcome(self.vmc.clone().delete_vm(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/ReplaceCredential" => {
                let r = vmc_pb::ReplaceCredentialRequest {
                    vm_id: self.rita_ssh_vm.clone(),
                    credential: Some(vmc_pb::SshCredential {
                        password: "hunter2".into(),
                        ..Default::default()
                    }),
                };
                grpc_outcome(self.vmc.clone().replace_credential(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/AcceptHostKey" => {
                let r = vmc_pb::AcceptHostKeyRequest {
                    vm_id: self.rita_ssh_vm.clone(),
                    fingerprint: self.changed_host_key().await,
                };
                grpc_outcome(self.vmc.clone().accept_host_key(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/CreateJobGrant" => {
                let r = vmc_pb::CreateJobGrantRequest {
                    vm_id: String::new(),
                    purpose: "preview".into(),
                };
                grpc_outcome(self.vmc.clone().create_job_grant(req(r, t)).await)
            }
            // The grant is the credential: a member's token adds nothing.
            "grpc covibe.vmconnector.v1.VmConnectorService/RunJob" => {
                let r = vmc_pb::RunJobRequest {
                    grant: "not-a-grant".into(),
                    script: "true".into(),
                    timeout_secs: 5,
                    health: None,
                };
                grpc_outcome(self.vmc.clone().run_job(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/ListAudit" => {
                let r = vmc_pb::ListAuditRequest {
                    vm_id: self.rita_ssh_vm.clone(),
                    ..Default::default()
                };
                grpc_outcome(self.vmc.clone().list_audit(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/CreateVmToken" => {
                let r = vmc_pb::CreateVmTokenRequest {
                    vm_id: self.rita_dial_vm.clone(),
                };
                grpc_outcome(self.vmc.clone().create_vm_token(req(r, t)).await)
            }
            "grpc covibe.vmconnector.v1.VmConnectorService/Dial" => {
                // A member's token is no VM's daemon token.
                let hello = vmc_pb::DaemonFrame {
                    frame: Some(vmc_pb::daemon_frame::Frame::Hello(vmc_pb::DaemonHello {
                        vm_id: self.rita_dial_vm.clone(),
                        vm_token: token.clone(),
                        ..Default::default()
                    })),
                };
                match self.vmc.clone().dial(req(futures_once(hello), t)).await {
                    Ok(_) => Ok("dialled".to_owned()),
                    Err(status) => Err(covibe_types::Code::from_grpc(status.code())
                        .as_str()
                        .to_owned()),
                }
            }
            "grpc covibe.preview.v1.PreviewService/GetPreview" => grpc_outcome(
                self.preview
                    .clone()
                    .get_preview(req(preview_pb::GetPreviewRequest {}, t))
                    .await,
            ),
            "grpc covibe.preview.v1.PreviewService/GetConfig" => grpc_outcome(
                self.preview
                    .clone()
                    .get_config(req(preview_pb::GetPreviewConfigRequest {}, t))
                    .await,
            ),
            "grpc covibe.preview.v1.PreviewService/PutConfig" => {
                let r = preview_pb::PutPreviewConfigRequest {
                    config: Some(preview_pb::PreviewConfig {
                        repository: "rocket/app".into(),
                        start_command: "serve".into(),
                        port: 8000,
                        ..Default::default()
                    }),
                };
                grpc_outcome(self.preview.clone().put_config(req(r, t)).await)
            }
            "grpc covibe.preview.v1.PreviewService/RotateWebhookSecret" => grpc_outcome(
                self.preview
                    .clone()
                    .rotate_webhook_secret(req(preview_pb::RotateWebhookSecretRequest {}, t))
                    .await,
            ),
            "grpc covibe.preview.v1.PreviewService/ListDeployments" => grpc_outcome(
                self.preview
                    .clone()
                    .list_deployments(req(preview_pb::ListDeploymentsRequest { limit: 0 }, t))
                    .await,
            ),
            "grpc covibe.preview.v1.PreviewService/OpenPreview" => grpc_outcome(
                self.preview
                    .clone()
                    .open_preview(req(preview_pb::OpenPreviewRequest {}, t))
                    .await,
            ),
            // The capability is the credential: a member's token adds nothing.
            "grpc covibe.preview.v1.PreviewService/ResolvePreview" => {
                let r = preview_pb::ResolvePreviewRequest {
                    team_id: self.owner().team_id.clone(),
                    capability: "0-00".into(),
                };
                grpc_outcome(self.preview.clone().resolve_preview(req(r, t)).await)
            }
            "grpc covibe.preview.v1.PreviewService/Redeploy" => grpc_outcome(
                self.preview
                    .clone()
                    .redeploy(req(preview_pb::RedeployRequest {}, t))
                    .await,
            ),
            "grpc covibe.preview.v1.PreviewService/ReceivePush" => {
                let r = preview_pb::ReceivePushRequest {
                    team_id: self.owner().team_id.clone(),
                    ..Default::default()
                };
                grpc_outcome(self.preview.clone().receive_push(req(r, t)).await)
            }
            other => panic!("the matrix has a row nobody calls: {other}"),
        }
    }
}

/// A request stream of one message that then stays open (as a client waiting for an answer).
fn futures_once<T: Send + 'static>(first: T) -> impl futures::Stream<Item = T> + Send + 'static {
    use futures::StreamExt;
    futures::stream::once(async move { first }).chain(futures::stream::pending())
}

fn uuid_like() -> String {
    covibe_types::AgentId::new().to_string()
}

/// Whether `value` matches `schema` (the subset of JSON Schema the gateway's document uses:
/// `$ref`, `anyOf`, `oneOf`, `enum`, `type` (a name or a list), `required`, `properties`,
/// `additionalProperties: false`, `items`, `minimum`); the error says where it does not.
fn conforms(value: &Value, schema: &Value, doc: &Value) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("unknown schema {reference}"));
        }
        return conforms(value, target, doc).map_err(|e| format!("{name}: {e}"));
    }
    if let Some(options) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        return if options.iter().any(|o| conforms(value, o, doc).is_ok()) {
            Ok(())
        } else {
            Err(format!("{value} matches none of {schema}"))
        };
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of {allowed:?}"));
    }
    let fits = |kind: &str| match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    // `type` is a name, or (JSON Schema 2020-12, OpenAPI 3.1) a list of them.
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => vec!["any"],
    };
    if !kinds.iter().any(|kind| fits(kind)) {
        return Err(format!("{value} is not {kinds:?}"));
    }
    let kind = if value.is_object() { "object" } else { "other" };
    if let Some(minimum) = schema["minimum"].as_f64()
        && value.as_f64().is_some_and(|v| v < minimum)
    {
        return Err(format!("{value} is below {minimum}"));
    }
    if let Some(items) = schema.get("items") {
        for (i, item) in value.as_array().into_iter().flatten().enumerate() {
            conforms(item, items, doc).map_err(|e| format!("[{i}]: {e}"))?;
        }
    }
    if kind == "object" {
        let object = value
            .as_object()
            .map_or_else(Default::default, Clone::clone);
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("missing {name}"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in &object {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => {
                    conforms(field, field_schema, doc).map_err(|e| format!("{name}: {e}"))?;
                }
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{name} is not in the document"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Every REST route of the OpenAPI document, every Socket.io event the gateway knows, and
/// every RPC of the services' protos.
async fn surface(world: &mut World<'_>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let (_, doc) = get(
        &world.http,
        &format!("{}/api/openapi.json", world.stack.gw),
        "",
    )
    .await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            names.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    // The gateway lists its events when it refuses one it does not know.
    let ack = world.sio.emit_ack("p0", "no_such_event", json!({})).await;
    let message = ack["error"]["message"].as_str().unwrap().to_owned();
    let list = message.split_once(':').unwrap().1;
    for event in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|w| w.contains('_'))
    {
        names.insert(format!("socket {event}"));
    }
    let set = prost_types::FileDescriptorSet::decode(covibe_proto::FILE_DESCRIPTOR_SET).unwrap();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                names.insert(format!(
                    "grpc {}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    names
}

async fn matrix(stack: &Stack) {
    let http = reqwest::Client::new();
    let gw = &stack.gw;
    let (olivia, code) = new_team(&http, gw, "Alpha", "olivia@example.com").await;
    let (sam, _) = new_team(&http, gw, "Beta", "sam@example.com").await;
    let member = |email: &'static str| {
        let http = http.clone();
        let code = code.clone();
        async move {
            let (status, body) = join_team(&http, gw, &code, email).await;
            assert_eq!(status, 200, "{body}");
            Signed::of(&body)
        }
    };
    let ada = member("ada@example.com").await;
    let max = member("max@example.com").await;
    let rita = member("rita@example.com").await;
    let (status, body) = crate::support::put(
        &http,
        &format!("{gw}/api/team/members/{}/role", ada.user_id),
        &olivia.token,
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Rita's agent runs for the whole test; her VMs: the local one it runs on, and a dial-in.
    let (status, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&rita.token),
        json!({"task": "wait_stdin"}),
    )
    .await;
    assert_eq!(status, 201, "{spawned}");
    let rita_agent = spawned["agent"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&http, gw, &rita.token, &rita_agent, "running").await;
    let rita_local_vm = spawned["agent"]["vmId"].as_str().unwrap().to_owned();
    let (status, vm) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&rita.token),
        json!({"name": "dial", "strategy": "dial_in"}),
    )
    .await;
    assert_eq!(status, 201, "{vm}");
    let rita_dial_vm = vm["vm"]["id"].as_str().unwrap().to_owned();
    let (status, vm) = post(
        &http,
        &format!("{gw}/api/vm/register"),
        Some(&rita.token),
        json!({"name": "ssh", "strategy": "ssh_proxy", "host": "127.0.0.1", "port": 1,
               "username": "rita", "privateKey": DUMMY_KEY}),
    )
    .await;
    assert_eq!(status, 201, "{vm}");
    assert_eq!(vm["vm"]["credential"], "key");
    assert!(
        !vm.to_string().contains("PRIVATE"),
        "a credential came back: {vm}"
    );
    let rita_ssh_vm = vm["vm"]["id"].as_str().unwrap().to_owned();
    let db_url = stack
        .admin_env
        .iter()
        .find(|(k, _)| k == "COVIBE_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                stack.data_dir.join("covibe.db").display()
            )
        });
    let db = covibe_storage::connect(&db_url).await.unwrap();

    let channel = |url: &str| covibe_bootstrap::channel(url).unwrap();
    let mut world = World {
        stack,
        http: http.clone(),
        sio: SioClient::start().await,
        secret_ids: vec![
            olivia.team_id.clone(),
            rita_agent.clone(),
            rita_local_vm.clone(),
            rita_dial_vm.clone(),
            rita_ssh_vm.clone(),
            rita.user_id.clone(),
        ],
        people: [
            None,
            Some(sam),
            Some(max),
            Some(ada),
            Some(olivia),
            Some(rita),
        ],
        rita_agent,
        rita_local_vm,
        rita_dial_vm,
        rita_ssh_vm,
        db,
        fresh: 0,
        doc: get(&http, &format!("{gw}/api/openapi.json"), "").await.1,
        validated: BTreeSet::new(),
        auth: AuthServiceClient::new(channel(&stack.auth)),
        team: TeamServiceClient::new(channel(&stack.team)),
        orch: OrchestratorServiceClient::new(channel(&stack.orchestrator)),
        link: AgentLinkClient::new(channel(&stack.orchestrator)),
        vmc: VmConnectorServiceClient::new(channel(&stack.vm_connector)),
        preview: PreviewServiceClient::new(channel(&stack.preview)),
    };
    // Every caller has a socket, joined to their own team (but the one without a token).
    for who in 0..6 {
        world.sio.connect(&format!("p{who}"), gw).await;
        if let Some(person) = world.people[who].clone() {
            join(
                &mut world.sio,
                &format!("p{who}"),
                json!({"teamId": person.team_id, "token": person.token}),
            )
            .await;
        }
    }

    // One row for everything there is, and nothing else.
    let rows: BTreeSet<String> = MATRIX.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(rows.len(), MATRIX.len(), "a row appears twice");
    let there = surface(&mut world).await;
    let missing: Vec<_> = there.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "no row in the permission matrix for {missing:?}"
    );
    let unknown: Vec<_> = rows.difference(&there).collect();
    assert!(
        unknown.is_empty(),
        "rows for what the stack does not have: {unknown:?}"
    );

    for (row, expected) in MATRIX {
        let mut answers = Vec::new();
        for (who, expect) in expected.iter().enumerate() {
            let outcome = world.call(row, who, *expect).await;
            let what = format!("{row}, called by {}: {outcome:?}", WHO[who]);
            match expect {
                A => {
                    let text = outcome.unwrap_or_else(|code| panic!("refused ({code}): {what}"));
                    // A public route's answer is the credential's (a code, a refresh token),
                    // whatever token came along.
                    let public = expected[NONE] == A;
                    if who == STRANGER && !public {
                        for id in &world.secret_ids {
                            assert!(
                                !text.contains(id.as_str()),
                                "{id} leaked to another team: {what}"
                            );
                        }
                    }
                    let own_only = row.contains("/api/vm") || row.contains("VmConnector");
                    if own_only && who != OWN {
                        assert!(
                            !text.contains(&world.rita_dial_vm),
                            "another member's VM leaked: {what}"
                        );
                    }
                }
                D => {
                    let code = outcome.err().unwrap_or_else(|| panic!("allowed: {what}"));
                    if who == NONE {
                        assert_eq!(code, "unauthenticated", "{what}");
                    } else {
                        assert!(
                            ["permission_denied", "not_found", "unauthenticated"]
                                .contains(&code.as_str()),
                            "{what}"
                        );
                    }
                }
                S => answers.push(outcome),
            }
            if row.ends_with("logout-all") || row.ends_with("/LogoutAll") {
                world.relogin(who).await;
            }
        }
        if !answers.is_empty() {
            assert!(
                answers.iter().all(|a| a == &answers[0]),
                "{row}: a token changed the answer: {answers:?}"
            );
            assert!(answers[0].is_err(), "{row}: {answers:?}");
        }
    }

    // Every REST route's answers were checked against the OpenAPI document.
    let rest_rows: BTreeSet<String> = MATRIX
        .iter()
        .filter(|(name, _)| name.starts_with(['G', 'P', 'D']))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let unchecked: Vec<_> = rest_rows.difference(&world.validated).collect();
    assert!(
        unchecked.is_empty(),
        "answers never checked against the document: {unchecked:?}"
    );

    // Every refused control left Rita's agent running.
    let (_, agent) = get(
        &http,
        &format!("{gw}/api/agent/{}", world.rita_agent),
        &world.token(OWN),
    )
    .await;
    assert_eq!(agent["agent"]["status"], "running", "{agent}");
}

#[tokio::test]
async fn permission_matrix_in_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::standalone(dir.path(), &[]).await;
    matrix(&stack).await;
}

#[tokio::test]
async fn permission_matrix_in_the_mesh() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mesh = roomy_mesh(dir.path(), &db.url).await;
    matrix(&Stack::of_mesh(&mesh)).await;
}
