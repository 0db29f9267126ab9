//! `covibe`: the whole mesh in one process (`covibe standalone`), or one service per process
//! (`covibe auth`, `covibe team`, ...), or the vm-agent (`covibe vm-agent run ...`).

mod admin;
mod node;
mod options;
mod web;

use clap::{Parser, Subcommand};
use covibe_config::Config;
use options::{Common, load};

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
