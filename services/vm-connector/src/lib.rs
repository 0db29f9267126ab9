//! The vm-connector: knows each member's VMs and how to start a vm-agent on one. Strategies:
//! `local` runs the vm-agent as a child process of this machine (the default VM of
//! `covibe standalone`); `dial_in` sends spawns to a `vm-agent daemon` that dialled in from the
//! VM (see [`dial_in`]); `ssh_proxy` logs in over SSH with the member's sealed credential and
//! starts the vm-agent there (see [`ssh`]).

mod convert;
pub mod dial_in;
mod domain;
mod error;
#[cfg(test)]
mod fuzz;
mod grpc;
mod local;
mod model;
pub mod ssh;
pub mod store;

pub use dial_in::Daemons;
pub use domain::{NewCredential, NewVm, VmChanges, VmDomain, VmView, reseal_credentials};
pub use error::Error;
pub use grpc::VmConnectorGrpc;
pub use local::{LocalLauncher, VmAgentCommand};
pub use model::{CredentialKind, StartAgent, StoredCredential, Strategy, Vm};
pub use ssh::{SshPool, SshSettings};
pub use store::{SeaVmStore, VmStore};
