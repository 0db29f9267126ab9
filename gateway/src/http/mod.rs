//! The HTTP transport: the router of every REST route (each feature serves its own), the
//! extractors, the one error body, the limits, the OpenAPI document, gRPC-web and the web
//! client's files.

pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod grpc_web;
pub(crate) mod limits;
pub(crate) mod openapi;
mod rate_limit;
pub(crate) mod static_files;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::state::Gateway;
use crate::{agents, auth, chat, preview, team, vms};

/// Every route here has a row in `openapi::ROUTES` (the tests check both ways); layers go
/// after the routes, since `layer` wraps only the routes added before it.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.max_body_bytes;
    Router::new()
        .route("/api/team/create", post(team::create_team))
        .route("/api/team/invite", post(team::create_invite))
        .route("/api/team/invites", get(team::invites))
        .route("/api/team/invite/{id}", delete(team::revoke_invite))
        .route("/api/team", get(team::get_team))
        .route("/api/team/members/{id}", delete(team::remove_member))
        .route("/api/team/members/{id}/role", put(team::set_role))
        .route(
            "/api/team/members/{id}/recovery-code",
            post(team::recovery_code),
        )
        .route(
            "/api/team/transfer-ownership",
            post(team::transfer_ownership),
        )
        // A whole policy may be larger than other bodies (`limits::POLICY_BODY_BYTES`).
        .route(
            "/api/team/policy",
            get(team::get_policy)
                .put(team::put_team_policy)
                .layer(DefaultBodyLimit::max(
                    limits::POLICY_BODY_BYTES.max(max_body),
                )),
        )
        .route(
            "/api/team/policy/mine",
            put(team::put_my_policy).layer(DefaultBodyLimit::max(
                limits::POLICY_BODY_BYTES.max(max_body),
            )),
        )
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/me", get(auth::me))
        .route("/api/auth/device", post(auth::create_device_code))
        .route("/api/auth/device/redeem", post(auth::redeem_code))
        .route("/api/auth/sessions", get(auth::sessions))
        .route("/api/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/logout-all", post(auth::logout_all))
        .route("/api/agent/spawn", post(agents::spawn))
        .route("/api/agent/list", get(agents::list))
        .route("/api/agent/{id}", get(agents::get).delete(agents::kill))
        .route("/api/agent/{id}/output", get(agents::output))
        .route("/api/agent/permissions", get(agents::permissions::list))
        .route(
            "/api/agent/{id}/permissions/{requestId}",
            post(agents::permissions::answer_rest),
        )
        .route("/api/chat/message", post(chat::post_message))
        .route("/api/chat/history", get(chat::history))
        .route("/api/team/presence", get(chat::presence))
        .route("/api/vm/register", post(vms::register))
        .route("/api/vm/update", put(vms::update))
        .route("/api/vm/token", post(vms::create_token))
        .route("/api/vm/list", get(vms::list))
        .route("/api/vm/{id}", get(vms::get).delete(vms::delete))
        .route("/api/vm/{id}/credential", post(vms::replace_credential))
        .route("/api/vm/{id}/host-key/accept", post(vms::accept_host_key))
        .route("/api/vm/{id}/audit", get(vms::audit))
        .route("/api/preview", get(preview::get_preview))
        .route("/api/preview/deployments", get(preview::deployments))
        .route("/api/preview/access", post(preview::access))
        .route("/api/preview/deploy", post(preview::redeploy))
        .route(
            "/api/preview/config",
            get(preview::get_config).put(preview::put_config),
        )
        .route(
            "/api/preview/config/webhook-secret",
            post(preview::rotate_secret),
        )
        // GitHub sends up to 25 MB; this route alone takes that much.
        .route(
            "/api/webhook/push",
            post(preview::push).layer(DefaultBodyLimit::max(limits::WEBHOOK_BODY_BYTES)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(openapi::serve))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Everything the API does not route: the web client's files, or the API's 404.
async fn fallback(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    gw.site.respond(request).await
}
