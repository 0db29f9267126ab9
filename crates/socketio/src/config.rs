//! How the server behaves.

use std::time::Duration;

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
    /// Engine.IO sessions one client address holds at once; past it its handshakes are
    /// refused (`429`). The address is the request's [`ClientAddress`], else its peer's.
    pub max_sessions_per_address: usize,
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
            max_sessions_per_address: usize::MAX,
            max_events_in_flight: 16,
        }
    }
}

/// The client's address as the application knows it (behind a proxy, the proxy's word for
/// it): a request extension its middleware may set before Socket.IO sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub std::net::IpAddr);
