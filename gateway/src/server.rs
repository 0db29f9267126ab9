//! Serving: the REST app (with gRPC-web, limits and tracing) and Socket.io on one listener,
//! the fan-out relay, and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use covibe_storage::HotStore;
use tokio::net::TcpListener;

use crate::http::{grpc_web, limits};
use crate::state::{Error, Gateway};
use crate::{chat, realtime};

impl Gateway {
    /// The REST app (no Socket.io), for serving with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; `serve` adds Socket.io to it.
    pub fn app(self: &Arc<Self>) -> axum::Router {
        self.app_with(axum::Router::new())
    }

    /// The app with `sockets` (the Socket.io routes) under the same limits.
    fn app_with(self: &Arc<Self>, sockets: axum::Router) -> axum::Router {
        crate::http::router(self.clone())
            .merge(grpc_web::router(&self.upstreams, &self.cors_origins))
            .merge(crate::preview_proxy::router(self.clone()))
            .merge(sockets)
            // Limits and tracing cover REST, gRPC-web and Socket.io alike (sign-in guessing
            // included).
            .layer(axum::middleware::from_fn_with_state(
                self.limits.clone(),
                limits::guard,
            ))
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &::http::Request<_>| {
                    let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path());
                    covibe_telemetry::set_parent_from_headers(&span, request.headers());
                    span
                },
            ))
    }
}

/// How long a shutdown waits for sockets to hear they are disconnected.
const SOCKETS_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves REST and Socket.io on `listener` until `shutdown` resolves, relaying the team
/// fan-out of `hot` to the sockets.
pub async fn serve(
    gateway: Arc<Gateway>,
    hot: Arc<dyn HotStore>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let io = realtime::socket_io(gateway.clone());
    let subscription = hot.subscribe().await?;
    tokio::spawn(realtime::relay::relay(gateway.clone(), subscription));
    tokio::spawn(realtime::close_ended_sessions(gateway.clone()));
    tokio::spawn(chat::refresh_presence(io.clone(), gateway.clone()));
    gateway.ready.store(true, Ordering::Relaxed);
    let app = gateway.app_with(io.router());
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(addr = %local, "gateway serving");
    // Every Socket.io frame is small and latency-bound: never hold one back for an ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        gateway.ready.store(false, Ordering::Relaxed);
        io.close(SOCKETS_CLOSE_GRACE).await;
    })
    .await?;
    Ok(())
}
