//! One vm-connector over real gRPC on SQLite or PostgreSQL, with its SSH pool, vault and audit
//! log, and members with tokens.

use std::sync::Arc;
use std::time::Duration;

use covibe_bootstrap::{GrpcServer, bearer};
use covibe_identity::vault::Vault;
use covibe_identity::{KeyFiles, Signer};
use covibe_proto::tonic::Status;
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::{AuditLog, MemoryHotStore};
use covibe_testkit::TestDb;
use covibe_types::{SessionId, TeamId, UserId};
use covibe_vm_connector::{
    Daemons, LocalLauncher, SeaVmStore, SshPool, SshSettings, VmAgentCommand, VmConnectorGrpc,
    VmDomain, VmStore,
};

pub type Client = VmConnectorServiceClient<covibe_bootstrap::Client>;

pub struct Fixture {
    pub client: Client,
    pub signer: Signer,
    pub store: Arc<SeaVmStore>,
    pub ssh: Arc<SshPool>,
    pub db: sea_orm::DatabaseConnection,
    pub master_key: std::path::PathBuf,
    pub _keys: tempfile::TempDir,
    pub _db: TestDb,
}

/// What the connector starts on VMs, and where on them.
pub struct Options {
    pub program: VmAgentCommand,
    pub remote_dir: String,
    pub postgres: bool,
    /// How long an unused SSH connection stays open.
    pub idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            program: VmAgentCommand {
                program: "/bin/false".into(),
                prefix_args: Vec::new(),
            },
            remote_dir: ".covibe".to_owned(),
            postgres: false,
            idle: SshSettings::default().idle,
        }
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(Options::default()).await
}

pub async fn fixture_with(options: Options) -> Fixture {
    let db = if options.postgres {
        TestDb::postgres().await
    } else {
        TestDb::sqlite()
    };
    let conn = covibe_storage::connect(&db.url).await.unwrap();
    let store = Arc::new(SeaVmStore::new(conn.clone()).await.unwrap());
    let keys = tempfile::tempdir().unwrap();
    let (signer, verifier) = covibe_identity::load_or_generate(&KeyFiles {
        signing: keys.path().join("k.pem"),
        verifying: keys.path().join("k.pub.pem"),
    })
    .unwrap();
    let local = LocalLauncher::new(
        VmAgentCommand {
            program: "/bin/false".into(),
            prefix_args: Vec::new(),
        },
        "true {task}".to_owned(),
        keys.path().to_owned(),
        keys.path().to_owned(),
    );
    let daemons = Daemons::start(
        Arc::new(MemoryHotStore::new(16)),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let ssh = SshPool::new(
        SshSettings {
            remote_dir: options.remote_dir,
            connect_timeout: Duration::from_secs(5),
            idle: options.idle,
            ..SshSettings::default()
        },
        options.program,
        "true {task}".to_owned(),
    )
    .unwrap();
    let master_key = keys.path().join("master.key");
    let vault = Vault::open_file(&master_key, true).unwrap();
    let audit = AuditLog::new(conn.clone()).await.unwrap();
    let store_dyn: Arc<dyn VmStore> = store.clone();
    let domain = VmDomain::new(
        store_dyn.clone(),
        local,
        daemons.clone(),
        ssh.clone(),
        vault,
        audit,
    );
    let grpc = VmConnectorGrpc::new(domain, store_dyn, verifier, daemons);
    let server = GrpcServer::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .add_service(grpc.into_server());
    let client = VmConnectorServiceClient::new(covibe_bootstrap::channel(&server.url()).unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    Fixture {
        client,
        signer,
        store,
        ssh,
        db: conn,
        master_key,
        _keys: keys,
        _db: db,
    }
}

pub struct Member {
    pub user: UserId,
    pub team: TeamId,
    pub token: String,
}

pub fn member(signer: &Signer, team: TeamId) -> Member {
    let user = UserId::new();
    let (token, _) = signer
        .access_token(user, team, SessionId::new(), Duration::from_secs(600))
        .unwrap();
    Member { user, team, token }
}

pub async fn register(client: &mut Client, who: &Member, strategy: &str) -> pb::Vm {
    let request = pb::RegisterVmRequest {
        name: "box".to_owned(),
        strategy: strategy.to_owned(),
        ..Default::default()
    };
    client
        .register_vm(bearer(request, &who.token))
        .await
        .unwrap()
        .into_inner()
}

pub async fn mint(client: &mut Client, who: &Member, vm_id: &str) -> Result<String, Status> {
    let request = pb::CreateVmTokenRequest {
        vm_id: vm_id.to_owned(),
    };
    Ok(client
        .create_vm_token(bearer(request, &who.token))
        .await?
        .into_inner()
        .vm_token)
}
