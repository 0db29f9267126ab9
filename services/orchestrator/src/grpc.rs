//! `covibe.orchestrator.v1.OrchestratorService` over the agent domain.

use std::sync::Arc;

use covibe_identity::{Verifier, bearer_from_metadata};
use covibe_proto::common::v1 as common;
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::orchestrator::v1 as pb;
use covibe_proto::orchestrator::v1::orchestrator_service_server::{
    OrchestratorService, OrchestratorServiceServer,
};
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_types::{AgentId, ApiError, TeamId, UserId};

use crate::domain::Agents;

pub struct OrchestratorGrpc {
    agents: Arc<Agents>,
    verifier: Verifier,
}

impl OrchestratorGrpc {
    pub fn new(agents: Arc<Agents>, verifier: Verifier) -> Self {
        Self { agents, verifier }
    }

    pub fn into_server(self) -> OrchestratorServiceServer<Self> {
        OrchestratorServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn member<T>(&self, request: &Request<T>) -> Result<(UserId, TeamId), Status> {
        Ok(self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?)
    }
}

fn agent_id(raw: &str) -> Result<AgentId, Status> {
    raw.parse()
        .map_err(|_| ApiError::invalid("invalid agent id").into())
}

use crate::convert::{AnswerRequest, Control, agent_pb, permission_pb};

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn spawn_agent(
        &self,
        request: Request<pb::SpawnAgentRequest>,
    ) -> Result<Response<common::Agent>, Status> {
        let (user, team) = self.member(&request)?;
        let token = bearer_from_metadata(request.metadata())
            .unwrap_or_default()
            .to_owned();
        let r = request.into_inner();
        let agent = self
            .agents
            .spawn(user, team, &token, &r.task, &r.vm_id)
            .await?;
        Ok(Response::new(agent_pb(&agent)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let (_, team) = self.member(&request)?;
        let agents = self.agents.list(team).await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_pb).collect(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<common::Agent>, Status> {
        let (_, team) = self.member(&request)?;
        let agent = self
            .agents
            .get(team, agent_id(&request.get_ref().agent_id)?)
            .await?;
        Ok(Response::new(agent_pb(&agent)))
    }

    async fn control_agent(
        &self,
        request: Request<pb::ControlAgentRequest>,
    ) -> Result<Response<pb::ControlAgentResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let control = Control::try_from(request.into_inner())?;
        self.agents
            .control(user, team, control.agent, control.command)
            .await?;
        Ok(Response::new(pb::ControlAgentResponse { accepted: true }))
    }

    async fn get_output(
        &self,
        request: Request<pb::GetOutputRequest>,
    ) -> Result<Response<pb::GetOutputResponse>, Status> {
        let (_, team) = self.member(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 {
            1000
        } else {
            u64::from(r.limit)
        };
        let page = self
            .agents
            .output(team, agent_id(&r.agent_id)?, r.from_seq, limit)
            .await?;
        Ok(Response::new(pb::GetOutputResponse {
            chunks: page
                .chunks
                .into_iter()
                .map(|c| pb::OutputChunk {
                    seq: c.seq,
                    stream: c.stream,
                    // Parsed at ingest, or by the page for lines stored before that.
                    event_json: String::from_utf8_lossy(&c.event).into_owned(),
                    data: c.data.to_vec(),
                })
                .collect(),
            next_seq: page.next_seq,
            more: page.more,
        }))
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let (_, team) = self.member(&request)?;
        let requests = self.agents.pending_permissions(team).await?;
        Ok(Response::new(pb::ListPermissionsResponse {
            requests: requests.iter().map(permission_pb).collect(),
        }))
    }

    async fn answer_permission(
        &self,
        request: Request<pb::AnswerPermissionRequest>,
    ) -> Result<Response<pb::PermissionRequest>, Status> {
        let (user, team) = self.member(&request)?;
        let r = AnswerRequest::try_from(request.into_inner())?;
        let decided = self
            .agents
            .answer_permission(user, team, r.agent, &r.request_id, &r.reply)
            .await?;
        Ok(Response::new(permission_pb(&decided)))
    }
}
