//! The OpenAPI 3.1 description served at `GET /api/openapi.json`: the operations from
//! [`ROUTES`] (path, method, summary, parameters, statuses), the bodies derived from the types
//! the handlers read and write (`utoipa::ToSchema` on each feature's JSON shapes).
//!
//! Adding a route to `http::router` means adding a row here (and its body types to [`schemas`]
//! if they are new): `gateway/tests/gateway.rs` calls every row against the router, fails on any
//! `.route(...)` in `src/` that has no row and on any row the router lacks, and validates the
//! document; the permission matrix (`covibe/tests/e2e/permissions.rs`) checks every route's
//! real answers against it.

use std::sync::LazyLock;

use axum::Json;
use serde_json::{Map, Value, json};

/// One operation of the API.
pub(crate) struct Route {
    pub method: &'static str,
    /// axum's path syntax, which is also OpenAPI's: `/api/agent/{id}`.
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    /// Needs `Authorization: Bearer <access token>`.
    pub auth: bool,
    pub query: &'static [Param],
    pub body: Body,
    pub ok: (u16, Reply),
    /// Error statuses this route answers beyond the ones every route may (429, 500, 503) and
    /// the ones [`Route::auth`] (401) and a body (400, 413) imply.
    pub errors: &'static [u16],
}

pub(crate) struct Param {
    pub name: &'static str,
    pub schema: &'static str,
    pub description: &'static str,
}

