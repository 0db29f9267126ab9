//! The front door's limits, in one middleware around every route: rate limits per address and
//! per member (and a tighter one per address on sign-in, where invite codes could be guessed),
//! a cap on requests in flight, and a deadline per request. It also turns any error the layers
//! below answer in plain text (axum's own rejections, `tower-http`'s file service) into the
//! API's JSON error shape. `/healthz` and `/readyz` pass untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use covibe_identity::Verifier;
use covibe_types::{ApiError, Code, UserId};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::http::error::HttpError;
use crate::http::rate_limit::{KeyedBuckets, Rate};
use covibe_identity::Verifier as TokenVerifier;

/// Most keys each rate limiter tracks at once (about 100 bytes each).
const MAX_TRACKED_KEYS: usize = 100_000;

/// Sign-in, over REST and over gRPC-web: its own, tighter per-address limit.
const LOGIN_PATHS: [&str; 4] = [
    "/api/auth/login",
    "/covibe.auth.v1.AuthService/Login",
    "/api/auth/device/redeem",
    "/covibe.auth.v1.AuthService/RedeemSignInCode",
];

/// The gateway's limits, from `limits` in the configuration.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub rate_per_ip_per_sec: f64,
    pub burst_per_ip: u32,
    pub rate_per_user_per_sec: f64,
    pub burst_per_user: u32,
    pub login_per_ip_per_min: f64,
    pub login_burst_per_ip: u32,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// Take the client's address from the last `X-Forwarded-For` entry (behind a proxy only).
    pub trust_forwarded_for: bool,
}

/// The limiters' state, one per gateway.
pub(crate) struct Limiters {
    /// Names the member of a bearer token, for the per-member limit.
    verifier: TokenVerifier,
    per_ip: KeyedBuckets<IpAddr>,
    login_per_ip: KeyedBuckets<IpAddr>,
    per_user: KeyedBuckets<UserId>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    trust_forwarded_for: bool,
    /// The largest body a REST route takes (the webhook's is larger).
    max_body: usize,
}

