//! The vm-connector: knows each member's VMs and how to start a vm-agent on one. Strategies:
//! `local` runs the vm-agent as a child process of this machine (the default VM of
//! `covibe standalone`); `dial_in` sends spawns to a `vm-agent daemon` that dialled in from the
//! VM (see [`dial_in`]); `ssh_proxy` comes with later work.

mod convert;
pub mod dial_in;
mod domain;
mod error;
mod grpc;
mod local;
mod model;
pub mod store;

pub use dial_in::Daemons;
pub use domain::VmDomain;
pub use error::Error;
pub use grpc::VmConnectorGrpc;
pub use local::{LocalLauncher, VmAgentCommand};
pub use model::{StartAgent, Strategy, Vm};
pub use store::{SeaVmStore, VmStore};
