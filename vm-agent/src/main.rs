//! The `vm-agent` binary: parse the command line, install telemetry, run, exit with the code.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = covibe_vm_agent::Cli::parse();
    let telemetry = covibe_telemetry::init("vm-agent", cli.log_json);
    let code = match covibe_vm_agent::run_cli(cli).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "vm-agent failed");
            1
        }
    };
    telemetry.shutdown();
    std::process::exit(code);
}