pub(crate) enum Body {
    None,
    Json(&'static str),
    /// A JSON body that may be left out (the defaults apply).
    OptionalJson(&'static str),
}

pub(crate) enum Reply {
    Json(&'static str),
    Text,
}

pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/team/create",
        id: "createTeam",
        summary: "create a team and its first member; answers a session and the first invite code",
        auth: false,
        query: &[],
        body: Body::Json("CreateTeam"),
        ok: (201, Reply::Json("Session")),
        errors: &[409],
    },
    Route {
        method: "post",
        path: "/api/team/invite",
        id: "createInvite",
        summary: "create an invite code for the caller's team (owners and admins)",
        auth: true,
        query: &[],
        body: Body::OptionalJson("CreateInvite"),
        ok: (201, Reply::Json("NewInvite")),
        errors: &[403],
    },
    Route {
        method: "get",
        path: "/api/team/invites",
        id: "listInvites",
        summary: "the team's invites, newest first, never their codes (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("InviteList")),
        errors: &[403],
    },
    Route {
        method: "delete",
        path: "/api/team/invite/{id}",
        id: "revokeInvite",
        summary: "revoke an invite: it can no longer be redeemed (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("InviteEnvelope")),
        errors: &[403, 404],
    },
    Route {
        method: "delete",
        path: "/api/team/members/{id}",
        id: "removeMember",
        summary: "remove a member: their sessions end, their sockets close, their agents stop \
                  (owners remove admins and members, admins members)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Done")),
        errors: &[403, 404],
    },
    Route {
        method: "put",
        path: "/api/team/members/{id}/role",
        id: "setMemberRole",
        summary: "make a member an admin or an admin a member (the owner)",
        auth: true,
        query: &[],
        body: Body::Json("SetRole"),
        ok: (200, Reply::Json("MemberEnvelope")),
        errors: &[403, 404],
    },
    Route {
        method: "post",
        path: "/api/team/members/{id}/recovery-code",
        id: "createRecoveryCode",
        summary: "a one-time recovery code for a member the caller outranks (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (201, Reply::Json("SignInCode")),
        errors: &[403, 404],
    },
    Route {
        method: "post",
        path: "/api/team/transfer-ownership",
        id: "transferOwnership",
        summary: "hand the team over to another member; the owner becomes an admin (the owner)",
        auth: true,
        query: &[],
        body: Body::Json("Transfer"),
        ok: (200, Reply::Json("TeamView")),
        errors: &[403, 404, 409],
    },
    Route {
        method: "get",
        path: "/api/team/policy",
        id: "getTeamPolicy",
        summary: "the team's tool-use rules (Claude Code permission syntax) and the caller's own stricter ones",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("PolicyView")),
        errors: &[403],
    },
    Route {
        method: "put",
        path: "/api/team/policy",
        id: "putTeamPolicy",
        summary: "replace the team's tool-use rules (owners and admins); a bad rule is refused with its list and \
                  position (`deny rule 2: ...`) and nothing changes; with `ifUpdatedAt`, rules changed since \
                  are not overwritten (409); the team receives `policy_updated`",
        auth: true,
        query: &[],
        body: Body::Json("TeamPolicyPut"),
        ok: (200, Reply::Json("PolicyView")),
        errors: &[403, 409],
    },
    Route {
        method: "put",
        path: "/api/team/policy/mine",
        id: "putMyPolicy",
        summary: "replace the caller's own tool-use rules for their agents: more denies, and allows that \
                  narrow the team's (never looser)",
        auth: true,
        query: &[],
        body: Body::Json("PolicyRules"),
        ok: (200, Reply::Json("PolicyView")),
        errors: &[403],
    },
    Route {
        method: "get",
        path: "/api/team",
        id: "getTeam",
        summary: "the caller's team and its members",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("TeamView")),
        errors: &[403, 404],
    },
    Route {
        method: "post",
        path: "/api/auth/login",
        id: "login",
        summary: "join a team with an invite code (tighter rate limit per address)",
        auth: false,
        query: &[],
        body: Body::Json("Login"),
        ok: (200, Reply::Json("Session")),
        errors: &[401, 403, 404, 409],
    },
    Route {
        method: "post",
        path: "/api/auth/refresh",
        id: "refresh",
        summary: "trade a refresh token for a new access and refresh token (the old one is spent)",
        auth: false,
        query: &[],
        body: Body::Json("Refresh"),
        ok: (200, Reply::Json("TokenPair")),
        errors: &[401],
    },
    Route {
        method: "get",
        path: "/api/auth/me",
        id: "me",
        summary: "the caller, their team and this session",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Me")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/auth/device",
        id: "createDeviceCode",
        summary: "a one-time code (minutes; text and a QR payload) a new device signs in with",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (201, Reply::Json("SignInCode")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/auth/device/redeem",
        id: "redeemSignInCode",
        summary: "sign this device in with a device or recovery code (tighter rate limit per address)",
        auth: false,
        query: &[],
        body: Body::Json("RedeemCode"),
        ok: (200, Reply::Json("Session")),
        errors: &[401],
    },
    Route {
        method: "get",
        path: "/api/auth/sessions",
        id: "listSessions",
        summary: "the caller's sessions, one per signed-in device, newest first",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("SessionList")),
        errors: &[],
    },
    Route {
        method: "delete",
        path: "/api/auth/sessions/{id}",
        id: "revokeSession",
        summary: "end one of the caller's sessions: its tokens are refused and its sockets closed",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Ended")),
        errors: &[404],
    },
    Route {
        method: "post",
        path: "/api/auth/logout",
        id: "logout",
        summary: "end this session",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Ended")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/auth/logout-all",
        id: "logoutAll",
        summary: "end every session of the caller",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Ended")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/agent/spawn",
        id: "spawnAgent",
        summary: "start an agent on one of the caller's VMs",
        auth: true,
        query: &[],
        body: Body::Json("Spawn"),
        ok: (201, Reply::Json("AgentEnvelope")),
        errors: &[403, 404, 409],
    },
    Route {
        method: "get",
        path: "/api/agent/list",
        id: "listAgents",
        summary: "the team's agents",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("AgentList")),
        errors: &[],
    },
    Route {
        method: "get",
        path: "/api/agent/{id}",
        id: "getAgent",
        summary: "one agent of the team",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("AgentEnvelope")),
        errors: &[400, 404],
    },
    Route {
        method: "delete",
        path: "/api/agent/{id}",
        id: "killAgent",
        summary: "kill an agent (its owner only)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (202, Reply::Json("Accepted")),
        errors: &[400, 403, 404, 409],
    },
    Route {
        method: "get",
        path: "/api/agent/{id}/output",
        id: "getAgentOutput",
        summary: "a page of an agent's output, from `fromSeq`",
        auth: true,
        query: &[
            Param {
                name: "fromSeq",
                schema: "integer",
                description: "first sequence number wanted (default 0)",
            },
            Param {
                name: "limit",
                schema: "integer",
                description: "most chunks wanted (default and cap chosen by the server)",
            },
        ],
        body: Body::None,
        ok: (200, Reply::Json("OutputPage")),
        errors: &[400, 404],
    },
    Route {
        method: "get",
        path: "/api/agent/permissions",
        id: "listAgentPermissions",
        summary: "the tool uses the team's agents wait on (any member reads; only each agent's \
                  owner answers), oldest first",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("PermissionList")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/agent/{id}/permissions/{requestId}",
        id: "answerAgentPermission",
        summary: "allow or deny a tool use one of the caller's agents waits on (its owner only; \
                  the first answer wins, a later one is answered 409)",
        auth: true,
        query: &[],
        body: Body::Json("AnswerPermission"),
        ok: (200, Reply::Json("PermissionEnvelope")),
        errors: &[403, 404, 409],
    },
    Route {
        method: "get",
        path: "/api/openapi.json",
        id: "openapi",
        summary: "this document",
        auth: false,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("OpenApi")),
        errors: &[],
    },
    Route {
        method: "get",
        path: "/healthz",
        id: "healthz",
        summary: "liveness: the process answers (not rate limited)",
        auth: false,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Text),
        errors: &[],
    },
    Route {
        method: "get",
        path: "/readyz",
        id: "readyz",
        summary: "readiness: 503 until the team fan-out is subscribed and while draining (not rate limited)",
        auth: false,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Text),
        errors: &[503],
    },
    Route {
        method: "post",
        path: "/api/chat/message",
        id: "postChatMessage",
        summary: "post to the team chat (1 to 4000 characters, trimmed); the team receives it as `chat_message`",
        auth: true,
        query: &[],
        body: Body::Json("PostMessage"),
        ok: (201, Reply::Json("MessageEnvelope")),
        errors: &[403],
    },
    Route {
        method: "get",
        path: "/api/chat/history",
        id: "chatHistory",
        summary: "a page of the team chat: the newest `limit` messages before the cursor, oldest first",
        auth: true,
        query: &[
            Param {
                name: "before",
                schema: "integer",
                description: "only messages before this instant (ms since the epoch); to page back, the first message's timestamp",
            },
            Param {
                name: "beforeId",
                schema: "string",
                description: "with `before`: at that instant, only messages with a smaller id (the first message's id)",
            },
            Param {
                name: "limit",
                schema: "integer",
                description: "most messages wanted (default 50, at most 200)",
            },
        ],
        body: Body::None,
        ok: (200, Reply::Json("ChatHistory")),
        errors: &[400, 403],
    },
    Route {
        method: "get",
        path: "/api/team/presence",
        id: "teamPresence",
        summary: "every member of the caller's team with their presence (`offline` when none is live)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("TeamPresenceView")),
        errors: &[403],
    },
    Route {
        method: "post",
        path: "/api/vm/register",
        id: "registerVm",
        summary: "register a VM for the caller (`local`, `dial_in`, or `ssh_proxy` with host, username and exactly one of privateKey or password; the secret is never returned)",
        auth: true,
        query: &[],
        body: Body::Json("RegisterVm"),
        ok: (201, Reply::Json("VmEnvelope")),
        errors: &[503],
    },
    Route {
        method: "put",
        path: "/api/vm/update",
        id: "updateVm",
        summary: "change one of the caller's VMs: name, SSH host, port, username, project dir, default (another member's VM is 404)",
        auth: true,
        query: &[],
        body: Body::Json("UpdateVm"),
        ok: (200, Reply::Json("VmEnvelope")),
        errors: &[404],
    },
    Route {
        method: "post",
        path: "/api/vm/token",
        id: "createVmToken",
        summary: "mint the token a `dial_in` or `ssh_proxy` VM's `vm-agent daemon` presents (replaces any previous one; shown once)",
        auth: true,
        query: &[],
        body: Body::Json("CreateVmToken"),
        ok: (201, Reply::Json("VmToken")),
        errors: &[404],
    },
    Route {
        method: "get",
        path: "/api/vm/list",
        id: "listVms",
        summary: "the caller's own VMs (a default `local` VM when they have none)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("VmList")),
        errors: &[],
    },
    Route {
        method: "get",
        path: "/api/vm/{id}",
        id: "getVm",
        summary: "one of the caller's VMs: strategy, host key fingerprint, health (another member's VM is 404)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("VmEnvelope")),
        errors: &[404],
    },
    Route {
        method: "delete",
        path: "/api/vm/{id}",
        id: "deleteVm",
        summary: "remove one of the caller's VMs with its credential",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("Accepted")),
        errors: &[404],
    },
    Route {
        method: "post",
        path: "/api/vm/{id}/credential",
        id: "replaceVmCredential",
        summary: "replace the secret of one of the caller's `ssh_proxy` VMs (never returned)",
        auth: true,
        query: &[],
        body: Body::Json("ReplaceVmCredential"),
        ok: (200, Reply::Json("VmEnvelope")),
        errors: &[404, 503],
    },
    Route {
        method: "post",
        path: "/api/vm/{id}/host-key/accept",
        id: "acceptVmHostKey",
        summary: "pin the changed host key the VM presented, given the fingerprint the owner checked",
        auth: true,
        query: &[],
        body: Body::Json("AcceptHostKey"),
        ok: (200, Reply::Json("VmEnvelope")),
        errors: &[404, 409],
    },
    Route {
        method: "get",
        path: "/api/vm/{id}/audit",
        id: "listVmAudit",
        summary: "the audit log of one of the caller's VMs, newest first: every access and agent control",
        auth: true,
        query: &[
            Param {
                name: "before",
                schema: "integer",
                description: "only entries older than this entry id",
            },
            Param {
                name: "limit",
                schema: "integer",
                description: "at most this many (default 50, at most 200)",
            },
        ],
        body: Body::None,
        ok: (200, Reply::Json("AuditPage")),
        errors: &[404],
    },
    Route {
        method: "get",
        path: "/api/preview",
        id: "getPreview",
        summary: "the team's shared preview: URL, commit, status and when",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("PreviewEnvelope")),
        errors: &[],
    },
    Route {
        method: "get",
        path: "/api/preview/deployments",
        id: "listPreviewDeployments",
        summary: "the team's preview deploys, newest first, with their log tails",
        auth: true,
        query: &[Param {
            name: "limit",
            schema: "integer",
            description: "at most this many (default 20, at most 100)",
        }],
        body: Body::None,
        ok: (200, Reply::Json("DeploymentList")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/preview/access",
        id: "previewAccess",
        summary: "a short-lived HttpOnly cookie, scoped to /preview/TEAM/, that opens the team's preview (proxied, members only) in a frame",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("PreviewAccess")),
        errors: &[],
    },
    Route {
        method: "post",
        path: "/api/preview/deploy",
        id: "redeployPreview",
        summary: "deploy the newest known commit again (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (202, Reply::Json("DeploymentEnvelope")),
        errors: &[403, 409],
    },
    Route {
        method: "get",
        path: "/api/preview/config",
        id: "getPreviewConfig",
        summary: "the team's preview configuration and webhook URL, never its secret (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (200, Reply::Json("PreviewConfigEnvelope")),
        errors: &[403],
    },
    Route {
        method: "put",
        path: "/api/preview/config",
        id: "putPreviewConfig",
        summary: "set the team's preview configuration (owners and admins); the first one answers the team's webhook secret, once",
        auth: true,
        query: &[],
        body: Body::Json("PutPreviewConfig"),
        ok: (200, Reply::Json("PutPreviewConfigAnswer")),
        errors: &[403, 503],
    },
    Route {
        method: "post",
        path: "/api/preview/config/webhook-secret",
        id: "rotateWebhookSecret",
        summary: "a new webhook secret for the team, shown once; the old one is refused from now on (owners and admins)",
        auth: true,
        query: &[],
        body: Body::None,
        ok: (201, Reply::Json("WebhookSecret")),
        errors: &[403, 409, 503],
    },
    Route {
        method: "post",
        path: "/api/webhook/push",
        id: "receivePushWebhook",
        summary: "GitHub push webhook for the team's shared preview (content type application/json, up to 25 MB); \
            the preview service checks X-Hub-Signature-256 (HMAC-SHA256 of the raw body under the team's \
            own secret, sha256= form) and de-duplicates by X-GitHub-Delivery; ping, other events and pushes \
            to another repository or branch are acknowledged and ignored; 401 on a missing or wrong \
            signature, or a team with no preview configured",
        auth: false,
        query: &[Param {
            name: "team",
            schema: "string",
            description: "the team whose preview this repository feeds",
        }],
        body: Body::Json("GithubPush"),
        ok: (202, Reply::Json("WebhookAck")),
        errors: &[401],
    },
];

