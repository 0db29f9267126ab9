//! Composition: builds each service from the configuration and serves it, alone (one service
//! per process, over PostgreSQL and Redis) or all together (`standalone`, over SQLite and the
//! in-process hot store). Either way every service is reached over real gRPC on its own
//! listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use covibe_bootstrap::{GrpcServer, Shutdown, shutdown_signal};
use covibe_config::Config;
use covibe_identity::revocation::Ender;
use covibe_identity::{KeyFiles, Revocations, Signer, Verifier};
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::{HotStore, MemoryHotStore, RedisHotStore};
use covibe_types::ApiError;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Auth,
    Team,
    Orchestrator,
    VmConnector,
    Preview,
    Gateway,
}

impl Role {
    pub fn service_name(self) -> &'static str {
        match self {
            Self::Standalone => "covibe",
            Self::Auth => "covibe-auth",
            Self::Team => "covibe-team",
            Self::Orchestrator => "covibe-orchestrator",
            Self::VmConnector => "covibe-vm-connector",
            Self::Preview => "covibe-preview",
            Self::Gateway => "covibe-gateway",
        }
    }
}

fn key_files(config: &Config) -> KeyFiles {
    KeyFiles {
        signing: config.signing_key_file(),
        verifying: config.verifying_key_file(),
    }
}

/// What every service of a process shares about identity: the verifier (its keys and the
/// ended sessions, kept in step with the hot store), and how to end sessions everywhere.
#[derive(Clone)]
struct Identity {
    verifier: Verifier,
    ender: Ender,
    /// Standalone makes the keys it lacks; a service alone requires them.
    standalone: bool,
}

impl Identity {
    /// Loads the verifying keys (standalone creates the first key pair if there is none; a
    /// service alone never makes up a key) and follows the ended sessions in `hot`.
    async fn load(
        config: &Config,
        hot: &Arc<dyn HotStore>,
        standalone: bool,
    ) -> anyhow::Result<Self> {
        let files = key_files(config);
        let verifier = if standalone {
            covibe_identity::load_or_generate(&files).map(|(_, verifier)| verifier)
        } else {
            covibe_identity::load_verifier(&files)
        }
        .context("loading the token verifying keys")?;
        let revocations = Revocations::default();
        covibe_identity::revocation::follow(hot.clone(), revocations.clone())
            .await
            .context("following ended sessions in the hot store")?;
        Ok(Self {
            verifier: verifier.with_revocations(revocations.clone()),
            ender: Ender {
                hot: hot.clone(),
                revocations,
                hold: Duration::from_secs(config.auth.access_ttl_secs),
            },
            standalone,
        })
    }
}

/// How often the owners of ended sessions (auth, team) record them again in the hot store,
/// in case it restarted and lost them.
const REASSERT_EVERY: Duration = Duration::from_secs(60);

/// Records `what` again in the hot store now and every `period` (its owner's database is the
/// truth; a hot store that restarted forgot it).
fn every<F, Fut>(period: Duration, what: &'static str, mut record: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<usize, ApiError>> + Send,
{
    tokio::spawn(async move {
        loop {
            if let Err(err) = record().await {
                tracing::warn!(error = %err, what, "could not record again in the hot store");
            }
            tokio::time::sleep(period).await;
        }
    });
}

fn signer(config: &Config) -> anyhow::Result<Signer> {
    covibe_identity::load_signer(&key_files(config)).context("loading the token signing key")
}

/// What signs the orchestrator's service token: the signing key if this process has it, else
/// the orchestrator's own service key if one is configured.
fn policy_signer(config: &Config) -> anyhow::Result<Signer> {
    let no_signing_key = match signer(config) {
        Ok(signer) => return Ok(signer),
        Err(err) => err,
    };
    let Some(path) = &config.auth.service_key_file else {
        return Err(no_signing_key.context("no service key either (auth.service_key_file)"));
    };
    let signer =
        covibe_identity::load_service_signer(path, "orchestrator", &config.verifying_key_file())
            .with_context(|| {
                format!("loading the orchestrator's service key {}", path.display())
            })?;
    tracing::info!(kid = %signer.kid(), "the orchestrator signs its service tokens with its own key");
    Ok(signer)
}

async fn database(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    covibe_storage::connect(&url)
        .await
        .with_context(|| format!("connecting to the database ({})", redact(&url)))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn hot_store(config: &Config, required: bool) -> anyhow::Result<Arc<dyn HotStore>> {
    match &config.redis_url {
        Some(url) => Ok(Arc::new(
            RedisHotStore::connect(
                url,
                &config.redis_key_prefix,
                config.limits.ring_buffer_chunks,
                // The same TTL as the in-process store's (the database keeps every line).
                i64::try_from(covibe_storage::RING_TTL.as_secs()).unwrap_or(i64::MAX),
            )
            .await
            .context("connecting to redis")?,
        )),
        None if required => anyhow::bail!(
            "this service runs in its own process and needs redis_url (COVIBE_REDIS_URL) to reach the others"
        ),
        None => Ok(Arc::new(MemoryHotStore::new(
            config.limits.ring_buffer_chunks,
        ))),
    }
}

/// Raises the open-files soft limit to the hard limit: every socket is a file descriptor, and
/// many machines start processes at 1,024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(err) => {
                tracing::warn!(soft, hard, error = %err, "could not raise the open-files limit")
            }
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-files limit"),
        Err(err) => tracing::warn!(error = %err, "could not read the open-files limit"),
    }
}

