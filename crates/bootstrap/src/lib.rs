//! Server bootstrap shared by every service: bind first, serve gRPC with health, reflection and
//! a tracing layer that adopts the caller's trace, shut down on a signal; and lazily-connected
//! clients that carry trace context and the caller's bearer token.

mod client;
mod server;
mod shutdown;

pub use client::{Client, bearer, channel};
pub use server::{GrpcServer, ServingHandle};
pub use shutdown::{Shutdown, shutdown_signal};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid endpoint {url}: {source}")]
    Endpoint {
        url: String,
        source: covibe_proto::tonic::transport::Error,
    },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("grpc server: {0}")]
    Serve(#[from] covibe_proto::tonic::transport::Error),
}
