//! The OpenAPI 3.1 description served at `GET /api/openapi.json`, built from [`ROUTES`].
//!
//! Adding a route to `rest::router` means adding a row here (and its body's schema to
//! [`schemas`] if it is new): `gateway/tests/gateway.rs` calls every row against the router and
//! fails on any `.route(...)` in `src/` that has no row, and on any row the router lacks.

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
        ok: (201, Reply::Json("Invite")),
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
        ok: (200, Reply::Json("Ok")),
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
        body: Body::Json("TransferOwnership"),
        ok: (200, Reply::Json("TeamView")),
        errors: &[403, 404, 409],
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
        ok: (202, Reply::Json("Ok")),
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
        ok: (201, Reply::Json("ChatMessageEnvelope")),
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
        ok: (200, Reply::Json("TeamPresence")),
        errors: &[403],
    },
    Route {
        method: "post",
        path: "/api/vm/register",
        id: "registerVm",
        summary: "register a VM for the caller (strategy `local` or `dial_in`)",
        auth: true,
        query: &[],
        body: Body::Json("RegisterVm"),
        ok: (201, Reply::Json("VmEnvelope")),
        errors: &[],
    },
    Route {
        method: "put",
        path: "/api/vm/update",
        id: "updateVm",
        summary: "rename one of the caller's VMs (another member's VM is 404)",
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
        summary: "mint the token a `dial_in` VM's `vm-agent daemon` presents (replaces any previous one; shown once)",
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
        method: "post",
        path: "/api/webhook/push",
        id: "receivePushWebhook",
        summary: "GitHub push webhook for the team's shared preview (content type application/json); \
            the preview service checks X-Hub-Signature-256 (HMAC-SHA256 of the raw body, sha256= form) \
            and de-duplicates by X-GitHub-Delivery; events other than X-GitHub-Event: push are \
            acknowledged and ignored; 401 on a missing or wrong signature, 503 when no webhook secret \
            is configured",
        auth: false,
        query: &[Param {
            name: "team",
            schema: "string",
            description: "the team whose preview this repository feeds",
        }],
        body: Body::Json("PushEvent"),
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
                Live events (agent_output, agent_status, chat_message, team_presence, preview_updated) use Socket.io at /socket.io, not described here.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        },
    })
}

fn string() -> Value {
    json!({"type": "string"})
}

fn millis() -> Value {
    json!({"type": "integer", "format": "int64", "description": "milliseconds since the Unix epoch"})
}

fn device_name() -> Value {
    json!({"type": "string", "description": "what the sessions list calls this device; left out: from the User-Agent"})
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// An object schema: `required` names first, then the optional ones.
fn object(required: &[(&str, Value)], optional: &[(&str, Value)], closed: bool) -> Value {
    let properties: Map<String, Value> = required
        .iter()
        .chain(optional)
        .map(|(name, schema)| ((*name).to_owned(), schema.clone()))
        .collect();
    let names: Vec<&str> = required.iter().map(|(name, _)| *name).collect();
    let mut schema = json!({"type": "object", "required": names, "properties": properties});
    if closed {
        schema["additionalProperties"] = Value::Bool(false);
    }
    schema
}

/// The JSON bodies of accounts: sessions, codes, invites, members.
fn account_schemas() -> Value {
    let uint = || json!({"type": "integer", "minimum": 0});
    json!({
        "RedeemCode": object(&[("code", string())], &[("deviceName", device_name())], true),
        "SignInCode": object(&[
            ("code", json!({"type": "string", "description": "XXXX-XXXX-XXXX-XXXX, shown once"})),
            ("expiresAt", millis()),
            ("qrPayload", json!({"type": "string", "description": "what to show as a QR code"})),
        ], &[], false),
        "SessionInfo": object(&[
            ("id", string()),
            ("deviceName", string()),
            ("createdAt", millis()),
            ("lastUsedAt", millis()),
            ("current", json!({"type": "boolean", "description": "the session of this request"})),
        ], &[], false),
        "SessionList": object(&[("sessions", json!({"type": "array", "items": schema_ref("SessionInfo")}))], &[], false),
        "Me": object(&[("team", nullable(schema_ref("Team"))), ("user", nullable(schema_ref("User"))),
                       ("session", nullable(schema_ref("SessionInfo")))], &[], false),
        "Ended": object(&[("ended", json!({"type": "integer", "minimum": 0,
                                             "description": "how many sessions ended"}))], &[], false),
        "InviteInfo": object(&[
            ("id", string()), ("createdBy", string()), ("createdAt", millis()), ("expiresAt", millis()),
            ("maxUses", uint()), ("uses", uint()), ("revoked", json!({"type": "boolean"})),
            ("usable", json!({"type": "boolean"})),
        ], &[], false),
        "InviteList": object(&[("invites", json!({"type": "array", "items": schema_ref("InviteInfo")}))], &[], false),
        "InviteEnvelope": object(&[("invite", schema_ref("InviteInfo"))], &[], false),
        "SetRole": object(&[("role", json!({"type": "string", "enum": ["admin", "member"]}))], &[], true),
        "TransferOwnership": object(&[("userId", string())], &[], true),
        "MemberEnvelope": object(&[("member", schema_ref("User"))], &[], false),
    })
}

/// The JSON bodies, as `dto` reads and writes them.
fn schemas() -> Value {
    let mut all = base_schemas();
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), account_schemas()) {
        all.extend(more);
    }
    all
}

