//! The agent orchestrator: every agent's lifecycle, the vm-agent link (one bidirectional gRPC
//! stream per running agent), output ingest (de-duplicated by sequence number, stored durably,
//! then kept hot and fanned out to the team), and output history.
//!
//! `domain` holds the agents over the `AgentStore` trait and the hot store; `store` implements the
//! trait with SeaORM; `link` serves `covibe.vmagent.v1.AgentLink`; `grpc` serves
//! `covibe.orchestrator.v1.OrchestratorService`.

mod convert;
mod domain;
mod error;
mod events;
#[cfg(test)]
mod fuzz;
mod grpc;
mod ingest;
mod link;
mod links;
mod model;
mod page;
mod policy;
pub mod store;
mod stream_json;
mod summary;

pub use domain::Agents;
pub use error::Error;
pub use grpc::OrchestratorGrpc;
pub use link::LinkService;
pub use model::{
    Agent, Answer, Limits, OutputBatch, OutputPage, Permission, PermissionState, Reply, Rules,
    StoredChunk,
};
pub use policy::{NoPolicy, PolicySource, TeamPolicies};
pub use store::{AgentStore, PermissionStore, SeaAgentStore};
pub use stream_json::{Outcome, Parsed, parse as parse_stream_json};
