//! `covibe.vmconnector.v1.VmConnectorService` over the domain: check the caller, convert, call,
//! map errors.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::tonic::{self, Request, Response, Status, Streaming};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::vm_connector_service_server::{
    VmConnectorService, VmConnectorServiceServer,
};
use covibe_types::{TeamId, UserId};

use crate::dial_in::{self, Daemons};
use crate::domain::VmDomain;
use crate::local::LocalLauncher;
use crate::store::VmStore;

pub struct VmConnectorGrpc {
    domain: VmDomain,
    store: Arc<dyn VmStore>,
    verifier: Verifier,
    daemons: Arc<Daemons>,
}

impl VmConnectorGrpc {
    pub fn new(
        store: Arc<dyn VmStore>,
        verifier: Verifier,
        local: Arc<LocalLauncher>,
        daemons: Arc<Daemons>,
    ) -> Self {
        Self {
            domain: VmDomain::new(store.clone(), local, daemons.clone()),
            store,
            verifier,
            daemons,
        }
    }

    pub fn into_server(self) -> VmConnectorServiceServer<Self> {
        VmConnectorServiceServer::new(self)
    }

    /// The member a request's token names.
    fn member<T>(&self, request: &Request<T>) -> Result<(UserId, TeamId), Status> {
        Ok(self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?)
    }
}

#[tonic::async_trait]
impl VmConnectorService for VmConnectorGrpc {
    async fn start_agent(
        &self,
        request: Request<pb::StartAgentRequest>,
    ) -> Result<Response<pb::StartAgentResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let vm = self
            .domain
            .start_agent(user, team, request.into_inner().into())
            .await?;
        Ok(Response::new(pb::StartAgentResponse {
            vm_id: vm.id.to_string(),
            strategy: vm.strategy.as_str().to_owned(),
        }))
    }

    async fn list_vms(
        &self,
        request: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let vms = self.domain.vms(user, team).await?;
        Ok(Response::new(pb::ListVmsResponse {
            vms: vms.iter().map(Into::into).collect(),
        }))
    }

    async fn register_vm(
        &self,
        request: Request<pb::RegisterVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let vm = self
            .domain
            .register(user, team, &r.name, &r.strategy)
            .await?;
        Ok(Response::new((&vm).into()))
    }

    async fn update_vm(
        &self,
        request: Request<pb::UpdateVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let vm = self.domain.rename(user, team, &r.vm_id, &r.name).await?;
        Ok(Response::new((&vm).into()))
    }

    async fn create_vm_token(
        &self,
        request: Request<pb::CreateVmTokenRequest>,
    ) -> Result<Response<pb::CreateVmTokenResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let token = self
            .domain
            .create_token(user, team, &request.into_inner().vm_id)
            .await?;
        Ok(Response::new(pb::CreateVmTokenResponse { vm_token: token }))
    }

    type DialStream = dial_in::DialStream;

    /// A VM's daemon, authenticated by its VM token (not a member's).
    async fn dial(
        &self,
        request: Request<Streaming<pb::DaemonFrame>>,
    ) -> Result<Response<Self::DialStream>, Status> {
        let stream = dial_in::dial(
            self.store.clone(),
            self.daemons.clone(),
            self.verifier.revocations().clone(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }
}
