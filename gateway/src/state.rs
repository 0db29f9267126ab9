//! What every handler shares: the clients of the services, the verifier, and the gateway's own
//! state (rooms, replays, limits).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use covibe_bootstrap::Client;
use covibe_identity::Verifier;
use covibe_proto::auth::v1::auth_service_client::AuthServiceClient;
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use covibe_proto::preview::v1::preview_service_client::PreviewServiceClient;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;

use crate::http::grpc_web::Upstreams;
use crate::http::limits::{HttpLimits, Limiters};
use crate::http::static_files::Site;
use crate::realtime::holder::PresenceHolder;
use crate::realtime::hub::Hub;
use crate::realtime::rooms::Rooms;
use crate::realtime::seen::PresenceSeen;
use crate::realtime::socket::SocketLimits;

/// Presence calls one gateway makes to the team service at once.
pub(crate) const PRESENCE_CALLS: usize = 32;

/// The service endpoints and limits the gateway needs.
pub struct GatewayConfig {
    pub auth_url: String,
    pub team_url: String,
    pub orchestrator_url: String,
    pub vm_connector_url: String,
    pub preview_url: String,
    pub max_body_bytes: usize,
    pub limits: HttpLimits,
    /// The web client's files, served at `/`; wins over `embedded_site`.
    pub static_dir: Option<std::path::PathBuf>,
    /// The web client built into the binary; with neither, `/` is a JSON pointer to the API.
    pub embedded_site: Option<crate::http::static_files::EmbeddedSite>,
    /// The vm-connector's address for dial-in daemons, returned with their tokens.
    pub dial_in_url: String,
    /// Origins allowed to call gRPC-web from a browser (`*` for any; empty for same-origin only).
    pub cors_origins: Vec<String>,
    pub sockets: SocketLimits,
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
    pub(crate) hub: Hub,
    pub(crate) rooms: Rooms,
    pub(crate) presence_seen: PresenceSeen,
    /// Presence calls to the team service in flight at once.
    pub(crate) presence_calls: tokio::sync::Semaphore,
    /// This gateway as a holder of its members' presence.
    pub(crate) presence_holder: PresenceHolder,
    pub(crate) max_body_bytes: usize,
    pub(crate) limits: Arc<Limiters>,
    pub(crate) site: Site,
    pub(crate) upstreams: Upstreams,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) dial_in_url: String,
    pub(crate) socket_limits: SocketLimits,
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
        let upstreams = Upstreams {
            auth: covibe_bootstrap::channel(&config.auth_url)?,
            team: covibe_bootstrap::channel(&config.team_url)?,
            orchestrator: covibe_bootstrap::channel(&config.orchestrator_url)?,
        };
        let limits = Arc::new(Limiters::new(
            &config.limits,
            config.max_body_bytes,
            verifier.clone(),
        ));
        Ok(Arc::new(Self {
            auth: AuthServiceClient::new(upstreams.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            team: TeamServiceClient::new(upstreams.team.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            orchestrator: OrchestratorServiceClient::new(upstreams.orchestrator.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            vm_connector: VmConnectorServiceClient::new(covibe_bootstrap::channel(
                &config.vm_connector_url,
            )?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
            // Pushes are as large as GitHub sends them.
            preview: PreviewServiceClient::new(covibe_bootstrap::channel(&config.preview_url)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(covibe_proto::limits::MAX_WEBHOOK_MESSAGE_BYTES),
            upstreams,
            cors_origins: config.cors_origins.clone(),
            dial_in_url: config.dial_in_url.clone(),
            socket_limits: config.sockets,
            open_sockets: std::sync::atomic::AtomicUsize::new(0),
            verifier,
            ready: AtomicBool::new(false),
            hub: Hub::default(),
            rooms: Rooms::default(),
            presence_seen: PresenceSeen::default(),
            presence_calls: tokio::sync::Semaphore::new(PRESENCE_CALLS),
            presence_holder: PresenceHolder::new(config.sockets.presence_heartbeat),
            max_body_bytes: config.max_body_bytes,
            limits,
            site: Site::new(config.static_dir.as_deref(), config.embedded_site),
        }))
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
