//! The preview service: which commit of the team's repository the shared preview runs, and
//! where. GitHub push webhooks reach it through the gateway, which forwards them unchanged: this
//! service verifies the signature itself (HMAC-SHA256 over the raw body, constant-time), drops
//! redeliveries by delivery id, records the push and publishes `preview_updated` on the team's
//! fan-out. Members read their own team's preview. Deploying to the preview VM comes with later
//! work.
//!
//! One webhook secret serves the whole deployment (`preview.webhook_secret`); per-team secrets
//! (so a delivery signed for one team cannot be replayed to another team's URL) are future work.

mod convert;
mod domain;
mod error;
mod grpc;
mod model;
pub mod store;
mod webhook;

pub use domain::PreviewDomain;
pub use error::Error;
pub use grpc::PreviewGrpc;
pub use model::{Preview, Push, PushDelivery, PushOutcome};
pub use store::{PreviewStore, SeaPreviewStore};
pub use webhook::{PushEvent, SignatureError, verify_signature};
