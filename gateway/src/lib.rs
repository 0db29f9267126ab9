//! The gateway: the only door phones and browsers use. REST (axum) and Socket.io
//! (socketioxide) on one listener, translated into gRPC calls to the services, and the team
//! fan-out (from the hot store) relayed to each team's sockets.
//!
//! `rest` holds the routes, `realtime` the Socket.io events and the fan-out relay, `dto` the
//! JSON shapes clients see, `error` the one error body every route answers with.

mod control;
mod dto;
mod error;
mod realtime;
mod rest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use covibe_bootstrap::Client;
use covibe_identity::Verifier;
use covibe_proto::auth::v1::auth_service_client::AuthServiceClient;
use covibe_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_storage::HotStore;
use tokio::net::TcpListener;

pub use error::HttpError;

/// The service endpoints and limits the gateway needs.
pub struct GatewayConfig {
    pub auth_url: String,
    pub team_url: String,
    pub orchestrator_url: String,
    pub max_body_bytes: usize,
}

/// What every handler shares.
pub struct Gateway {
    pub(crate) auth: AuthServiceClient<Client>,
    pub(crate) team: TeamServiceClient<Client>,
    pub(crate) orchestrator: OrchestratorServiceClient<Client>,
    pub(crate) verifier: Verifier,
    pub(crate) ready: AtomicBool,
    pub(crate) max_body_bytes: usize,
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
        Ok(Arc::new(Self {
            auth: AuthServiceClient::new(covibe_bootstrap::channel(&config.auth_url)?),
            team: TeamServiceClient::new(covibe_bootstrap::channel(&config.team_url)?),
            orchestrator: OrchestratorServiceClient::new(covibe_bootstrap::channel(
                &config.orchestrator_url,
            )?),
            verifier,
            ready: AtomicBool::new(false),
            max_body_bytes: config.max_body_bytes,
        }))
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Serves REST and Socket.io on `listener` until `shutdown` resolves, relaying the team
/// fan-out of `hot` to the sockets.
pub async fn serve(
    gateway: Arc<Gateway>,
    hot: Arc<dyn HotStore>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (layer, io) = realtime::socket_layer(gateway.clone());
    let subscription = hot.subscribe().await?;
    tokio::spawn(realtime::relay(io.clone(), subscription));
    gateway.ready.store(true, Ordering::Relaxed);
    let app = rest::router(gateway.clone()).layer(layer);
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(addr = %local, "gateway serving");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        gateway.ready.store(false, Ordering::Relaxed);
        io.close().await;
    })
    .await?;
    Ok(())
}
