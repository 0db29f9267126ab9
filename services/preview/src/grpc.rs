//! `covibe.preview.v1.PreviewService` over the domain: check the caller, convert, call, map errors.

use std::sync::Arc;

use covibe_bootstrap::Client;
use covibe_identity::Verifier;
use covibe_identity::vault::Vault;
use covibe_proto::preview::v1 as pb;
use covibe_proto::preview::v1::preview_service_server::{PreviewService, PreviewServiceServer};
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::HotStore;
use covibe_types::{TeamId, UserId};

use crate::deploy::{DeploySettings, Deployer};
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
        vault: Vault,
        team: TeamServiceClient<Client>,
        vmc: VmConnectorServiceClient<Client>,
        deploys: DeploySettings,
    ) -> Self {
        // The deploy queue is worked by every preview process.
        let deployer = Deployer::new(
            store.clone(),
            hot.clone(),
            vault.clone(),
            vmc.clone(),
            deploys,
        );
        deployer.spawn();
        Self {
            domain: PreviewDomain::new(store, hot, vault, team, vmc, deployer),
            verifier,
        }
    }

    /// The server, taking webhook bodies as large as GitHub sends.
    pub fn into_server(self) -> PreviewServiceServer<Self> {
        PreviewServiceServer::new(self)
            .max_decoding_message_size(covibe_proto::limits::MAX_WEBHOOK_MESSAGE_BYTES)
            .max_encoding_message_size(covibe_proto::limits::MAX_MESSAGE_BYTES)
    }

    /// The member a request's token names, and the token (forwarded to the team service).
    fn member<T>(&self, request: &Request<T>) -> Result<(UserId, TeamId, String), Status> {
        let claims = self.verifier.verify_metadata(request.metadata())?;
        let (user, team) = claims.member()?;
        let token = covibe_identity::bearer_from_metadata(request.metadata())
            .unwrap_or_default()
            .to_owned();
        Ok((user, team, token))
    }
}

pub use covibe_proto::limits::MAX_WEBHOOK_BYTES;

#[tonic::async_trait]
impl PreviewService for PreviewGrpc {
    async fn get_preview(
        &self,
        request: Request<pb::GetPreviewRequest>,
    ) -> Result<Response<pb::Preview>, Status> {
        let (_, team, _) = self.member(&request)?;
        Ok(Response::new(self.domain.preview(team).await?.into()))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetPreviewConfigRequest>,
    ) -> Result<Response<pb::PreviewConfig>, Status> {
        let (user, team, token) = self.member(&request)?;
        let config = self.domain.config(user, team, &token).await?;
        Ok(Response::new(crate::convert::config_pb(config)))
    }

    async fn put_config(
        &self,
        request: Request<pb::PutPreviewConfigRequest>,
    ) -> Result<Response<pb::PutPreviewConfigResponse>, Status> {
        let (user, team, token) = self.member(&request)?;
        let config = crate::convert::config_of(request.into_inner().config.unwrap_or_default())?;
        let (config, secret) = self.domain.put_config(user, team, &token, &config).await?;
        Ok(Response::new(pb::PutPreviewConfigResponse {
            config: Some(crate::convert::config_pb(Some(config))),
            webhook_secret: secret.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let (user, team, token) = self.member(&request)?;
        let secret = self.domain.rotate_secret(user, team, &token).await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook_secret: secret.to_string(),
        }))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let (_, team, _) = self.member(&request)?;
        let all = self
            .domain
            .deployments(team, request.into_inner().limit)
            .await?;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: all.into_iter().map(crate::convert::deployment_pb).collect(),
        }))
    }

    async fn open_preview(
        &self,
        request: Request<pb::OpenPreviewRequest>,
    ) -> Result<Response<pb::OpenPreviewResponse>, Status> {
        let (_, team, _) = self.member(&request)?;
        let (capability, expires_at_ms) = self.domain.open_preview(team)?;
        Ok(Response::new(pb::OpenPreviewResponse {
            capability,
            expires_at_ms,
        }))
    }

    /// The capability is the credential, not a member's token.
    async fn resolve_preview(
        &self,
        request: Request<pb::ResolvePreviewRequest>,
    ) -> Result<Response<pb::ResolvePreviewResponse>, Status> {
        let r = request.into_inner();
        let upstream = self
            .domain
            .resolve_preview(&r.team_id, &r.capability)
            .await?;
        Ok(Response::new(pb::ResolvePreviewResponse { upstream }))
    }

    async fn redeploy(
        &self,
        request: Request<pb::RedeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let (user, team, token) = self.member(&request)?;
        let deployment = self.domain.redeploy(user, team, &token).await?;
        Ok(Response::new(crate::convert::deployment_pb(deployment)))
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
