//! The options every subcommand that runs a service (or an operator task) takes, and the
//! configuration they load.

use std::path::PathBuf;

use covibe_config::{Config, Overrides};

#[derive(Debug, clap::Args)]
pub struct Common {
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

pub fn load(common: &Common) -> anyhow::Result<Option<Config>> {
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
