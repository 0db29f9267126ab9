//! The HTTP side of Engine.IO: the handshake, long-polling requests, WebSocket requests (fresh or
//! upgrading a polling session), and what a client's packets do, whichever transport they came by.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

use crate::packet::{self, Frame};
use crate::socket::{Ack, Event};
use crate::{Registry, Socket, ws};

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

/// A fresh Engine.IO session id: 128 random bits, URL-safe.
pub(crate) fn new_wire_id() -> Box<str> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(rand::random::<[u8; 16]>())
        .into()
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

/// The open packet.
pub(crate) fn open<S>(registry: &Registry<S>, socket: &Socket<S>, upgrades: bool) -> Frame {
    let config = &registry.config;
    Frame::from_text(format!(
        r#"0{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        socket.wire,
        if upgrades { r#""websocket""# } else { "" },
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload,
    ))
}

fn at_capacity() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        4,
        "the server is at its connection limit, try again shortly",
    )
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
            let Some(socket) = registry.open() else {
                return at_capacity();
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
    let on_upgrade = hyper::upgrade::on(&mut request);
    match sid {
        None => {
            let Some(socket) = registry.open() else {
                return at_capacity();
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

pub(crate) enum Transport {
    Polling(tokio::sync::oneshot::Receiver<hyper::upgrade::Upgraded>),
    WebSocket(hyper::upgrade::Upgraded),
}

/// What the connection does after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// Acts on one Engine.IO packet from the client.
pub(crate) fn on_packet<S: Default + Send + 'static>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
    text: &str,
) -> Flow {
    let packet = match packet::engine(text) {
        Ok(packet) => packet,
        Err(why) => {
            tracing::debug!(sid = socket.id, %why, "engine.io packet refused; closing");
            return Flow::Close;
        }
    };
    match packet {
        packet::Engine::Close => return Flow::Close,
        packet::Engine::Pong => socket.ponged.store(true, Ordering::Release),
        packet::Engine::Ping(data) => socket.send_control(Frame::from_text(format!("3{data}"))),
        packet::Engine::Upgrade | packet::Engine::Noop => {}
        packet::Engine::Message(message) => return on_message(registry, socket, message),
    }
    Flow::Continue
}

fn on_message<S: Default + Send + 'static>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
    text: &str,
) -> Flow {
    let packet = match packet::socket(text) {
        Ok(packet) => packet,
        Err(why) => {
            // Bad input from one client costs it that packet, not its connection.
            tracing::debug!(sid = socket.id, %why, "socket.io packet ignored");
            return Flow::Continue;
        }
    };
    match packet {
        packet::Socket::Connect => {
            if socket.connected.load(Ordering::Acquire) {
                return Flow::Continue;
            }
            match registry.handler.connect(socket) {
                Ok(()) => {
                    socket.connected.store(true, Ordering::Release);
                    socket.send_control(Frame::from_text(format!(
                        r#"40{{"sid":"{}"}}"#,
                        new_wire_id()
                    )));
                }
                Err(message) => {
                    socket.send_control(Frame::from_text(format!(
                        "44{}",
                        serde_json::json!({ "message": message })
                    )));
                    socket.disconnect();
                }
            }
        }
        packet::Socket::OtherNamespace(namespace) => {
            socket.send_control(Frame::from_text(format!(
                r#"44{namespace},{{"message":"Invalid namespace"}}"#
            )));
        }
        packet::Socket::Disconnect => {
            socket.connected.store(false, Ordering::Release);
            let registry = registry.clone();
            let socket = socket.clone();
            // The application hears of it as of any disconnect.
            tokio::spawn(async move {
                registry.handler.disconnect(socket.clone()).await;
                socket.disconnect();
            });
        }
        packet::Socket::Event { name, data, ack } => {
            if !socket.connected() {
                tracing::debug!(sid = socket.id, "event before connect ignored");
                return Flow::Continue;
            }
            let event = Event {
                name,
                data: data.map(|data| data.to_owned()),
                ack: Ack {
                    socket: socket.clone(),
                    id: ack,
                },
            };
            // Past the limit the event is refused, not waited for: waiting would stop this
            // task, which also writes what the events being handled are waiting to send.
            let Ok(permit) = socket.events.clone().try_acquire_owned() else {
                tracing::debug!(sid = socket.id, "too many events in flight; refused");
                registry.handler.overloaded(event);
                return Flow::Continue;
            };
            let handled = registry.handler.event(socket.clone(), event);
            tokio::spawn(async move {
                handled.await;
                drop(permit);
            });
        }
        packet::Socket::Ack => {}
        packet::Socket::Binary => {
            tracing::debug!(
                sid = socket.id,
                "binary socket.io packet ignored (not supported)"
            );
        }
    }
    Flow::Continue
}

/// Pings the client and gives up on it when it stops answering (or never connects).
pub(crate) struct Heartbeat {
    next_ping: tokio::time::Instant,
    pong_due: Option<tokio::time::Instant>,
    connect_by: tokio::time::Instant,
}

impl Heartbeat {
    pub(crate) fn new(config: &crate::Config) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            next_ping: now + config.ping_interval,
            pong_due: None,
            connect_by: now + config.connect_timeout,
        }
    }

    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        self.pong_due.unwrap_or(self.next_ping)
    }

    /// At the deadline: a ping goes out, or the client that did not answer is given up.
    pub(crate) fn tick<S>(&mut self, config: &crate::Config, socket: &Socket<S>) -> Flow {
        let now = tokio::time::Instant::now();
        if self.pong_due.take().is_some() {
            if !socket.ponged.load(Ordering::Acquire) {
                tracing::debug!(sid = socket.id, "ping timeout");
                return Flow::Close;
            }
            return Flow::Continue;
        }
        if !socket.connected.load(Ordering::Acquire) && now >= self.connect_by {
            tracing::debug!(sid = socket.id, "never connected to the namespace");
            return Flow::Close;
        }
        socket.ponged.store(false, Ordering::Release);
        socket.send_control(packet::PING);
        self.pong_due = Some(now + config.ping_timeout.min(config.ping_interval));
        self.next_ping = now + config.ping_interval;
        Flow::Continue
    }
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
