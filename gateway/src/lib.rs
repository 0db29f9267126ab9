//! The gateway: the only door phones and browsers use. REST (axum) and Socket.io
//! (`covibe-socketio`) on one listener, translated into gRPC calls to the services, and the team
//! fan-out (from the hot store) relayed to each team's sockets.
//!
//! `rest` holds the routes, `realtime` the Socket.io events and the fan-out relay, `dto` the
//! JSON shapes clients see, `error` the one error body every route answers with.

mod account;
mod chat;
mod control;
mod dto;
mod error;
mod grpc_web;
mod limits;
mod openapi;
mod rate_limit;
mod realtime;
mod rest;
mod static_files;
mod vm;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use covibe_bootstrap::Client;
use covibe_identity::Verifier;
use covibe_proto::auth::v1::auth_service_client::AuthServiceClient;
use covibe_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use covibe_proto::preview::v1::preview_service_client::PreviewServiceClient;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::HotStore;
use tokio::net::TcpListener;

pub use error::HttpError;
pub use limits::HttpLimits;
pub use realtime::SocketLimits;

/// The service endpoints and limits the gateway needs.
pub struct GatewayConfig {
    pub auth_url: String,
    pub team_url: String,
    pub orchestrator_url: String,
    pub vm_connector_url: String,
    pub preview_url: String,
    pub max_body_bytes: usize,
    pub limits: HttpLimits,
    /// The web client's files, served at `/`; unset means a JSON pointer to the API.
    pub static_dir: Option<std::path::PathBuf>,
    /// Origins allowed to call gRPC-web from a browser (`*` for any; empty for same-origin only).
    pub cors_origins: Vec<String>,
    pub sockets: realtime::SocketLimits,
}

/// What every handler shares.
pub struct Gateway {
    pub(crate) auth: AuthServiceClient<Client>,
    pub(crate) team: TeamServiceClient<Client>,
    pub(crate) orchestrator: OrchestratorServiceClient<Client>,
    pub(crate) vm_connector: VmConnectorServiceClient<Client>,
    pub(crate) preview: PreviewServiceClient<Client>,
    pub(crate) verifier: Verifier,
    pub(crate) ready: AtomicBool,
    pub(crate) hub: realtime::Hub,
    pub(crate) rooms: realtime::Rooms,
    pub(crate) presence_seen: chat::PresenceSeen,
    /// Presence calls to the team service in flight at once.
    pub(crate) presence_calls: tokio::sync::Semaphore,
    pub(crate) max_body_bytes: usize,
    pub(crate) limits: limits::Limiters,
    pub(crate) site: static_files::Site,
    pub(crate) upstreams: grpc_web::Upstreams,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) socket_limits: realtime::SocketLimits,
    pub(crate) open_sockets: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bootstrap(#[from] covibe_bootstrap::Error),
    #[error("hot store: {0}")]
    Hot(#[from] covibe_storage::Error),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

impl Gateway {
    pub fn new(config: &GatewayConfig, verifier: Verifier) -> Result<Arc<Self>, Error> {
        let upstreams = grpc_web::Upstreams {
            auth: covibe_bootstrap::channel(&config.auth_url)?,
            team: covibe_bootstrap::channel(&config.team_url)?,
            orchestrator: covibe_bootstrap::channel(&config.orchestrator_url)?,
        };
        Ok(Arc::new(Self {
            auth: AuthServiceClient::new(upstreams.auth.clone()),
            team: TeamServiceClient::new(upstreams.team.clone()),
            orchestrator: OrchestratorServiceClient::new(upstreams.orchestrator.clone()),
            vm_connector: VmConnectorServiceClient::new(covibe_bootstrap::channel(
                &config.vm_connector_url,
            )?),
            preview: PreviewServiceClient::new(covibe_bootstrap::channel(&config.preview_url)?),
            upstreams,
            cors_origins: config.cors_origins.clone(),
            socket_limits: config.sockets,
            open_sockets: std::sync::atomic::AtomicUsize::new(0),
            verifier,
            ready: AtomicBool::new(false),
            hub: realtime::Hub::default(),
            rooms: realtime::Rooms::default(),
            presence_seen: chat::PresenceSeen::default(),
            presence_calls: tokio::sync::Semaphore::new(chat::PRESENCE_CALLS),
            max_body_bytes: config.max_body_bytes,
            limits: limits::Limiters::new(&config.limits),
            site: static_files::Site::new(config.static_dir.as_deref()),
        }))
    }

    /// The REST app (no Socket.io), for serving with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; `serve` adds Socket.io to it.
    pub fn app(self: &Arc<Self>) -> axum::Router {
        rest::router(self.clone())
            .merge(grpc_web::router(&self.upstreams, &self.cors_origins))
            // Limits and tracing cover REST and gRPC-web alike (sign-in guessing included).
            .layer(axum::middleware::from_fn_with_state(self.clone(), limits::guard))
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &http::Request<_>| {
                    let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path());
                    covibe_telemetry::set_parent_from_headers(&span, request.headers());
                    span
                },
            ))
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
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
    tokio::spawn(realtime::relay(gateway.clone(), subscription));
    tokio::spawn(realtime::close_ended_sessions(gateway.clone()));
    tokio::spawn(chat::refresh_presence(io.clone(), gateway.clone()));
    gateway.ready.store(true, Ordering::Relaxed);
    let app = gateway.app().merge(io.router());
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
