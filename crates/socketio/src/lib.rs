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
//! `packet` is the wire format, `socket` a connection's queue and state, `registry` the sessions
//! of a server, `protocol` what a client's packets do on either transport (and the heartbeat),
//! `engine` the HTTP side (handshake, polling, upgrade requests), `ws` the WebSocket framing and
//! the per-socket task; `io` is the server the application holds, `config` and `handler` what it
//! gives it.

mod config;
mod engine;
#[cfg(test)]
mod fuzz;
mod handler;
mod io;
mod packet;
mod protocol;
mod registry;
mod socket;
mod ws;

pub use config::{ClientAddress, Config};
pub use handler::Handler;
pub use io::Io;
pub use packet::Frame;
pub use socket::{Ack, Event, SendError, Sid, Socket};
