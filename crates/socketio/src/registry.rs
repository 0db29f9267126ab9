//! Every Engine.IO session of a server, by its wire id.

use std::collections::HashMap;

use base64::Engine as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::config::Config;
use crate::handler::Handler;
use crate::socket::Socket;

/// A fresh Engine.IO session id: 128 random bits, URL-safe.
pub(crate) fn new_wire_id() -> Box<str> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(rand::random::<[u8; 16]>())
        .into()
}

pub(crate) struct Registry<S> {
    pub(crate) config: Config,
    pub(crate) handler: Arc<dyn Handler<S>>,
    /// Every Engine.IO session, by its wire id.
    pub(crate) sessions: RwLock<HashMap<Box<str>, Arc<Socket<S>>>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) closing: AtomicBool,
    /// Sessions open per client address (only addresses holding one).
    pub(crate) per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a session was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server is at its session limit or shutting down.
    Full,
    /// The client's address holds as many sessions as it may.
    TooManyFromAddress,
}

impl<S> Registry<S> {
    pub(crate) fn sessions(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<Socket<S>>>> {
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
    /// A new session for a client at `address`.
    pub(crate) fn open(
        self: &Arc<Self>,
        address: Option<IpAddr>,
    ) -> Result<Arc<Socket<S>>, Refused> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Refused::Full);
        }
        let mut sessions = self.sessions_mut();
        if sessions.len() >= self.config.max_sessions {
            return Err(Refused::Full);
        }
        if let Some(address) = address {
            let mut per_address = self.per_address();
            let held = per_address.entry(address).or_insert(0);
            if *held >= self.config.max_sessions_per_address {
                return Err(Refused::TooManyFromAddress);
            }
            *held += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wire = new_wire_id();
        let socket = Arc::new(Socket::new(
            id,
            wire.clone(),
            address,
            &self.config,
            S::default(),
        ));
        sessions.insert(wire, socket.clone());
        Ok(socket)
    }

    fn per_address(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let removed = self.sessions_mut().remove(&socket.wire).is_some();
        if removed && let Some(address) = socket.address {
            let mut per_address = self.per_address();
            if let Some(held) = per_address.get_mut(&address) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    per_address.remove(&address);
                }
            }
        }
        if socket.connected.swap(false, Ordering::AcqRel) {
            self.handler.disconnect(socket.clone()).await;
        }
    }
}
