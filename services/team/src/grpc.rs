//! `covibe.team.v1.TeamService` over the domain: check the caller, convert, call, map errors.

use std::sync::Arc;

use covibe_identity::Verifier;
use covibe_proto::common::v1 as common;
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::team::v1 as pb;
use covibe_proto::team::v1::team_service_server::{TeamService, TeamServiceServer};
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_types::{ApiError, TeamId, UserId};

use crate::chat::Chat;
use crate::domain::TeamDomain;
use crate::events;
use crate::model::Before;
use crate::model::{PolicyScope, PresenceUpdate, Role};
use crate::policy::Policies;

pub struct TeamGrpc {
    domain: Arc<TeamDomain>,
    chat: Arc<Chat>,
    policies: Policies,
    verifier: Verifier,
}

impl TeamGrpc {
    pub fn new(domain: Arc<TeamDomain>, chat: Arc<Chat>, verifier: Verifier) -> Self {
        let policies = Policies::new(chat.store.clone(), chat.hot.clone());
        Self {
            domain,
            chat,
            policies,
            verifier,
        }
    }

    /// The member a request's token names.
    fn member<T>(&self, request: &Request<T>) -> Result<(UserId, TeamId), Status> {
        Ok(self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?)
    }

    pub fn into_server(self) -> TeamServiceServer<Self> {
        TeamServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Internal calls come from the auth service with its own service token.
    fn require_auth_service<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let principal = self.verifier.verify_metadata(request.metadata())?;
        match principal.require_service()? {
            "auth" => Ok(()),
            _ => Err(ApiError::forbidden("only the auth service may call this").into()),
        }
    }

    /// Tool-use policies are read for agents by the orchestrator, with its service token.
    fn require_orchestrator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let principal = self.verifier.verify_metadata(request.metadata())?;
        match principal.require_service()? {
            "orchestrator" => Ok(()),
            _ => Err(ApiError::forbidden("only the orchestrator may call this").into()),
        }
    }
}

fn user_id(raw: &str) -> Result<UserId, Status> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such member in your team").into())
}

use crate::convert::{Cursor, invite_pb, policy_pb, team_pb, user_pb};