fn base_schemas() -> Value {
    let codes = [
        "invalid_argument",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "already_exists",
        "conflict",
        "payload_too_large",
        "rate_limited",
        "unavailable",
        "internal",
    ];
    let statuses = [
        "pending",
        "starting",
        "running",
        "completed",
        "failed",
        "killed",
        "lost",
        "unknown",
    ];
    let team = object(
        &[
            ("id", string()),
            ("name", string()),
            ("createdAt", millis()),
        ],
        &[],
        false,
    );
    let user = object(
        &[
            ("id", string()),
            ("teamId", string()),
            ("email", string()),
            ("displayName", string()),
            ("createdAt", millis()),
            (
                "role",
                json!({"type": "string", "enum": ["owner", "admin", "member"]}),
            ),
        ],
        &[],
        false,
    );
    let tokens = [
        ("accessToken", string()),
        ("refreshToken", string()),
        ("accessExpiresAt", millis()),
    ];
    let mut session_fields = vec![
        ("team", nullable(schema_ref("Team"))),
        ("user", nullable(schema_ref("User"))),
    ];
    session_fields.extend(tokens.iter().cloned());
    let int = || json!({"type": "integer"});
    let uint = || json!({"type": "integer", "minimum": 0});
    let agent = object(
        &[
            ("id", string()),
            ("teamId", string()),
            (
                "owner",
                json!({"type": "string", "description": "the owner's user id"}),
            ),
            ("vmId", string()),
            ("task", string()),
            ("status", json!({"type": "string", "enum": statuses})),
            ("exitCode", nullable(int())),
            ("createdAt", millis()),
            ("startedAt", nullable(millis())),
            ("finishedAt", nullable(millis())),
            (
                "outputSeq",
                json!({"type": "integer", "minimum": 0,
                                 "description": "output chunks stored so far (the next seq)"}),
            ),
            ("costUsd", nullable(json!({"type": "number"}))),
            ("turns", nullable(int())),
            ("durationMs", nullable(int())),
        ],
        &[],
        false,
    );
    let chunk = object(
        &[
            ("seq", uint()),
            (
                "stream",
                json!({"type": "string", "enum": ["stdout", "stderr"]}),
            ),
            ("data", string()),
            (
                "event",
                json!({"type": "object",
                             "description": "the line as Claude Code stream-json ({\"kind\": \"raw\"} when it is not)"}),
            ),
        ],
        &[],
        false,
    );
    json!({
        "Error": object(&[("error", object(
            &[("code", json!({"type": "string", "enum": codes})), ("message", string())],
            &[], false))], &[], false),
        "CreateTeam": object(
            &[("name", string()), ("email", string()), ("displayName", string())],
            &[("deviceName", device_name())], true),
        "Login": object(
            &[("inviteCode", string()), ("email", string()), ("displayName", string())],
            &[("deviceName", device_name())], true),
        "Refresh": object(&[("refreshToken", string())], &[], true),
        "CreateInvite": object(&[], &[
            ("maxUses", json!({"type": "integer", "minimum": 0, "description": "0: the server's default"})),
            ("expiresInHours", json!({"type": "integer", "minimum": 0, "description": "0: the server's default"})),
            ("ttlSeconds", json!({"type": "integer", "minimum": 0, "description": "the older spelling of expiresInHours, in seconds"})),
        ], true),
        "Spawn": object(&[("task", string())], &[("vmId", nullable(string()))], true),
        "Team": team,
        "User": user,
        "Session": object(&session_fields, &[("inviteCode", string())], false),
        "TokenPair": object(&tokens, &[], false),
        "Invite": object(&[("id", string()), ("inviteCode", string()), ("expiresAt", millis()), ("maxUses", uint())], &[], false),
        "TeamView": object(&[("team", nullable(schema_ref("Team"))),
                             ("members", json!({"type": "array", "items": schema_ref("User")}))], &[], false),
        "Agent": agent,
        "AgentEnvelope": object(&[("agent", schema_ref("Agent"))], &[], false),
        "AgentList": object(&[("agents", json!({"type": "array", "items": schema_ref("Agent")}))], &[], false),
        "OutputChunk": chunk,
        "OutputPage": object(&[("agentId", string()),
                               ("chunks", json!({"type": "array", "items": schema_ref("OutputChunk")})),
                               ("nextSeq", uint())], &[], false),
        "Ok": object(&[("ok", json!({"type": "boolean"}))], &[], false),
        "OpenApi": json!({"type": "object", "description": "an OpenAPI 3.1 document"}),
        "PostMessage": object(&[("message", string())], &[], true),
        "ChatMessage": object(&[("id", string()), ("userId", string()), ("displayName", string()),
                                ("message", string()), ("timestamp", millis())], &[], false),
        "ChatMessageEnvelope": object(&[("message", schema_ref("ChatMessage"))], &[], false),
        "ChatHistory": object(&[
            ("messages", json!({"type": "array", "items": schema_ref("ChatMessage"),
                                "description": "oldest first"})),
            ("hasMore", json!({"type": "boolean", "description": "older messages exist"})),
        ], &[], false),
        "PresenceUser": object(&[
            ("userId", string()),
            ("displayName", string()),
            ("status", json!({"type": "string", "enum": ["online", "away", "busy", "offline"]})),
            ("lastSeen", json!({"type": "integer", "format": "int64",
                                "description": "milliseconds since the Unix epoch; 0 when unknown"})),
        ], &[], false),
        "TeamPresence": object(&[("users", json!({"type": "array", "items": schema_ref("PresenceUser")}))], &[], false),
        "RegisterVm": object(&[("name", string())], &[
            ("strategy", nullable(json!({"type": "string", "enum": ["local", "dial_in"],
                                         "description": "left out: local"}))),
        ], true),
        "UpdateVm": object(&[("vmId", string()), ("name", string())], &[], true),
        "CreateVmToken": object(&[("vmId", string())], &[], true),
        "VmToken": object(&[("vmToken", string())], &[], false),
        "Vm": object(&[("id", string()), ("userId", string()), ("name", string()),
                       ("strategy", string()), ("lastSeen", millis())], &[], false),
        "VmEnvelope": object(&[("vm", schema_ref("Vm"))], &[], false),
        "VmList": object(&[("vms", json!({"type": "array", "items": schema_ref("Vm")}))], &[], false),
        "PushEvent": object(&[
            ("ref", string()),
            ("after", json!({"type": "string", "description": "the pushed commit's sha"})),
            ("repository", object(&[("full_name", string())], &[], false)),
        ], &[("deleted", json!({"type": "boolean"}))], false),
        "WebhookAck": object(&[
            ("accepted", json!({"type": "boolean", "description": "false: not a push, ignored"})),
            ("duplicate", json!({"type": "boolean", "description": "this delivery was already received"})),
            ("commit", nullable(string())),
        ], &[], false),
    })
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
}