static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// `GET /api/openapi.json`.
pub(crate) async fn serve() -> Json<&'static Value> {
    Json(&DOCUMENT)
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": schema_ref(schema)}})
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect();
    parameters.extend(route.query.iter().map(|p| {
        let mut schema = json!({"type": p.schema});
        if p.schema == "integer" {
            schema["minimum"] = json!(0);
        }
        json!({"name": p.name, "in": "query", "required": false, "description": p.description,
               "schema": schema})
    }));

    let mut responses = Map::new();
    let (status, reply) = &route.ok;
    let ok = match reply {
        Reply::Json(schema) => {
            json!({"description": reason(*status), "content": json_content(schema)})
        }
        Reply::Text => json!({"description": reason(*status),
                              "content": {"text/plain": {"schema": {"type": "string"}}}}),
    };
    responses.insert(status.to_string(), ok);
    let mut errors: Vec<u16> = vec![429, 500, 503];
    errors.extend_from_slice(route.errors);
    if route.auth {
        errors.push(401);
    }
    if !matches!(route.body, Body::None) {
        errors.extend([400, 413]);
    }
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        let mut response = json!({"description": reason(status), "content": json_content("Error")});
        if status == 429 || status == 503 {
            response["headers"] = json!({"Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "integer"}}});
        }
        responses.insert(status.to_string(), response);
    }

    let tag = route
        .path
        .trim_start_matches('/')
        .trim_start_matches("api/")
        .split(['/', '.'])
        .next()
        .unwrap_or("api");
    let mut op = json!({
        "operationId": route.id,
        "summary": route.summary,
        "tags": [tag],
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if route.auth {
        op["security"] = json!([{"bearer": []}]);
    }
    match route.body {
        Body::None => {}
        Body::Json(schema) => {
            op["requestBody"] = json!({"required": true, "content": json_content(schema)});
        }
        Body::OptionalJson(schema) => {
            op["requestBody"] = json!({"required": false, "content": json_content(schema)});
        }
    }
    op
}

fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CoVibe gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST for phones and browsers. Every error is {\"error\": {\"code\", \"message\"}}. \
                Live events (agent_output, agent_status, chat_message, team_presence, preview_updated, preview_failed, policy_updated, agent_permission, agent_permission_resolved) use Socket.io at /socket.io, not described here.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        },
    })
}