fn announce(name: &str, url: &str) {
    // One plain line on stdout, for people and scripts alike.
    println!("{name} listening on {url}");
    tracing::info!(service = name, url, "listening");
}

fn vm_agent_command(config: &Config) -> anyhow::Result<covibe_vm_connector::VmAgentCommand> {
    match &config.vm_agent_bin {
        Some(program) => Ok(covibe_vm_connector::VmAgentCommand {
            program: program.clone(),
            prefix_args: Vec::new(),
        }),
        None => {
            covibe_vm_connector::VmAgentCommand::current_exe().context("finding the covibe binary")
        }
    }
}

struct Built {
    server: GrpcServer,
    name: &'static str,
}

async fn team(
    config: &Config,
    db: DatabaseConnection,
    hot: Arc<dyn HotStore>,
    server: GrpcServer,
    identity: &Identity,
) -> anyhow::Result<Built> {
    let store = Arc::new(
        covibe_team::SeaTeamStore::new(db)
            .await
            .context("team storage")?,
    );
    let domain = Arc::new(
        covibe_team::TeamDomain::new(
            store.clone(),
            config.auth.invite_ttl_secs,
            config.auth.invite_max_uses,
        )
        .with_join_limit(config.limits.team_joins_per_minute)
        .with_session_ender(identity.ender.clone()),
    );
    every(REASSERT_EVERY, "removed members", {
        let domain = domain.clone();
        move || {
            let domain = domain.clone();
            async move { domain.reassert_removed().await.map_err(ApiError::from) }
        }
    });
    // Chat is durable in the team store; presence and the chat fan-out go through the hot store.
    let chat =
        Arc::new(covibe_team::Chat::new(store, hot).with_presence_ttl(config.presence_ttl()));
    let grpc = covibe_team::TeamGrpc::new(domain, chat, identity.verifier.clone());
    Ok(Built {
        server: server.add_service(grpc.into_server()),
        name: "team",
    })
}

