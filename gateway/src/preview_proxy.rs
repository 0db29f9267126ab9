//! `/preview/TEAM/CAPABILITY/...`: the team's preview app, proxied (HTTP and WebSocket) for the
//! team's members only. A page in a frame cannot send a bearer header, and a sandboxed one no
//! cookies either, so the client first calls `POST /api/preview/access`: the preview service
//! signs a capability for the member's team, good for an hour, which goes in the path (every
//! relative link of the app keeps it). The proxy asks the preview service to check it and where
//! the app runs. It is no one's credential but this: viewing this team's preview a while.
//!
//! The app is served under a `sandbox` Content-Security-Policy: its pages run in an origin of
//! their own, so code the team's agents wrote can never reach the CoVibe client beside it (nor
//! read its tokens), and without a referrer, so the capability stays here. An app that needs its
//! own origin is served by the operator's ingress (a configured public URL).
//!
//! These paths proxy whatever the app serves: they are not part of the API document.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use covibe_proto::preview::v1 as pb;
use covibe_types::ApiError;
use http::header::{self, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::http::error::HttpError;
use crate::state::Gateway;

// Paths as constants: these routes are not in the API document (they proxy the app).
const BARE: &str = "/preview/{team}/{capability}";
const ROOT: &str = "/preview/{team}/{capability}/";
const ANY: &str = "/preview/{team}/{capability}/{*rest}";

/// What the app's pages may do: run scripts, forms, pop-ups, in an origin of their own.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(BARE, any(redirect))
        .route(ROOT, any(root))
        .route(ANY, any(path))
        .with_state(gateway)
}

async fn redirect(Path((team, capability)): Path<(String, String)>) -> Response {
    Redirect::permanent(&format!("/preview/{team}/{capability}/")).into_response()
}

async fn root(
    State(gw): State<Arc<Gateway>>,
    Path((team, capability)): Path<(String, String)>,
    request: Request,
) -> Response {
    proxy(gw, team, capability, String::new(), request).await
}

async fn path(
    State(gw): State<Arc<Gateway>>,
    Path((team, capability, rest)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    proxy(gw, team, capability, rest, request).await
}

/// Hop-by-hop headers, never forwarded (an upgrade's are put back where they belong).
const HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn error(code: ApiError) -> Response {
    HttpError(code).into_response()
}

async fn proxy(
    gw: Arc<Gateway>,
    team: String,
    capability: String,
    rest: String,
    mut request: Request,
) -> Response {
    let resolve = pb::ResolvePreviewRequest {
        team_id: team.clone(),
        capability,
    };
    let upstream = match gw.preview.clone().resolve_preview(resolve).await {
        Ok(answer) => answer.into_inner().upstream,
        Err(status) => return HttpError::from(status).into_response(),
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let Ok(uri) = format!("/{rest}{query}").parse::<Uri>() else {
        return error(ApiError::invalid("invalid preview path"));
    };
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client_upgrade = upgrade
        .is_some()
        .then(|| {
            request
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>()
        })
        .flatten();

    let (mut parts, body) = request.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    for name in HOP {
        headers.remove(name);
    }
    // The capability is in the page's address: it goes to the app in no header.
    headers.remove(header::REFERER);
    headers.remove(header::AUTHORIZATION);
    if let Some(upgrade) = &upgrade
        && let Ok(value) = HeaderValue::from_str(upgrade)
    {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Ok(host) = HeaderValue::from_str(&upstream) {
        headers.insert(header::HOST, host);
    }
    if let Ok(prefix) = HeaderValue::from_str(&format!("/preview/{team}")) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }
    let mut forwarded = http::Request::new(body);
    *forwarded.method_mut() = parts.method;
    *forwarded.uri_mut() = uri;
    *forwarded.headers_mut() = headers;

    let stream = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&upstream),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        _ => {
            tracing::warn!(%team, %upstream, "the preview app does not answer");
            return error(ApiError::unavailable(
                "the team's preview app does not answer",
            ));
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%team, error = %err, "preview handshake failed");
                return error(ApiError::unavailable(
                    "the team's preview app does not answer",
                ));
            }
        };
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "preview connection ended");
        }
    });
    let mut answer = match sender.send_request(forwarded).await {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(%team, error = %err, "preview request failed");
            return error(ApiError::unavailable(
                "the team's preview app does not answer",
            ));
        }
    };

    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let app_upgrade = hyper::upgrade::on(&mut answer);
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, app_upgrade) {
                    Ok((client, app)) => {
                        let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                    }
                    Err(err) => tracing::debug!(error = %err, "preview upgrade failed"),
                }
            });
        }
        let (parts, _) = answer.into_parts();
        return Response::from_parts(parts, Body::empty());
    }

    let (mut parts, body) = answer.into_parts();
    for name in HOP {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    parts.headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Response::from_parts(parts, Body::new(body))
}
