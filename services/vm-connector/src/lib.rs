//! The vm-connector: knows each member's VMs and how to start a vm-agent on one. Strategies:
//! `local` runs the vm-agent as a child process of this machine (the default VM of
//! `covibe standalone`); `dial_in` sends spawns to a `vm-agent daemon` that dialled in from the
//! VM (see [`dial_in`]); `ssh_proxy` comes with later work.

pub mod dial_in;
mod grpc;
mod local;
pub mod store;

pub use dial_in::Daemons;
pub use grpc::VmConnectorGrpc;
pub use local::{LocalLauncher, VmAgentCommand};
pub use store::{SeaVmStore, Vm, VmStore};

use covibe_proto::tonic;
use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("vm storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("starting vm-agent: {0}")]
    Launch(#[from] std::io::Error),
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Api(api) => api.into(),
            other => ApiError::internal(other).into(),
        }
    }
}
