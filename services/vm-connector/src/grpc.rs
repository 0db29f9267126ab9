//! `covibe.vmconnector.v1.VmConnectorService`: a member may start agents on their own VMs only.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::vm_connector_service_server::{
    VmConnectorService, VmConnectorServiceServer,
};
use covibe_types::{ApiError, TeamId, UserId, VmId, now_ms};

use crate::Error;
use crate::local::{Launch, LocalLauncher};
use crate::store::{Vm, VmStore};

pub struct VmConnectorGrpc {
    store: Arc<dyn VmStore>,
    verifier: Verifier,
    local: Arc<LocalLauncher>,
}

impl VmConnectorGrpc {
    pub fn new(store: Arc<dyn VmStore>, verifier: Verifier, local: Arc<LocalLauncher>) -> Self {
        Self {
            store,
            verifier,
            local,
        }
    }

    pub fn into_server(self) -> VmConnectorServiceServer<Self> {
        VmConnectorServiceServer::new(self)
    }

    /// The member's VMs; a member with none gets a default `local` VM, this machine.
    async fn vms(&self, user: UserId, team: TeamId) -> Result<Vec<Vm>, Error> {
        let vms = self.store.list(user).await?;
        if !vms.is_empty() {
            return Ok(vms);
        }
        let vm = Vm {
            id: VmId::new(),
            user_id: user,
            team_id: team,
            name: "this machine".to_owned(),
            strategy: "local".to_owned(),
            last_seen_ms: now_ms(),
        };
        self.store.insert(&vm).await?;
        // Another request may have raced us: read back and use the first one.
        Ok(self.store.list(user).await?)
    }
}

fn vm_pb(vm: &Vm) -> pb::Vm {
    pb::Vm {
        id: vm.id.to_string(),
        user_id: vm.user_id.to_string(),
        name: vm.name.clone(),
        strategy: vm.strategy.clone(),
        last_seen_ms: vm.last_seen_ms,
    }
}

#[tonic::async_trait]
impl VmConnectorService for VmConnectorGrpc {
    async fn start_agent(
        &self,
        request: Request<pb::StartAgentRequest>,
    ) -> Result<Response<pb::StartAgentResponse>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let r = request.into_inner();
        if r.user_id != user.to_string() || r.team_id != team.to_string() {
            return Err(
                ApiError::forbidden("a member may start agents only on their own VMs").into(),
            );
        }
        let vms = self.vms(user, team).await?;
        let vm = if r.vm_id.is_empty() {
            vms.first()
        } else {
            vms.iter().find(|vm| vm.id.to_string() == r.vm_id)
        }
        .ok_or_else(|| ApiError::not_found("no such vm"))?;
        match vm.strategy.as_str() {
            "local" => {
                let pid = self
                    .local
                    .launch(&Launch {
                        agent_id: &r.agent_id,
                        agent_token: &r.agent_token,
                        task: &r.task,
                        link_url: &r.link_url,
                    })
                    .map_err(Error::from)?;
                tracing::info!(agent_id = %r.agent_id, vm_id = %vm.id, pid, "vm-agent started locally");
            }
            other => {
                return Err(ApiError::unavailable(format!(
                    "the {other} strategy is not available on this connector"
                ))
                .into());
            }
        }
        self.store.touch(vm.id).await.map_err(Error::from)?;
        Ok(Response::new(pb::StartAgentResponse {
            vm_id: vm.id.to_string(),
            strategy: vm.strategy.clone(),
        }))
    }

    async fn list_vms(
        &self,
        request: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let vms = self.vms(user, team).await?;
        Ok(Response::new(pb::ListVmsResponse {
            vms: vms.iter().map(vm_pb).collect(),
        }))
    }
}
