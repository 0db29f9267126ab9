//! The HTTP side of Engine.IO: the handshake, long-polling requests, WebSocket requests (fresh or
//! upgrading a polling session), and what a client's packets do, whichever transport they came by.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::ClientAddress;
use crate::packet;
use crate::protocol::{Flow, Heartbeat, on_packet, open};
use crate::registry::{Refused, Registry};
use crate::socket::Socket;
use crate::ws;

pub(crate) fn router<S: Default + Send + 'static, T: Clone + Send + Sync + 'static>(
    registry: Arc<Registry<S>>,
) -> axum::Router<T> {
    axum::Router::new().route(
        "/socket.io/",
        axum::routing::get(get::<S>)
            .post(post::<S>)
            .with_state(registry),
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// Engine.IO's error answers: `{code, message}` with 400 (403 for a refused handshake).
fn refuse(status: StatusCode, code: u8, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

fn unknown_session() -> Response {
    refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown")
}

fn bad_request() -> Response {
    refuse(StatusCode::BAD_REQUEST, 3, "Bad request")
}

/// A refusal if the request is not Engine.IO v4.
fn unsupported(params: &Params) -> Option<Response> {
    (params.eio.as_deref() != Some("4"))
        .then(|| refuse(StatusCode::BAD_REQUEST, 5, "Unsupported protocol version"))
}

fn text(body: impl Into<Body>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        )],
        body.into(),
    )
        .into_response()
}

pub(crate) enum Transport {
    Polling(tokio::sync::oneshot::Receiver<hyper::upgrade::Upgraded>),
    WebSocket(hyper::upgrade::Upgraded),
}

fn refused(why: Refused) -> Response {
    match why {
        Refused::Full => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            4,
            "the server is at its connection limit, try again shortly",
        ),
        Refused::TooManyFromAddress => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            4,
            "too many connections from your address: close some before opening more",
        ),
    }
}

/// The client's address: the application's word for it, else the peer's.
fn client_address(request: &Request) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ClientAddress>()
        .map(|address| address.0)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
}

async fn get<S: Default + Send + 'static>(
    State(registry): State<Arc<Registry<S>>>,
    Query(params): Query<Params>,
    request: Request,
) -> Response {
    if let Some(refused) = unsupported(&params) {
        return refused;
    }
    match (params.transport.as_deref(), params.sid) {
        (Some("polling"), None) => {
            let socket = match registry.open(client_address(&request)) {
                Ok(socket) => socket,
                Err(why) => return refused(why),
            };
            let (upgrade, upgraded) = tokio::sync::oneshot::channel();
            *socket
                .upgrade
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(upgrade);
            let open = open(&registry, &socket, true);
            tokio::spawn(drive(registry, socket, Transport::Polling(upgraded)));
            text(open.0)
        }
        (Some("polling"), Some(sid)) => match registry.find(&sid) {
            Some(socket) => poll(&registry, &socket).await,
            None => unknown_session(),
        },
        (Some("websocket"), sid) => websocket(registry, sid, request),
        _ => refuse(StatusCode::BAD_REQUEST, 0, "Transport unknown"),
    }
}

/// Clears a socket's "a poll is waiting" mark however the request ends.
struct Polling<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A long-polling GET: waits for frames, then answers with all that fit in one payload.
async fn poll<S: Default + Send + 'static>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
) -> Response {
    if socket.websocket.load(Ordering::Acquire) {
        return bad_request();
    }
    if socket.polling.swap(true, Ordering::AcqRel) {
        // Two polls at once: the client is confused; the session ends (as Engine.IO does).
        tracing::debug!(sid = socket.id, "overlapping polls; closing the session");
        socket.disconnect();
        return bad_request();
    }
    let _polling = Polling(&socket.polling);
    loop {
        let woken = socket.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (frames, closing) = socket.take(registry.config.max_payload);
        if !frames.is_empty() || closing || socket.gone.load(Ordering::Acquire) {
            let mut body =
                Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum::<usize>() + 2);
            for frame in &frames {
                if !body.is_empty() {
                    body.push(packet::SEPARATOR);
                }
                body.extend_from_slice(&frame.0);
            }
            if closing || socket.gone.load(Ordering::Acquire) {
                if !body.is_empty() {
                    body.push(packet::SEPARATOR);
                }
                body.extend_from_slice(&packet::CLOSE.0);
                socket.control.notify_one();
            }
            return text(body);
        }
        woken.await;
    }
}

