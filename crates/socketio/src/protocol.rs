//! What a client's packets do, whichever transport they came by, and the heartbeat.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::packet::{self, Frame};
use crate::registry::{Registry, new_wire_id};
use crate::socket::{Ack, Event, Socket};

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
        packet::Engine::Ping(data) => socket.answer(Frame::from_text(format!("3{data}"))),
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
            socket.answer(Frame::from_text(format!(
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
    /// Until the client has connected to the namespace: when it must have.
    connect_by: Option<tokio::time::Instant>,
}

impl Heartbeat {
    pub(crate) fn new(config: &crate::Config) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            next_ping: now + config.ping_interval,
            pong_due: None,
            connect_by: Some(now + config.connect_timeout),
        }
    }

    fn ping_deadline(&self) -> tokio::time::Instant {
        self.pong_due.unwrap_or(self.next_ping)
    }

    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        let ping = self.ping_deadline();
        self.connect_by.map_or(ping, |by| by.min(ping))
    }

    /// At the deadline: a client that never connected is given up, a ping goes out, or the
    /// client that did not answer is given up.
    pub(crate) fn tick<S>(&mut self, config: &crate::Config, socket: &Socket<S>) -> Flow {
        let now = tokio::time::Instant::now();
        if let Some(by) = self.connect_by
            && now >= by
        {
            if !socket.connected.load(Ordering::Acquire) {
                tracing::debug!(sid = socket.id, "never connected to the namespace");
                return Flow::Close;
            }
            self.connect_by = None;
        }
        if now < self.ping_deadline() {
            return Flow::Continue;
        }
        if self.pong_due.take().is_some() {
            if !socket.ponged.load(Ordering::Acquire) {
                tracing::debug!(sid = socket.id, "ping timeout");
                return Flow::Close;
            }
            return Flow::Continue;
        }
        socket.ponged.store(false, Ordering::Release);
        socket.send_control(packet::PING);
        self.pong_due = Some(now + config.ping_timeout.min(config.ping_interval));
        self.next_ping = now + config.ping_interval;
        Flow::Continue
    }
}