async fn auth(
    config: &Config,
    db: DatabaseConnection,
    server: GrpcServer,
    team_url: &str,
    identity: &Identity,
) -> anyhow::Result<Built> {
    let signer = signer(config)?;
    let store = covibe_auth::SeaSessionStore::new(db)
        .await
        .context("auth storage")?;
    let sessions = Arc::new(
        covibe_auth::Sessions::new(
            signer,
            Arc::new(store),
            Duration::from_secs(config.auth.access_ttl_secs),
            Duration::from_secs(config.auth.refresh_ttl_secs),
        )
        .with_ender(identity.ender.clone()),
    );
    every(REASSERT_EVERY, "ended sessions", {
        let sessions = sessions.clone();
        move || {
            let sessions = sessions.clone();
            async move { sessions.reassert_ended().await.map_err(ApiError::from) }
        }
    });
    let team = TeamServiceClient::new(covibe_bootstrap::channel(team_url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = covibe_auth::AuthGrpc::new(sessions, identity.verifier.clone(), team);
    Ok(Built {
        server: server.add_service(grpc.into_server()),
        name: "auth",
    })
}

async fn orchestrator(
    config: &Config,
    db: DatabaseConnection,
    hot: Arc<dyn HotStore>,
    server: GrpcServer,
    (vm_connector_url, team_url): (&str, &str),
    identity: &Identity,
) -> anyhow::Result<Built> {
    let store = covibe_orchestrator::SeaAgentStore::new(db.clone())
        .await
        .context("orchestrator storage")?;
    let audit = covibe_storage::AuditLog::new(db)
        .await
        .context("audit log storage")?;
    let connector = VmConnectorServiceClient::new(covibe_bootstrap::channel(vm_connector_url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let link_url = config.link_url.clone().unwrap_or_else(|| server.url());
    let limits = covibe_orchestrator::Limits {
        max_task_bytes: config.limits.max_task_bytes,
        kill_grace_ms: config.limits.kill_grace_ms,
        max_running_agents: config.limits.max_running_agents,
        spawns_per_minute: config.limits.spawns_per_minute,
        lost_after_ms: i64::try_from(config.limits.lost_after_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        approval_timeout_ms: i64::try_from(
            config.limits.approval_timeout_secs.saturating_mul(1000),
        )
        .unwrap_or(i64::MAX),
        ..Default::default()
    };
    // Tool requests are decided by the team's policy, read from the team service with a
    // service token of the orchestrator's own: signed with the signing key where it has one
    // (standalone), else with its own service key (where only auth holds the signing key).
    // Without either every request goes to the agent's owner.
    let policy: Arc<dyn covibe_orchestrator::PolicySource> = match policy_signer(config) {
        Ok(signer) => {
            let team = TeamServiceClient::new(covibe_bootstrap::channel(team_url)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Arc::new(covibe_orchestrator::TeamPolicies::new(team, signer))
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "no key to sign the orchestrator's service token: the team's tool-use policy cannot be read, every tool request goes to the agent's owner (give the orchestrator a key of its own with `covibe admin add-service-key orchestrator` and auth.service_key_file)");
            Arc::new(covibe_orchestrator::NoPolicy)
        }
    };
    let agents = Arc::new(
        covibe_orchestrator::Agents::new(Arc::new(store), hot, connector, link_url, limits, audit)
            .with_policy(policy),
    );
    agents.spawn_lost_sweeper();
    agents.spawn_approval_sweeper();
    agents.spawn_removal_watcher(identity.verifier.revocations().clone());
    let link = covibe_orchestrator::LinkService::start(agents.clone())
        .await
        .context("orchestrator control channel")?;
    let grpc = covibe_orchestrator::OrchestratorGrpc::new(agents, identity.verifier.clone());
    Ok(Built {
        server: server
            .add_service(grpc.into_server())
            .add_service(link.into_server()),
        name: "orchestrator",
    })
}

async fn vm_connector(
    config: &Config,
    db: DatabaseConnection,
    hot: Arc<dyn HotStore>,
    server: GrpcServer,
    identity: &Identity,
) -> anyhow::Result<Built> {
    let store = covibe_vm_connector::SeaVmStore::new(db.clone())
        .await
        .context("vm-connector storage")?;
    let project_dir = match &config.project_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("finding the current directory")?,
    };
    let local = covibe_vm_connector::LocalLauncher::new(
        vm_agent_command(config)?,
        config.agent_command.clone(),
        project_dir,
        config.data_dir.clone(),
    );
    // Spawns for `dial_in` VMs reach the replica holding the VM's daemon stream over the hot
    // store's control channel.
    let daemons = covibe_vm_connector::Daemons::start(
        hot,
        covibe_vm_connector::dial_in::DEFAULT_SPAWN_TIMEOUT,
    )
    .await
    .context("vm-connector control channel")?;
    let store: Arc<dyn covibe_vm_connector::VmStore> = Arc::new(store);
    let key_file = config.master_key_file();
    let vault = covibe_identity::vault::Vault::open_file(&key_file, identity.standalone)
        .with_context(|| format!("loading the master key {}", key_file.display()))?;
    let audit = covibe_storage::AuditLog::new(db)
        .await
        .context("audit log storage")?;
    let ssh = covibe_vm_connector::SshPool::new(
        covibe_vm_connector::SshSettings {
            remote_dir: config.ssh.remote_dir.clone(),
            connect_timeout: Duration::from_secs(config.ssh.connect_timeout_secs),
            command_timeout: Duration::from_secs(config.ssh.command_timeout_secs),
            idle: Duration::from_secs(config.ssh.idle_secs),
        },
        vm_agent_command(config)?,
        config.agent_command.clone(),
    )
    .context("ssh proxy")?;
    let domain = covibe_vm_connector::VmDomain::new(
        store.clone(),
        local,
        daemons.clone(),
        ssh,
        vault,
        audit,
    );
    let grpc = covibe_vm_connector::VmConnectorGrpc::new(
        domain,
        store,
        identity.verifier.clone(),
        daemons,
    );
    Ok(Built {
        server: server.add_service(grpc.into_server()),
        name: "vm-connector",
    })
}

async fn preview(
    config: &Config,
    db: DatabaseConnection,
    hot: Arc<dyn HotStore>,
    server: GrpcServer,
    (team_url, vmc_url): (&str, &str),
    identity: &Identity,
) -> anyhow::Result<Built> {
    let store = covibe_preview::SeaPreviewStore::new(db)
        .await
        .context("preview storage")?;
    let key_file = config.master_key_file();
    let vault = covibe_identity::vault::Vault::open_file(&key_file, identity.standalone)
        .with_context(|| format!("loading the master key {}", key_file.display()))?;
    // Owners and admins configure the preview: the team service knows who they are.
    let team = TeamServiceClient::new(covibe_bootstrap::channel(team_url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Deploys run on the team's preview VM through the vm-connector.
    let vmc = VmConnectorServiceClient::new(covibe_bootstrap::channel(vmc_url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let deploys = covibe_preview::DeploySettings {
        timeout: Duration::from_secs(config.preview.deploy_timeout_secs),
        health_timeout: Duration::from_secs(config.preview.health_timeout_secs),
        attempts: config.preview.deploy_attempts,
        run_queue: config.preview.run_deploys,
        ..Default::default()
    };
    // The hot store carries `preview_updated` on the team's fan-out.
    let grpc = covibe_preview::PreviewGrpc::new(
        Arc::new(store),
        identity.verifier.clone(),
        hot,
        vault,
        team,
        vmc,
        deploys,
    );
    Ok(Built {
        server: server.add_service(grpc.into_server()),
        name: "preview",
    })
}

fn serve(built: Built, shutdown: &Shutdown) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let url = built.server.url();
    announce(built.name, &url);
    let handle = built.server.serving_handle();
    let wait = shutdown.wait();
    let name = built.name;
    tokio::spawn(async move {
        let drain = async move {
            wait.await;
            handle.set_not_serving().await;
        };
        built
            .server
            .serve(drain)
            .await
            .with_context(|| format!("{name} server"))
    })
}

async fn gateway(
    config: &Config,
    hot: Arc<dyn HotStore>,
    endpoints: &covibe_config::Endpoints,
    shutdown: &Shutdown,
    identity: &Identity,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    raise_fd_limit();
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the gateway to {}", config.http_addr))?;
    let gw_config = covibe_gateway::GatewayConfig {
        auth_url: endpoints.auth.clone(),
        team_url: endpoints.team.clone(),
        orchestrator_url: endpoints.orchestrator.clone(),
        vm_connector_url: endpoints.vm_connector.clone(),
        dial_in_url: config
            .dial_in_url
            .clone()
            .unwrap_or_else(|| endpoints.vm_connector.clone()),
        preview_url: endpoints.preview.clone(),
        max_body_bytes: config.limits.max_body_bytes,
        limits: covibe_gateway::HttpLimits {
            rate_per_ip_per_sec: f64::from(config.limits.rate_per_ip_per_sec),
            burst_per_ip: config.limits.burst_per_ip,
            rate_per_user_per_sec: f64::from(config.limits.rate_per_user_per_sec),
            burst_per_user: config.limits.burst_per_user,
            login_per_ip_per_min: f64::from(config.limits.login_per_ip_per_min),
            login_burst_per_ip: config.limits.login_burst_per_ip,
            request_timeout: std::time::Duration::from_millis(config.limits.request_timeout_ms),
            max_concurrent_requests: config.limits.max_concurrent_requests,
            trust_forwarded_for: config.limits.trust_forwarded_for,
        },
        static_dir: config.static_dir.clone(),
        embedded_site: Some(covibe_gateway::EmbeddedSite(crate::web::WEB_ASSETS)),
        cors_origins: config.cors_allowed_origins.clone(),
        sockets: covibe_gateway::SocketLimits {
            max_sockets: config.limits.max_sockets,
            max_per_address: config.limits.max_sockets_per_address,
            join_timeout: std::time::Duration::from_millis(config.limits.socket_join_timeout_ms),
            max_message_bytes: config.limits.max_socket_message_bytes,
            presence_heartbeat: config.presence_heartbeat(),
        },
    };
    let gw = covibe_gateway::Gateway::new(&gw_config, identity.verifier.clone())?;
    let addr = listener.local_addr()?;
    let wait = shutdown.wait();
    let task = tokio::spawn(async move {
        covibe_gateway::serve(gw, hot, listener, wait)
            .await
            .context("gateway")
    });
    announce("gateway", &format!("http://{addr}"));
    Ok(task)
}

pub async fn run(role: Role, config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.trigger();
        });
    }
    let mut tasks = Vec::new();
    match role {
        Role::Standalone => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("creating the data directory {}", config.data_dir.display())
            })?;
            let db = database(&config).await?;
            let hot = hot_store(&config, false).await?;
            let identity = Identity::load(&config, &hot, true).await?;
            let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let (team_srv, auth_srv, orch_srv, vmc_srv, prev_srv) = (
                GrpcServer::bind(loopback).await?,
                GrpcServer::bind(loopback).await?,
                GrpcServer::bind(loopback).await?,
                GrpcServer::bind(loopback).await?,
                GrpcServer::bind(loopback).await?,
            );
            let (team_url, auth_url, orch_url, vmc_url, prev_url) = (
                team_srv.url(),
                auth_srv.url(),
                orch_srv.url(),
                vmc_srv.url(),
                prev_srv.url(),
            );
            let loopback_endpoints = covibe_config::Endpoints {
                auth: auth_url,
                team: team_url.clone(),
                orchestrator: orch_url,
                vm_connector: vmc_url.clone(),
                preview: prev_url,
            };
            let id = &identity;
            let built = vec![
                auth(&config, db.clone(), auth_srv, &team_url, id).await?,
                team(&config, db.clone(), hot.clone(), team_srv, id).await?,
                orchestrator(
                    &config,
                    db.clone(),
                    hot.clone(),
                    orch_srv,
                    (&vmc_url, &team_url),
                    id,
                )
                .await?,
                vm_connector(&config, db.clone(), hot.clone(), vmc_srv, id).await?,
                preview(
                    &config,
                    db,
                    hot.clone(),
                    prev_srv,
                    (&team_url, &vmc_url),
                    id,
                )
                .await?,
            ];
            for b in built {
                tasks.push(serve(b, &shutdown));
            }
            tasks.push(gateway(&config, hot, &loopback_endpoints, &shutdown, id).await?);
        }
        Role::Gateway => {
            let hot = hot_store(&config, true).await?;
            let identity = Identity::load(&config, &hot, false).await?;
            tasks.push(gateway(&config, hot, &config.endpoints, &shutdown, &identity).await?);
        }
        Role::Auth | Role::Team | Role::Orchestrator | Role::VmConnector | Role::Preview => {
            let server = GrpcServer::bind(config.grpc_addr).await?;
            // Every service follows the ended sessions, which live in the hot store.
            let hot = hot_store(&config, true).await?;
            let identity = Identity::load(&config, &hot, false).await?;
            let id = &identity;
            let db = database(&config).await?;
            let built = match role {
                Role::Auth => auth(&config, db, server, &config.endpoints.team, id).await?,
                Role::Team => team(&config, db, hot, server, id).await?,
                Role::Orchestrator => {
                    let e = &config.endpoints;
                    orchestrator(&config, db, hot, server, (&e.vm_connector, &e.team), id).await?
                }
                Role::VmConnector => vm_connector(&config, db, hot, server, id).await?,
                _ => {
                    let e = &config.endpoints;
                    preview(&config, db, hot, server, (&e.team, &e.vm_connector), id).await?
                }
            };
            tasks.push(serve(built, &shutdown));
        }
    }
    // The first task to end (an error, or the drain after a signal) ends the node.
    let (first, _, rest) = futures_select_all(tasks).await;
    shutdown.trigger();
    for task in rest {
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!("a server did not drain in time");
        }
    }
    first
}

async fn futures_select_all(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> (
    anyhow::Result<()>,
    usize,
    Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    let (result, index, rest) = futures::future::select_all(tasks).await;
    let result = match result {
        Ok(inner) => inner,
        Err(join) => Err(anyhow::anyhow!("server task failed: {join}")),
    };
    (result, index, rest)
}