/// A polling POST: the client's packets, separated by 0x1e.
async fn post<S: Default + Send + 'static>(
    State(registry): State<Arc<Registry<S>>>,
    Query(params): Query<Params>,
    request: Request,
) -> Response {
    if let Some(refused) = unsupported(&params) {
        return refused;
    }
    let Some(socket) = params.sid.as_deref().and_then(|sid| registry.find(sid)) else {
        return unknown_session();
    };
    if socket.websocket.load(Ordering::Acquire) {
        return bad_request();
    }
    let body = match axum::body::to_bytes(request.into_body(), registry.config.max_payload).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, 3, "payload too large");
        }
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return bad_request();
    };
    for packet in body.split('\u{1e}') {
        if on_packet(&registry, &socket, packet) == Flow::Close {
            socket.end();
            break;
        }
    }
    text("ok")
}

/// A WebSocket request: a new session, or the upgrade of a polling one.
fn websocket<S: Default + Send + 'static>(
    registry: Arc<Registry<S>>,
    sid: Option<String>,
    mut request: Request,
) -> Response {
    let accept = match ws::accept_key(request.headers()) {
        Ok(accept) => accept,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, 3, why),
    };
    let address = client_address(&request);
    let on_upgrade = hyper::upgrade::on(&mut request);
    match sid {
        None => {
            let socket = match registry.open(address) {
                Ok(socket) => socket,
                Err(why) => return refused(why),
            };
            socket.websocket.store(true, Ordering::Release);
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => drive(registry, socket, Transport::WebSocket(upgraded)).await,
                    Err(err) => {
                        tracing::debug!(error = %err, "websocket upgrade failed");
                        registry.close(&socket).await;
                    }
                }
            });
        }
        Some(sid) => {
            let Some(socket) = registry.find(&sid) else {
                return unknown_session();
            };
            let Some(handoff) = socket
                .upgrade
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
            else {
                return bad_request();
            };
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let _ = handoff.send(upgraded);
                    }
                    Err(err) => tracing::debug!(error = %err, "websocket upgrade failed"),
                }
            });
        }
    }
    ws::switching_protocols(accept)
}

/// How long a closing polling session waits for its last frames to be fetched.
const POLL_FLUSH: Duration = Duration::from_secs(2);

/// What woke a polling session's task.
enum Polled {
    /// A WebSocket was handed over (`None`: the upgrade request failed).
    Upgrade(Option<hyper::upgrade::Upgraded>),
    Control,
    Tick,
}

/// The socket's task: it owns the transport until the session ends.
async fn drive<S: Default + Send + 'static>(
    registry: Arc<Registry<S>>,
    socket: Arc<Socket<S>>,
    transport: Transport,
) {
    let ended = Ended {
        registry: registry.clone(),
        socket: socket.clone(),
    };
    let mut heartbeat = Heartbeat::new(&registry.config);
    match transport {
        Transport::WebSocket(io) => {
            socket.send_control(open(&registry, &socket, false));
            let _ = ws::run(&registry, &socket, io, &mut heartbeat, true).await;
        }
        Transport::Polling(upgrade) => {
            // Until a WebSocket is handed over (or the chance of one is gone).
            let mut upgrade = Some(upgrade);
            loop {
                let control = socket.control.notified();
                let upgraded = async {
                    match upgrade.as_mut() {
                        Some(handoff) => handoff.await.ok(),
                        None => std::future::pending().await,
                    }
                };
                let step = tokio::select! {
                    io = upgraded => Polled::Upgrade(io),
                    () = control => Polled::Control,
                    () = tokio::time::sleep_until(heartbeat.deadline()) => Polled::Tick,
                };
                match step {
                    Polled::Upgrade(io) => {
                        upgrade = None;
                        let moved = match io {
                            Some(io) => {
                                ws::run(&registry, &socket, io, &mut heartbeat, false).await
                            }
                            None => false,
                        };
                        // A failed probe leaves the client polling.
                        if moved || socket.outbox().closing {
                            break;
                        }
                    }
                    Polled::Control if socket.outbox().closing => {
                        flush_polling(&socket).await;
                        break;
                    }
                    Polled::Control => {}
                    Polled::Tick => {
                        if heartbeat.tick(&registry.config, &socket) == Flow::Close {
                            break;
                        }
                    }
                }
            }
        }
    }
    drop(ended);
}

/// Ends a session when its task ends, however it ends (a panic included): the session is
/// forgotten and the application told, so a bug costs one connection, not a leaked place.
struct Ended<S: Default + Send + 'static> {
    registry: Arc<Registry<S>>,
    socket: Arc<Socket<S>>,
}

impl<S: Default + Send + 'static> Drop for Ended<S> {
    fn drop(&mut self) {
        let (registry, socket) = (self.registry.clone(), self.socket.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { registry.close(&socket).await });
        }
    }
}

/// Gives a closing polling session's client a moment to fetch what is left.
async fn flush_polling<S>(socket: &Socket<S>) {
    let deadline = tokio::time::Instant::now() + POLL_FLUSH;
    while !socket.outbox().frames.is_empty() && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, socket.drained.notified()).await;
    }
}
