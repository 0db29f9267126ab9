//! The preview service: which commit of the team's repository the shared preview runs, and
//! where. Owners and admins configure the team's preview, which gives the team its own webhook
//! secret (sealed at rest with the master key). GitHub push webhooks reach it through the
//! gateway, which forwards them unchanged: this service verifies the signature with the team's
//! secret (HMAC-SHA256 over the raw body, constant-time), acts only on pushes to the configured
//! repository and branch, drops redeliveries by delivery id, records the push and publishes
//! `preview_updated` on the team's fan-out, and queues a deploy ([`deploy`]) that runs on the
//! team's preview VM through the vm-connector. Members read their own team's preview and its
//! deploys.

mod convert;
pub mod deploy;
mod domain;
mod error;
#[cfg(test)]
mod fuzz;
mod grpc;
mod model;
pub mod store;
mod webhook;

pub use deploy::DeploySettings;
pub use domain::{PreviewDomain, reseal_secrets};
pub use error::Error;
pub use grpc::{MAX_WEBHOOK_BYTES, PreviewGrpc};
pub use model::{
    Deployment, Preview, PreviewConfig, Push, PushDelivery, PushOutcome, SealedSecret, StoredGrant,
};
pub use store::{PreviewStore, SeaPreviewStore};
pub use webhook::{PushEvent, SignatureError, verify_signature};
