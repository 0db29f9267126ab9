//! The server the application holds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::engine;
use crate::handler::Handler;
use crate::registry::Registry;
use crate::socket::Socket;

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
                per_address: Mutex::default(),
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
