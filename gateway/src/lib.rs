//! The gateway: the only door phones and browsers use. REST (axum) and Socket.io
//! (`covibe-socketio`) on one listener, translated into gRPC calls to the services, and the team
//! fan-out (from the hot store) relayed to each team's sockets.
//!
//! Transports: `http` (router, extractors, the error body, limits, OpenAPI, gRPC-web, the web
//! client's files) and `realtime` (socket state, dispatch, rooms, relay, replay). Features, each
//! with its REST routes, its socket events and its JSON shapes: `agents`, `auth`, `chat`,
//! `team`, `vms`, `preview`. `state` is what they share, `server` serves it all.

mod agents;
mod auth;
mod chat;
mod http;
mod member;
mod preview;
mod preview_proxy;
mod realtime;
mod server;
mod state;
mod team;
mod vms;

pub use http::error::HttpError;
pub use http::limits::HttpLimits;
pub use http::static_files::EmbeddedSite;
pub use realtime::socket::SocketLimits;
pub use server::serve;
pub use state::{Error, Gateway, GatewayConfig};
