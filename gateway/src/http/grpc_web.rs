//! gRPC-web (tonic-web) for browsers and React Native: the client-facing RPCs of `proto/`,
//! forwarded as they are to the service that owns them. Only the RPCs listed here are exposed;
//! internal ones (the vm-agent link, the vm-connector, auth → team calls) are not. The services
//! check every caller's token themselves, as they do for calls from the REST side.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body as AxumBody;
use covibe_bootstrap::Client;
use covibe_proto::tonic::{self, Status};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use tonic_web::GrpcWebLayer;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// (service, methods; empty = every method of the service)
const EXPOSED: &[(&str, &[&str])] = &[
    (
        "covibe.auth.v1.AuthService",
        &[
            "Register",
            "Login",
            "Refresh",
            "Verify",
            "Me",
            "CreateDeviceCode",
            "CreateRecoveryCode",
            "ListSessions",
            "RevokeSession",
            "Logout",
            "LogoutAll",
            "RedeemSignInCode",
        ],
    ),
    (
        "covibe.team.v1.TeamService",
        &[
            "CreateInvite",
            "ListInvites",
            "RevokeInvite",
            "GetTeam",
            "RemoveMember",
            "SetMemberRole",
            "TransferOwnership",
            "PostMessage",
            "ChatHistory",
            "UpdatePresence",
            "GetPresence",
        ],
    ),
    ("covibe.orchestrator.v1.OrchestratorService", &[]),
];

/// The upstream channels the forwarded calls go to.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Client,
    pub team: Client,
    pub orchestrator: Client,
}

fn exposed(path: &str) -> bool {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return false;
    };
    EXPOSED.iter().any(|(name, methods)| {
        *name == service && (methods.is_empty() || methods.contains(&method))
    })
}

/// Forwards one gRPC call (already translated from gRPC-web) to `upstream`.
async fn forward(
    mut upstream: Client,
    request: Request<tonic::body::Body>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if !exposed(request.uri().path()) {
        return Ok(Status::unimplemented("this method is not available over grpc-web").into_http());
    }
    let ready = match upstream.ready().await {
        Ok(ready) => ready,
        Err(err) => {
            tracing::warn!(error = %err, "grpc-web upstream unavailable");
            return Ok(Status::unavailable("a service is unavailable, try again").into_http());
        }
    };
    match ready.call(request).await {
        Ok(response) => Ok(response.map(tonic::body::Body::new)),
        Err(err) => {
            tracing::warn!(error = %err, "grpc-web upstream call failed");
            Ok(Status::unavailable("a service is unavailable, try again").into_http())
        }
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
        ])
}

/// The gRPC-web routes, one per exposed service, with CORS for `cors_origins` (`*` for any).
pub fn router(upstreams: &Upstreams, cors_origins: &[String]) -> Router {
    let mut router = Router::new();
    for (name, _) in EXPOSED {
        let upstream = match *name {
            "covibe.auth.v1.AuthService" => upstreams.auth.clone(),
            "covibe.team.v1.TeamService" => upstreams.team.clone(),
            _ => upstreams.orchestrator.clone(),
        };
        let inner = tower::service_fn(move |request| forward(upstream.clone(), request));
        let grpc_web = GrpcWebLayer::new().layer(inner);
        let service = tower::service_fn(move |request: Request<AxumBody>| {
            let mut grpc_web = grpc_web.clone();
            async move {
                let response = grpc_web.call(request).await?;
                Ok::<_, Infallible>(response.map(AxumBody::new))
            }
        });
        router = router.route_service(&format!("/{name}/{{method}}"), service);
    }
    router.layer(cors(cors_origins))
}

#[cfg(test)]
mod tests {
    use super::exposed;

    #[test]
    fn only_client_facing_methods_are_exposed() {
        assert!(exposed(
            "/covibe.orchestrator.v1.OrchestratorService/ListAgents"
        ));
        assert!(exposed("/covibe.auth.v1.AuthService/Login"));
        assert!(
            !exposed("/covibe.team.v1.TeamService/CreateTeam"),
            "internal: auth only"
        );
        assert!(!exposed("/covibe.vmagent.v1.AgentLink/Attach"));
        assert!(!exposed(
            "/covibe.vmconnector.v1.VmConnectorService/StartAgent"
        ));
        assert!(!exposed("garbage"));
    }
}
