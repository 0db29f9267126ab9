//! `covibe`: the whole mesh in one process (`covibe standalone`), or one service per process
//! (`covibe auth`, `covibe team`, ...), or the vm-agent (`covibe vm-agent run ...`).

mod admin;
mod node;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use covibe_config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "covibe",
    version,
    about = "Run a team's AI coding agents together"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// TOML configuration file (defaults < file < COVIBE_* environment < flags).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Gateway listen address (COVIBE_HTTP_ADDR).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// gRPC listen address of a single service (COVIBE_GRPC_ADDR).
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    /// Data directory (COVIBE_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL (COVIBE_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis URL (COVIBE_REDIS_URL).
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process over SQLite and in-process buffers, agents on this machine.
    Standalone(Common),
    /// The auth service alone.
    Auth(Common),
    /// The team service alone.
    Team(Common),
    /// The agent orchestrator alone.
    Orchestrator(Common),
    /// The vm-connector alone.
    VmConnector(Common),
    /// The preview service alone.
    Preview(Common),
    /// The gateway alone (REST and Socket.io).
    Gateway(Common),
    /// The vm-agent that runs on a member's VM.
    VmAgent(covibe_vm_agent::Cli),
    /// Operator tasks on the server: signing keys, recovery codes.
    #[command(subcommand)]
    Admin(admin::Admin),
}

fn load(common: &Common) -> anyhow::Result<Option<Config>> {
    let overrides = Overrides {
        http_addr: common.http_addr,
        grpc_addr: common.grpc_addr,
        data_dir: common.data_dir.clone(),
        database_url: common.database_url.clone(),
        redis_url: common.redis_url.clone(),
    };
    let config = Config::load(common.config.as_deref(), &overrides)?;
    if common.print_config {
        print!("{}", config.to_toml()?);
        return Ok(None);
    }
    Ok(Some(config))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (common, role) = match cli.command {
        Command::VmAgent(agent) => {
            let code = runtime(None)?.block_on(async {
                let _telemetry = covibe_telemetry::init("covibe-vm-agent", false);
                covibe_vm_agent::run_cli(agent).await
            })?;
            std::process::exit(code);
        }
        Command::Admin(task) => {
            return runtime(Some(1))?.block_on(async {
                let _telemetry = covibe_telemetry::init("covibe-admin", false);
                admin::run(task).await
            });
        }
        Command::Standalone(c) => (c, node::Role::Standalone),
        Command::Auth(c) => (c, node::Role::Auth),
        Command::Team(c) => (c, node::Role::Team),
        Command::Orchestrator(c) => (c, node::Role::Orchestrator),
        Command::VmConnector(c) => (c, node::Role::VmConnector),
        Command::Preview(c) => (c, node::Role::Preview),
        Command::Gateway(c) => (c, node::Role::Gateway),
    };
    let Some(config) = load(&common)? else {
        return Ok(());
    };
    runtime(Some(config.workers))?.block_on(run(role, config))?;
    // Not waiting for blocking work still running (a SQLite connection's thread, say).
    std::process::exit(0);
}

/// The process's runtime: with one worker, every task on the main thread; `None` is tokio's
/// default (a worker per core; the vm-agent, which has no configuration).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

async fn run(role: node::Role, config: Config) -> anyhow::Result<()> {
    let telemetry = covibe_telemetry::init(role.service_name(), config.log_format == "json");
    let result = node::run(role, config).await;
    telemetry.shutdown();
    result
}
