//! `covibe.auth.v1.AuthService`: sessions built on the team service's membership answers.

use std::sync::Arc;

use covibe_bootstrap::{Client, bearer};
use covibe_identity::{Principal, Verifier};
use covibe_proto::auth::v1 as pb;
use covibe_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::{self, Code, Request, Response, Status};
use covibe_types::{ApiError, TeamId, UserId};

use crate::sessions::{Error, IssuedTokens, Sessions};

pub struct AuthGrpc {
    sessions: Arc<Sessions>,
    verifier: Verifier,
    team: TeamServiceClient<Client>,
}

impl AuthGrpc {
    pub fn new(
        sessions: Arc<Sessions>,
        verifier: Verifier,
        team: TeamServiceClient<Client>,
    ) -> Self {
        Self {
            sessions,
            verifier,
            team,
        }
    }

    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    fn as_auth<T>(&self, message: T) -> Result<Request<T>, Status> {
        Ok(bearer(message, &self.sessions.service_token()?))
    }
}

fn tokens_pb(t: IssuedTokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        access_expires_at_ms: t.access_expires_at_ms,
    }
}

fn ids(
    team: Option<&common::Team>,
    user: Option<&common::User>,
) -> Result<(UserId, TeamId), Status> {
    let missing = || ApiError::internal("team service answered without team or user");
    let user_id = user
        .ok_or_else(missing)?
        .id
        .parse()
        .map_err(|_| missing())?;
    let team_id = team
        .ok_or_else(missing)?
        .id
        .parse()
        .map_err(|_| missing())?;
    Ok((user_id, team_id))
}

/// Passes on the team service's answer as our own, hiding what a client should not see.
fn upstream(status: Status) -> Status {
    ApiError::from_status(&status).into()
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let r = request.into_inner();
        let created = self
            .team
            .clone()
            .create_team(self.as_auth(team_pb::CreateTeamRequest {
                name: r.team_name,
                email: r.email,
                display_name: r.display_name,
            })?)
            .await
            .map_err(upstream)?
            .into_inner();
        let (user, team) = ids(created.team.as_ref(), created.user.as_ref())?;
        let tokens = self.sessions.start(user, team).await?;
        Ok(Response::new(pb::SessionResponse {
            team: created.team,
            user: created.user,
            tokens: Some(tokens_pb(tokens)),
            invite_code: created.invite_code,
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let r = request.into_inner();
        let joined = self
            .team
            .clone()
            .redeem_invite(self.as_auth(team_pb::RedeemInviteRequest {
                invite_code: r.invite_code,
                email: r.email,
                display_name: r.display_name,
            })?)
            .await
            .map_err(upstream)?
            .into_inner();
        let (user, team) = ids(joined.team.as_ref(), joined.user.as_ref())?;
        let tokens = self.sessions.start(user, team).await?;
        Ok(Response::new(pb::SessionResponse {
            team: joined.team,
            user: joined.user,
            tokens: Some(tokens_pb(tokens)),
            invite_code: String::new(),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let token = request.into_inner().refresh_token;
        let team = self.team.clone();
        let sessions = self.sessions.clone();
        let tokens = self
            .sessions
            .refresh(&token, |user| async move {
                let request = bearer(
                    team_pb::GetMemberRequest {
                        user_id: user.to_string(),
                    },
                    &sessions.service_token()?,
                );
                match team.clone().get_member(request).await {
                    Ok(_) => Ok(true),
                    Err(status) if status.code() == Code::NotFound => Ok(false),
                    Err(status) => Err(Error::Api(ApiError::from_status(&status))),
                }
            })
            .await?;
        Ok(Response::new(tokens_pb(tokens)))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<common::Principal>, Status> {
        match self.verifier.verify(&request.into_inner().access_token)? {
            Principal::Member { user_id, team_id } => Ok(Response::new(common::Principal {
                user_id: user_id.to_string(),
                team_id: team_id.to_string(),
            })),
            Principal::Service { .. } => {
                Err(ApiError::unauthenticated("not a member token").into())
            }
        }
    }
}