#[tonic::async_trait]
impl TeamService for TeamGrpc {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        self.require_auth_service(&request)?;
        let r = request.into_inner();
        let (team, user, code) = self
            .domain
            .create_team(&r.name, &r.email, &r.display_name)
            .await?;
        Ok(Response::new(pb::CreateTeamResponse {
            team: Some(team_pb(&team)),
            user: Some(user_pb(&user)),
            invite_code: code,
        }))
    }

    async fn redeem_invite(
        &self,
        request: Request<pb::RedeemInviteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.require_auth_service(&request)?;
        let r = request.into_inner();
        let (team, user) = self
            .domain
            .redeem_retryable(&r.invite_code, &r.email, &r.display_name, &r.join_key)
            .await?;
        Ok(Response::new(pb::MembershipResponse {
            team: Some(team_pb(&team)),
            user: Some(user_pb(&user)),
        }))
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.require_auth_service(&request)?;
        let user: UserId = request
            .into_inner()
            .user_id
            .parse()
            .map_err(|_| ApiError::invalid("invalid user id"))?;
        let (team, member) = self.domain.member(user).await?;
        Ok(Response::new(pb::MembershipResponse {
            team: Some(team_pb(&team)),
            user: Some(user_pb(&member)),
        }))
    }

    async fn create_invite(
        &self,
        request: Request<pb::CreateInviteRequest>,
    ) -> Result<Response<pb::CreateInviteResponse>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let r = request.into_inner();
        let (code, invite) = self
            .domain
            .create_invite(user, team, r.max_uses, r.ttl_seconds)
            .await?;
        Ok(Response::new(pb::CreateInviteResponse {
            invite_code: code,
            expires_at_ms: invite.expires_at_ms,
            max_uses: invite.max_uses,
            invite_id: invite.id,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<pb::ListInvitesRequest>,
    ) -> Result<Response<pb::ListInvitesResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let invites = self.domain.invites(user, team).await?;
        Ok(Response::new(pb::ListInvitesResponse {
            invites: invites.iter().map(invite_pb).collect(),
        }))
    }

    async fn revoke_invite(
        &self,
        request: Request<pb::RevokeInviteRequest>,
    ) -> Result<Response<pb::Invite>, Status> {
        let (user, team) = self.member(&request)?;
        let id = request.into_inner().invite_id;
        let invite = self.domain.revoke_invite(user, team, &id).await?;
        Ok(Response::new(invite_pb(&invite)))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let target = user_id(&request.into_inner().user_id)?;
        self.domain.remove_member(user, team, target).await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn set_member_role(
        &self,
        request: Request<pb::SetMemberRoleRequest>,
    ) -> Result<Response<common::User>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let target = user_id(&r.user_id)?;
        let role = Role::try_from(common::Role::try_from(r.role).unwrap_or_default())?;
        let member = self.domain.set_role(user, team, target, role).await?;
        Ok(Response::new(user_pb(&member)))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let target = user_id(&request.into_inner().user_id)?;
        let (found, members) = self.domain.transfer_ownership(user, team, target).await?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team_pb(&found)),
            members: members.iter().map(user_pb).collect(),
        }))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        let (user, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let (found, members) = self.domain.team_with_members(user, team).await?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team_pb(&found)),
            members: members.iter().map(user_pb).collect(),
        }))
    }

    async fn post_message(
        &self,
        request: Request<pb::PostMessageRequest>,
    ) -> Result<Response<pb::ChatMessage>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let message = self
            .chat
            .post(user, team, &r.text, r.client_id.as_deref())
            .await?;
        Ok(Response::new(events::message_pb(&message)))
    }

    async fn chat_history(
        &self,
        request: Request<pb::ChatHistoryRequest>,
    ) -> Result<Response<pb::ChatHistoryResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let limit = r.limit;
        let before = Option::<Before>::try_from(Cursor(r))?;
        let page = self.chat.history(user, team, before, limit).await?;
        Ok(Response::new(pb::ChatHistoryResponse {
            messages: page.messages.iter().map(events::message_pb).collect(),
            has_more: page.has_more,
        }))
    }

    async fn update_presence(
        &self,
        request: Request<pb::UpdatePresenceRequest>,
    ) -> Result<Response<pb::TeamPresence>, Status> {
        let (user, team) = self.member(&request)?;
        let update = PresenceUpdate::try_from(request.into_inner())?;
        let presence = self.chat.update_presence(user, team, update).await?;
        Ok(Response::new(events::presence_pb(&presence)))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::TeamPresence>, Status> {
        let (user, team) = self.member(&request)?;
        let presence = self.chat.presence(user, team).await?;
        Ok(Response::new(events::presence_pb(&presence)))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let view = self.policies.get(user, team).await?;
        Ok(Response::new(policy_pb(&view)))
    }

    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let (user, team) = self.member(&request)?;
        let r = request.into_inner();
        let scope = PolicyScope::try_from(r.scope)?;
        let rules = r.rules.unwrap_or_default();
        let view = self
            .policies
            .put(
                user,
                team,
                scope,
                &rules.allow,
                &rules.deny,
                r.if_updated_at_ms,
            )
            .await?;
        Ok(Response::new(policy_pb(&view)))
    }

    async fn get_agent_policy(
        &self,
        request: Request<pb::GetAgentPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        self.require_orchestrator(&request)?;
        let r = request.into_inner();
        let not_found = || Status::from(ApiError::not_found("no such member in this team"));
        let team: TeamId = r.team_id.parse().map_err(|_| not_found())?;
        let user: UserId = r.user_id.parse().map_err(|_| not_found())?;
        let view = self.policies.for_agent(team, user).await?;
        Ok(Response::new(policy_pb(&view)))
    }
}
