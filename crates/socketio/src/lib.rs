//! A Socket.IO v5 server over Engine.IO v4 (HTTP long-polling, WebSocket, and the upgrade from
//! one to the other), built for many mostly idle sockets and one-to-many broadcast:
//!
//! - one task per socket, which owns its transport and holds no buffer while the socket is idle
//!   (a read is polled with a stack buffer, a write buffer lives only while frames are written);
//! - a frame is encoded once ([`Frame`], shared bytes) however many sockets it goes to;
//! - each socket's send queue is bounded in frames and bytes, and a send never waits.
//!
//! The application sees [`Socket`]s (with a state `S` of its own) and implements [`Handler`]:
//! namespace connects, events (each on its own task, with an [`Ack`]) and disconnects. Only the
//! default namespace exists; binary packets are not supported.
//!
//! `packet` is the wire format, `socket` a connection's queue and state, `engine` the HTTP side
//! (handshake, polling, upgrade requests), `ws` the WebSocket framing and the per-socket task.

mod engine;
mod packet;
mod socket;
mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;

pub use packet::Frame;
pub use socket::{Ack, Event, SendError, Sid, Socket};

/// How the server behaves; the defaults are Socket.IO's own.
#[derive(Debug, Clone)]
pub struct Config {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// A client that has not connected to the namespace by then is dropped.
    pub connect_timeout: Duration,
    /// The largest packet (or polling body) a client may send.
    pub max_payload: usize,
    /// Frames a socket's send queue holds before a send fails.
    pub queue_frames: usize,
    /// Bytes a socket's send queue holds before a send fails (one frame always fits).
    pub queue_bytes: usize,
    /// Engine.IO sessions open at once; past it a handshake is refused.
    pub max_sessions: usize,
    /// A client's events handled at once; past it an event is refused
    /// ([`Handler::overloaded`]).
    pub max_events_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(45),
            max_payload: 1_000_000,
            queue_frames: 1024,
            queue_bytes: 4 << 20,
            max_sessions: 100_000,
            max_events_in_flight: 16,
        }
    }
}

/// What the application does with its sockets.
pub trait Handler<S>: Send + Sync + 'static {
    /// A client connects to the namespace; an error refuses it with that message (the client's
    /// `connect_error`) and closes the connection.
    fn connect(&self, socket: &Arc<Socket<S>>) -> Result<(), String>;
    /// A client's event. Each runs on a task of its own.
    fn event(&self, socket: Arc<Socket<S>>, event: Event<S>) -> BoxFuture<'static, ()>;
    /// An event refused because the client has too many being handled already: answer it
    /// with an error the client understands (the default drops it).
    fn overloaded(&self, event: Event<S>) {
        drop(event);
    }
    /// A connected socket is gone, whichever side ended it.
    fn disconnect(&self, socket: Arc<Socket<S>>) -> BoxFuture<'static, ()>;
}

pub(crate) struct Registry<S> {
    pub(crate) config: Config,
    pub(crate) handler: Arc<dyn Handler<S>>,
    /// Every Engine.IO session, by its wire id.
    sessions: RwLock<HashMap<Box<str>, Arc<Socket<S>>>>,
    next_id: AtomicU64,
    closing: AtomicBool,
}

impl<S> Registry<S> {
    fn sessions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<Socket<S>>>> {
        self.sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sessions_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, Arc<Socket<S>>>> {
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn find(&self, wire: &str) -> Option<Arc<Socket<S>>> {
        self.sessions().get(wire).cloned()
    }
}

impl<S: Default + Send + 'static> Registry<S> {
    /// A new session, or `None` at the session limit or while shutting down.
    pub(crate) fn open(self: &Arc<Self>) -> Option<Arc<Socket<S>>> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let mut sessions = self.sessions_mut();
        if sessions.len() >= self.config.max_sessions {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wire = engine::new_wire_id();
        let socket = Arc::new(Socket::new(id, wire.clone(), self, S::default()));
        sessions.insert(wire, socket.clone());
        Some(socket)
    }

    /// The session ended: forgets it and tells the application.
    pub(crate) async fn close(&self, socket: &Arc<Socket<S>>) {
        socket.gone.store(true, Ordering::Release);
        {
            let mut outbox = socket.outbox();
            outbox.closing = true;
            outbox.frames.clear();
            outbox.bytes = 0;
        }
        socket.drained.notify_waiters();
        socket.wake.notify_waiters();
        self.sessions_mut().remove(&socket.wire);
        if socket.connected.swap(false, Ordering::AcqRel) {
            self.handler.disconnect(socket.clone()).await;
        }
    }
}

/// The server: route it with [`Io::router`].
pub struct Io<S> {
    registry: Arc<Registry<S>>,
}

impl<S> Clone for Io<S> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<S: Default + Send + 'static> Io<S> {
    pub fn new(config: Config, handler: Arc<dyn Handler<S>>) -> Self {
        Self {
            registry: Arc::new(Registry {
                config,
                handler,
                sessions: RwLock::default(),
                next_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// Serves `/socket.io/`.
    pub fn router<T: Clone + Send + Sync + 'static>(&self) -> axum::Router<T> {
        engine::router(self.registry.clone())
    }

    /// The sockets connected to the namespace.
    pub fn sockets(&self) -> Vec<Arc<Socket<S>>> {
        self.registry
            .sessions()
            .values()
            .filter(|s| s.connected())
            .cloned()
            .collect()
    }

    /// Sessions open (connected to the namespace or not).
    pub fn sessions(&self) -> usize {
        self.registry.sessions().len()
    }

    /// Refuses new sessions, tells every client it is disconnected, and waits (up to `grace`)
    /// for the transports to close.
    pub async fn close(&self, grace: Duration) {
        self.registry.closing.store(true, Ordering::Release);
        let sockets: Vec<_> = self.registry.sessions().values().cloned().collect();
        for socket in &sockets {
            socket.disconnect();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