/// The JSON bodies, derived from the types the handlers read and write (each feature's
/// `json` module): the document describes what is serialized, field by field.
fn schemas() -> Value {
    use crate::{
        agents::json as agents, auth::json as auth, chat::json as chat, team::json as team,
    };
    let components = utoipa::openapi::ComponentsBuilder::new()
        .schema_from::<crate::http::error::ErrorBody>()
        .schema_from::<crate::http::error::ErrorDetail>()
        .schema_from::<team::Team>()
        .schema_from::<team::RoleName>()
        .schema_from::<team::AssignableRole>()
        .schema_from::<team::User>()
        .schema_from::<team::InviteInfo>()
        .schema_from::<auth::SessionInfo>()
        .schema_from::<agents::Agent>()
        .schema_from::<agents::AgentStatusName>()
        .schema_from::<agents::StreamName>()
        .schema_from::<chat::PresenceName>()
        .schema_from::<agents::OutputChunk>()
        .schema_from::<chat::ChatMessageView>()
        .schema_from::<chat::PresenceUserView>()
        .schema_from::<crate::vms::VmView>()
        .schema_from::<crate::preview::GithubRepository>()
        .schema_from::<team::CreateTeam>()
        .schema_from::<team::CreateInvite>()
        .schema_from::<team::NewInvite>()
        .schema_from::<team::InviteList>()
        .schema_from::<team::InviteEnvelope>()
        .schema_from::<team::TeamView>()
        .schema_from::<team::MemberEnvelope>()
        .schema_from::<team::Done>()
        .schema_from::<team::SetRole>()
        .schema_from::<team::Transfer>()
        .schema_from::<team::PolicyRules>()
        .schema_from::<team::TeamPolicyPut>()
        .schema_from::<team::PolicyView>()
        .schema_from::<auth::Login>()
        .schema_from::<auth::Refresh>()
        .schema_from::<auth::Session>()
        .schema_from::<auth::TokenPair>()
        .schema_from::<auth::Me>()
        .schema_from::<auth::SignInCode>()
        .schema_from::<auth::RedeemCode>()
        .schema_from::<auth::SessionList>()
        .schema_from::<auth::Ended>()
        .schema_from::<agents::Spawn>()
        .schema_from::<agents::AgentEnvelope>()
        .schema_from::<agents::AgentList>()
        .schema_from::<agents::Accepted>()
        .schema_from::<agents::OutputPage>()
        .schema_from::<agents::PermissionRequest>()
        .schema_from::<agents::PermissionStateName>()
        .schema_from::<agents::PermissionDecisionName>()
        .schema_from::<agents::AnswerPermission>()
        .schema_from::<agents::PermissionList>()
        .schema_from::<agents::PermissionEnvelope>()
        .schema_from::<chat::PostMessage>()
        .schema_from::<chat::MessageEnvelope>()
        .schema_from::<chat::ChatHistory>()
        .schema_from::<chat::TeamPresenceView>()
        .schema_from::<crate::vms::RegisterVm>()
        .schema_from::<crate::vms::UpdateVm>()
        .schema_from::<crate::vms::CreateVmToken>()
        .schema_from::<crate::vms::VmToken>()
        .schema_from::<crate::vms::VmEnvelope>()
        .schema_from::<crate::vms::VmList>()
        .schema_from::<crate::vms::ReplaceVmCredential>()
        .schema_from::<crate::vms::AcceptHostKey>()
        .schema_from::<crate::vms::AuditEntry>()
        .schema_from::<crate::vms::AuditPage>()
        .schema_from::<crate::preview::GithubPush>()
        .schema_from::<crate::preview::WebhookAck>()
        .schema_from::<crate::preview::PreviewView>()
        .schema_from::<crate::preview::PreviewEnvelope>()
        .schema_from::<crate::preview::PreviewConfigView>()
        .schema_from::<crate::preview::PreviewConfigEnvelope>()
        .schema_from::<crate::preview::PutPreviewConfig>()
        .schema_from::<crate::preview::PutPreviewConfigAnswer>()
        .schema_from::<crate::preview::WebhookSecret>()
        .schema_from::<crate::preview::DeploymentView>()
        .schema_from::<crate::preview::PreviewAccess>()
        .schema_from::<crate::preview::DeploymentList>()
        .schema_from::<crate::preview::DeploymentEnvelope>()
        .build();
    let mut schemas = serde_json::to_value(&components)
        .map(|c| c["schemas"].clone())
        .unwrap_or_default();
    // The one answer that is not ours to describe field by field.
    schemas["OpenApi"] = json!({"type": "object", "description": "an OpenAPI 3.1 document"});
    schemas
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema that exists, and every route's operation id is unique.
    #[test]
    fn references_resolve_and_ids_are_unique() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r}");
        }
        let mut ids: Vec<&str> = ROUTES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "operation ids are unique");
    }

    /// The web client's types are generated from `web/openapi.json`: it must be this document.
    /// `COVIBE_UPDATE_OPENAPI=1 cargo nextest run -p covibe-gateway -E 'test(web_client)'`
    /// rewrites it after an API change.
    #[test]
    fn the_web_clients_copy_is_this_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/openapi.json");
        let ours = serde_json::to_string_pretty(&*DOCUMENT).unwrap() + "\n";
        if std::env::var_os("COVIBE_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &ours).unwrap();
        }
        let theirs = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            theirs == ours,
            "web/openapi.json is not the gateway's OpenAPI document; regenerate it with \
             COVIBE_UPDATE_OPENAPI=1 cargo nextest run -p covibe-gateway -E 'test(web_client)'"
        );
    }
}
