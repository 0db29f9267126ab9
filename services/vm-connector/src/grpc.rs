//! `covibe.vmconnector.v1.VmConnectorService`: a member may start agents on their own VMs only.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::tonic::{self, Request, Response, Status, Streaming};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::vm_connector_service_server::{
    VmConnectorService, VmConnectorServiceServer,
};
use covibe_types::{ApiError, TeamId, UserId, VmId, now_ms};

use crate::Error;
use crate::dial_in::{self, DIAL_IN, Daemons};
use crate::local::{Launch, LocalLauncher};
use crate::store::{Vm, VmStore};

pub struct VmConnectorGrpc {
    store: Arc<dyn VmStore>,
    verifier: Verifier,
    local: Arc<LocalLauncher>,
    daemons: Arc<Daemons>,
}

impl VmConnectorGrpc {
    /// One of the caller's own VMs. Another member's VM, or a made-up id, is simply not one
    /// of theirs: both are "no such vm".
    async fn own_vm(&self, user: UserId, team: TeamId, raw_id: &str) -> Result<Vm, Status> {
        let not_found = || ApiError::not_found("no such vm");
        let id: VmId = raw_id.trim().parse().map_err(|_| not_found())?;
        let vms = self.store.list(user).await.map_err(Error::from)?;
        Ok(vms
            .into_iter()
            .find(|vm| vm.id == id && vm.team_id == team)
            .ok_or_else(not_found)?)
    }

    pub fn new(
        store: Arc<dyn VmStore>,
        verifier: Verifier,
        local: Arc<LocalLauncher>,
        daemons: Arc<Daemons>,
    ) -> Self {
        Self {
            store,
            verifier,
            local,
            daemons,
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

/// VM names: trimmed, 1 to 64 printable characters.
fn clean_vm_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "vm name must be 1 to 64 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// The strategies a VM may be registered with on this connector.
fn clean_strategy(strategy: &str) -> Result<String, ApiError> {
    match strategy.trim() {
        "" | "local" => Ok("local".to_owned()),
        DIAL_IN => Ok(DIAL_IN.to_owned()),
        "ssh_proxy" => Err(ApiError::invalid(
            "the ssh_proxy strategy is not available yet; register the VM with strategy \"local\" or \"dial_in\"",
        )),
        other => Err(ApiError::invalid(format!(
            "unknown strategy {other:?}; the available strategies are \"local\" and \"dial_in\""
        ))),
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
            DIAL_IN => {
                let spawn = pb::Spawn {
                    agent_id: r.agent_id.clone(),
                    agent_token: r.agent_token.clone(),
                    task: r.task.clone(),
                    link_url: r.link_url.clone(),
                    traceparent: covibe_telemetry::current_traceparent(),
                };
                let result = self.daemons.spawn(vm.id, spawn).await?;
                if !result.ok {
                    return Err(ApiError::unavailable(format!(
                        "the VM's vm-agent daemon could not start the agent: {}",
                        result.message
                    ))
                    .into());
                }
                tracing::info!(agent_id = %r.agent_id, vm_id = %vm.id, "vm-agent started by the VM's daemon");
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

    async fn register_vm(
        &self,
        request: Request<pb::RegisterVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let r = request.into_inner();
        let vm = Vm {
            id: VmId::new(),
            user_id: user,
            team_id: team,
            name: clean_vm_name(&r.name)?,
            strategy: clean_strategy(&r.strategy)?,
            last_seen_ms: 0,
        };
        self.store.insert(&vm).await.map_err(Error::from)?;
        tracing::info!(vm_id = %vm.id, user_id = %user, strategy = %vm.strategy, "vm registered");
        Ok(Response::new(vm_pb(&vm)))
    }

    async fn update_vm(
        &self,
        request: Request<pb::UpdateVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let r = request.into_inner();
        let name = clean_vm_name(&r.name)?;
        let mut vm = self.own_vm(user, team, &r.vm_id).await?;
        vm.name = name;
        if !self.store.update(&vm).await.map_err(Error::from)? {
            return Err(ApiError::not_found("no such vm").into());
        }
        Ok(Response::new(vm_pb(&vm)))
    }

    async fn create_vm_token(
        &self,
        request: Request<pb::CreateVmTokenRequest>,
    ) -> Result<Response<pb::CreateVmTokenResponse>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let r = request.into_inner();
        let vm = self.own_vm(user, team, &r.vm_id).await?;
        if vm.strategy != DIAL_IN {
            return Err(ApiError::invalid(format!(
                "only a dial_in VM has a token; this one is {}",
                vm.strategy
            ))
            .into());
        }
        let token = dial_in::new_token();
        self.store
            .set_token_hash(vm.id, &dial_in::hash_token(&token))
            .await
            .map_err(Error::from)?;
        tracing::info!(target: "audit", vm_id = %vm.id, user_id = %user, "vm token minted");
        Ok(Response::new(pb::CreateVmTokenResponse { vm_token: token }))
    }

    type DialStream = dial_in::DialStream;

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