impl Limiters {
    pub(crate) fn new(limits: &HttpLimits, max_body: usize, verifier: TokenVerifier) -> Self {
        Self {
            max_body,
            verifier,
            per_ip: KeyedBuckets::new(
                Rate::new(limits.rate_per_ip_per_sec, limits.burst_per_ip),
                MAX_TRACKED_KEYS,
            ),
            login_per_ip: KeyedBuckets::new(
                Rate::new(
                    limits.login_per_ip_per_min / 60.0,
                    limits.login_burst_per_ip,
                ),
                MAX_TRACKED_KEYS,
            ),
            per_user: KeyedBuckets::new(
                Rate::new(limits.rate_per_user_per_sec, limits.burst_per_user),
                MAX_TRACKED_KEYS,
            ),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            timeout: limits.request_timeout,
            trust_forwarded_for: limits.trust_forwarded_for,
        }
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(limiters, guard)`.
pub(crate) async fn guard(
    State(limits): State<Arc<Limiters>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let path = path.as_str();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    let now = Instant::now();
    let ip = client_ip(&request, limits.trust_forwarded_for);
    let sockets = path == SOCKET_IO_PATH;
    if sockets {
        // Socket.IO caps the sessions of this address (as this guard names it).
        request
            .extensions_mut()
            .insert(covibe_socketio::ClientAddress(ip));
        if is_long_poll(&request) {
            // A long-poll waits for frames by design, one at a time per session: the session
            // cap bounds them, not the rate, in-flight or deadline limits.
            return next.run(request).await;
        }
    }
    if let Err(wait) = limits.per_ip.check(ip, now) {
        tracing::debug!(%ip, "rate limited by address");
        return too_many(wait, "too many requests from your address, slow down");
    }
    if request.method() == Method::POST
        && LOGIN_PATHS.contains(&path)
        && let Err(wait) = limits.login_per_ip.check(ip, now)
    {
        tracing::warn!(%ip, "sign-in attempts rate limited");
        return too_many(wait, "too many sign-in attempts, wait before trying again");
    }
    if let Some(user) = bearer_user(request.headers(), &limits.verifier)
        && let Err(wait) = limits.per_user.check(user, now)
    {
        tracing::debug!(user_id = %user, "rate limited by member");
        return too_many(wait, "too many requests, slow down");
    }
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        tracing::warn!("too many requests in flight; shedding");
        return busy("the server is busy, try again");
    };
    if let Some(length) = declared_length(request.headers())
        && path.starts_with("/api/")
        && length > limits.body_limit(path)
    {
        return too_large(request, length).await;
    }
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => json_errors(response),
        Err(_) => {
            tracing::warn!(timeout = ?limits.timeout, "request timed out");
            busy("the request took too long, try again")
        }
    }
}

const SOCKET_IO_PATH: &str = "/socket.io/";

pub(crate) use covibe_proto::limits::MAX_POLICY_BODY_BYTES as POLICY_BODY_BYTES;
pub(crate) use covibe_proto::limits::MAX_WEBHOOK_BYTES as WEBHOOK_BODY_BYTES;
/// The routes that take bodies past the configured limit (routed in `http::router` as
/// literals, which the OpenAPI test reads): GitHub's pushes, and whole tool-use policies.
const WEBHOOK_PATH: &str = "/api/webhook/push";
const POLICY_PATHS: [&str; 2] = ["/api/team/policy", "/api/team/policy/mine"];

/// A long-polling `GET` of an open Socket.IO session (not a handshake, not a WebSocket).
fn is_long_poll(request: &Request) -> bool {
    let query = request.uri().query().unwrap_or("");
    request.method() == Method::GET
        && query.split('&').any(|pair| pair.starts_with("sid="))
        && query.split('&').any(|pair| pair == "transport=polling")
}

/// Bytes of an over-limit body read and dropped before the 413 goes out, and the time spent.
const DRAIN_BYTES: u64 = 32 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

impl Limiters {
    fn body_limit(&self, path: &str) -> u64 {
        let limit = if path == WEBHOOK_PATH {
            WEBHOOK_BODY_BYTES.max(self.max_body)
        } else if POLICY_PATHS.contains(&path) {
            POLICY_BODY_BYTES.max(self.max_body)
        } else {
            self.max_body
        };
        u64::try_from(limit).unwrap_or(u64::MAX)
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A body over its route's limit: answered `413`, but only once the client has sent it (up to
/// a bound). A client still sending when the connection closes sees a reset (Node's `fetch`:
/// `EPIPE`) instead of the answer that says what was wrong.
async fn too_large(request: Request, length: u64) -> Response {
    use futures::StreamExt as _;
    tracing::debug!(length, "request body over the limit; refused");
    if length <= DRAIN_BYTES {
        let mut body = request.into_body().into_data_stream();
        let mut read: u64 = 0;
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            while read < DRAIN_BYTES {
                match body.next().await {
                    Some(Ok(data)) => read += data.len() as u64,
                    Some(Err(_)) | None => break,
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(read, "a refused body was sent too slowly; closing");
        }
    }
    let mut response = HttpError(ApiError::new(
        Code::PayloadTooLarge,
        "request body is too large",
    ))
    .into_response();
    // What is left of the body is not read: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The peer's address, or the proxy's word for it when configured to trust one. IPv6 clients
/// are keyed by their /64, which one machine usually owns whole.
fn client_ip(request: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| forwarded_for(request.headers()))
        .flatten();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let ip = forwarded
        .or(peer)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// The last `X-Forwarded-For` entry: the one our proxy appended. Earlier entries come from the
/// client and prove nothing.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The member a valid bearer token names; anything else is left to the route to refuse.
fn bearer_user(headers: &HeaderMap, verifier: &Verifier) -> Option<UserId> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    let (user, _team) = verifier.verify(token).ok()?.member().ok()?;
    Some(user)
}

fn too_many(wait: Duration, message: &str) -> Response {
    let mut response = HttpError(ApiError::new(Code::RateLimited, message)).into_response();
    let secs = wait.as_secs_f64().ceil().max(1.0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    response
}

fn busy(message: &str) -> Response {
    let mut response = HttpError(ApiError::unavailable(message)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Rewrites a plain-text error response in the API's shape, keeping its status and headers.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    // JSON already, or gRPC(-web), whose clients read errors from `grpc-status`.
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("application/grpc"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let (code, message) = match status {
        StatusCode::UNAUTHORIZED => (Code::Unauthenticated, "authentication required"),
        StatusCode::FORBIDDEN => (Code::PermissionDenied, "not allowed"),
        StatusCode::NOT_FOUND => (Code::NotFound, "not found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            (Code::InvalidArgument, "method not allowed on this path")
        }
        StatusCode::CONFLICT => (Code::Conflict, "conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => (Code::PayloadTooLarge, "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            Code::InvalidArgument,
            "expected a JSON body (content-type: application/json)",
        ),
        StatusCode::TOO_MANY_REQUESTS => (Code::RateLimited, "too many requests, slow down"),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            (Code::Unavailable, "a service is unavailable, try again")
        }
        s if s.is_server_error() => (Code::Internal, "internal error"),
        _ => (Code::InvalidArgument, "bad request"),
    };
    let body = json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request {
        let mut request = Request::new(Body::empty());
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(value) = forwarded {
            request
                .headers_mut()
                .insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        request
    }

    #[test]
    fn forwarded_for_is_trusted_only_when_configured() {
        let req = request("10.0.0.1:5000", Some("6.6.6.6, 1.2.3.4"));
        assert_eq!(
            client_ip(&req, false),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&req, true), "1.2.3.4".parse::<IpAddr>().unwrap());
        let req = request("10.0.0.1:5000", Some("garbage"));
        assert_eq!(client_ip(&req, true), "10.0.0.1".parse::<IpAddr>().unwrap());
        let req = request("[2001:db8:1:2:3:4:5:6]:5000", None);
        assert_eq!(
            client_ip(&req, false),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap(),
            "IPv6 is keyed by /64"
        );
        let req = request("[::ffff:1.2.3.4]:5000", None);
        assert_eq!(client_ip(&req, false), "1.2.3.4".parse::<IpAddr>().unwrap());
    }
}
