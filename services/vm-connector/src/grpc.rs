//! `covibe.vmconnector.v1.VmConnectorService` over the domain: check the caller, convert, call,
//! map errors.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::tonic::{self, Request, Response, Status, Streaming};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::vm_connector_service_server::{
    VmConnectorService, VmConnectorServiceServer,
};
use covibe_types::{TeamId, UserId};

use crate::dial_in::{self, Daemons};
use crate::domain::{NewVm, VmChanges, VmDomain};
use crate::store::VmStore;

pub struct VmConnectorGrpc {
    domain: VmDomain,
    store: Arc<dyn VmStore>,
    verifier: Verifier,
    daemons: Arc<Daemons>,
}

impl VmConnectorGrpc {
    pub fn new(
        domain: VmDomain,
        store: Arc<dyn VmStore>,
        verifier: Verifier,
        daemons: Arc<Daemons>,
    ) -> Self {
        Self {
            domain,
            store,
            verifier,
            daemons,
        }
    }

    pub fn into_server(self) -> VmConnectorServiceServer<Self> {
        VmConnectorServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
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
        let (vm, used) = self
            .domain
            .start_agent(user, team, request.into_inner().into())
            .await?;
        Ok(Response::new(pb::StartAgentResponse {
            vm_id: vm.id.to_string(),
            strategy: used.as_str().to_owned(),
        }))
    }

    async fn list_vms(
        &self,
        request: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let views = self.domain.views(user, team).await?;
        Ok(Response::new(pb::ListVmsResponse {
            vms: views.iter().map(Into::into).collect(),
        }))
    }

    async fn register_vm(
        &self,
        request: Request<pb::RegisterVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let new = NewVm {
            name: r.name,
            strategy: r.strategy,
            host: r.host,
            port: r.port,
            username: r.username,
            project_dir: r.project_dir,
            credential: r.credential.map(Into::into),
        };
        let vm = self.domain.register(user, team, new).await?;
        let view = self.domain.view(vm).await?;
        Ok(Response::new((&view).into()))
    }

    async fn update_vm(
        &self,
        request: Request<pb::UpdateVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let changes = VmChanges {
            name: r.name,
            host: r.host,
            port: r.port,
            username: r.username,
            project_dir: r.project_dir,
            is_default: r.is_default,
        };
        let vm = self.domain.update(user, team, &r.vm_id, changes).await?;
        let view = self.domain.view(vm).await?;
        Ok(Response::new((&view).into()))
    }

    async fn get_vm(&self, request: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let vm = self
            .domain
            .own_vm(user, team, &request.into_inner().vm_id)
            .await?;
        let view = self.domain.view(vm).await?;
        Ok(Response::new((&view).into()))
    }

    async fn delete_vm(
        &self,
        request: Request<pb::GetVmRequest>,
    ) -> Result<Response<pb::DeleteVmResponse>, Status> {
        let (user, team) = self.member(&request)?;
        self.domain
            .delete(user, team, &request.into_inner().vm_id)
            .await?;
        Ok(Response::new(pb::DeleteVmResponse {}))
    }

    async fn replace_credential(
        &self,
        request: Request<pb::ReplaceCredentialRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let credential = r.credential.unwrap_or_default().into();
        let vm = self
            .domain
            .replace_credential(user, team, &r.vm_id, credential)
            .await?;
        let view = self.domain.view(vm).await?;
        Ok(Response::new((&view).into()))
    }

    async fn accept_host_key(
        &self,
        request: Request<pb::AcceptHostKeyRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let vm = self
            .domain
            .accept_host_key(user, team, &r.vm_id, &r.fingerprint)
            .await?;
        let view = self.domain.view(vm).await?;
        Ok(Response::new((&view).into()))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let entries = self
            .domain
            .audit_page(user, team, &r.vm_id, r.before, r.limit)
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(crate::convert::audit_entry)
                .collect(),
        }))
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

    async fn create_job_grant(
        &self,
        request: Request<pb::CreateJobGrantRequest>,
    ) -> Result<Response<pb::CreateJobGrantResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let (grant, vm) = self
            .domain
            .create_job_grant(user, team, &r.vm_id, &r.purpose)
            .await?;
        Ok(Response::new(pb::CreateJobGrantResponse {
            grant,
            vm_id: vm.id.to_string(),
            host: match vm.strategy {
                crate::model::Strategy::SshProxy => vm.host,
                crate::model::Strategy::Local => "127.0.0.1".to_owned(),
                crate::model::Strategy::DialIn => String::new(),
            },
        }))
    }

    /// The grant is the credential, not a member's token.
    async fn run_job(
        &self,
        request: Request<pb::RunJobRequest>,
    ) -> Result<Response<pb::RunJobResponse>, Status> {
        let r = request.into_inner();
        let timeout = std::time::Duration::from_secs(match r.timeout_secs {
            0 => 600,
            n => u64::from(n.min(3600)),
        });
        let health = match r.health {
            Some(h) => Some(crate::domain::JobHealth {
                port: u16::try_from(h.port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        covibe_types::ApiError::invalid("the health check's port is 1 to 65535")
                    })?,
                path: if h.path.starts_with('/') && !h.path.contains(['\r', '\n', ' ']) {
                    h.path
                } else {
                    return Err(covibe_types::ApiError::invalid(
                        "the health check's path starts with / and has no spaces",
                    )
                    .into());
                },
                within: std::time::Duration::from_secs(match h.timeout_secs {
                    0 => 30,
                    n => u64::from(n.min(600)),
                }),
            }),
            None => None,
        };
        let revocations = self.verifier.revocations().clone();
        let (outcome, healthy) = self
            .domain
            .run_job(&r.grant, &r.script, timeout, health.as_ref(), |user| {
                revocations.is_removed(user)
            })
            .await?;
        Ok(Response::new(pb::RunJobResponse {
            exit_code: outcome.exit_code,
            output_tail: outcome.output_tail,
            healthy,
        }))
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
