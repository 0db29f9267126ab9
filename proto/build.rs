//! Compiles `covibe/**/*.proto` with protox (pure Rust: no `protoc` needed) and tonic-prost-build,
//! and writes the descriptor set that every server exposes through gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "covibe/common/v1/common.proto",
    "covibe/auth/v1/auth.proto",
    "covibe/team/v1/team.proto",
    "covibe/orchestrator/v1/orchestrator.proto",
    "covibe/vmagent/v1/link.proto",
    "covibe/vmconnector/v1/vmconnector.proto",
    "covibe/preview/v1/preview.proto",
    "covibe/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    let bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(out_dir.join("covibe_descriptor.bin"), bytes)?;
    tonic_prost_build::configure()
        .bytes(".covibe.vmagent.v1.Output.data")
        .bytes(".covibe.events.v1.AgentOutput.data")
        // Its Debug is written by hand, so that no log line can print a member's SSH secret.
        .skip_debug([".covibe.vmconnector.v1.SshCredential"])
        .compile_fds(fds)?;
    Ok(())
}
