//! `covibe.preview.v1.PreviewService` over the domain: check the caller, convert, call, map errors.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::preview::v1 as pb;
use covibe_proto::preview::v1::preview_service_server::{PreviewService, PreviewServiceServer};
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_storage::HotStore;

use crate::domain::PreviewDomain;
use crate::store::PreviewStore;

pub struct PreviewGrpc {
    domain: PreviewDomain,
    verifier: Verifier,
}

impl PreviewGrpc {
    pub fn new(
        store: Arc<dyn PreviewStore>,
        verifier: Verifier,
        hot: Arc<dyn HotStore>,
        webhook_secret: Option<String>,
    ) -> Self {
        Self {
            domain: PreviewDomain::new(store, hot, webhook_secret),
            verifier,
        }
    }

    pub fn into_server(self) -> PreviewServiceServer<Self> {
        PreviewServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl PreviewService for PreviewGrpc {
    async fn get_preview(
        &self,
        request: Request<pb::GetPreviewRequest>,
    ) -> Result<Response<pb::Preview>, Status> {
        let (_, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        Ok(Response::new(self.domain.preview(team).await?.into()))
    }

    /// Signed by the team's webhook secret, not by a member: the domain checks it first.
    async fn receive_push(
        &self,
        request: Request<pb::ReceivePushRequest>,
    ) -> Result<Response<pb::ReceivePushResponse>, Status> {
        let outcome = self
            .domain
            .receive_push(request.into_inner().into())
            .await?;
        Ok(Response::new(outcome.into()))
    }
}
