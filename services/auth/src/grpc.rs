//! `covibe.auth.v1.AuthService`: sessions built on the team service's membership answers.

use std::sync::Arc;

use covibe_bootstrap::{Client, bearer};
use covibe_identity::{Principal, Verifier};
use covibe_proto::auth::v1 as pb;
use covibe_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use covibe_proto::common::v1 as common;
use covibe_proto::limits::MAX_MESSAGE_BYTES;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::tonic::{self, Code, Request, Response, Status};
use covibe_types::{ApiError, SessionId, TeamId, UserId};

use crate::Error;
use crate::domain::Sessions;
use crate::model::{CodeKind, Session};

pub struct AuthGrpc {
    sessions: Arc<Sessions>,
    verifier: Verifier,
    team: TeamServiceClient<Client>,
}

/// A member as the team service knows them.
struct Membership {
    team: common::Team,
    user: common::User,
}

impl Membership {
    /// Owner 3, admin 2, member 1: who outranks whom.
    fn rank(&self) -> u8 {
        match common::Role::try_from(self.user.role) {
            Ok(common::Role::Owner) => 3,
            Ok(common::Role::Admin) => 2,
            _ => 1,
        }
    }
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
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn as_auth<T>(&self, message: T) -> Result<Request<T>, Status> {
        Ok(bearer(message, &self.sessions.service_token()?))
    }

    /// The member a request's access token names, with its session, which must be live.
    async fn caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(UserId, TeamId, SessionId, Session), Status> {
        let principal = self.verifier.verify_metadata(request.metadata())?;
        let (user, team) = principal.member()?;
        let sid = principal.session()?;
        let session = self
            .sessions
            .live_session(sid)
            .await?
            .filter(|s| s.user_id == user)
            .ok_or_else(|| ApiError::unauthenticated("this session has ended: sign in again"))?;
        Ok((user, team, sid, session))
    }

    /// The present member `user`, or `None` if they are not (any more).
    async fn membership(&self, user: UserId) -> Result<Option<Membership>, Error> {
        let request = bearer(
            team_pb::GetMemberRequest {
                user_id: user.to_string(),
            },
            &self.sessions.service_token()?,
        );
        match self.team.clone().get_member(request).await {
            Ok(found) => {
                let found = found.into_inner();
                match (found.team, found.user) {
                    (Some(team), Some(user)) => Ok(Some(Membership { team, user })),
                    _ => {
                        Err(ApiError::internal("team service answered without team or user").into())
                    }
                }
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::Api(ApiError::from_status(&status))),
        }
    }

    async fn session_response(
        &self,
        team: Option<common::Team>,
        user: Option<common::User>,
        invite_code: String,
        device_name: &str,
    ) -> Result<pb::SessionResponse, Status> {
        let (user_id, team_id) = ids(team.as_ref(), user.as_ref())?;
        let tokens = self.sessions.start(user_id, team_id, device_name).await?;
        Ok(pb::SessionResponse {
            team,
            user,
            tokens: Some(tokens_pb(tokens)),
            invite_code,
        })
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

use crate::convert::{code_pb, session_pb, tokens_pb};

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
        let response = self
            .session_response(
                created.team,
                created.user,
                created.invite_code,
                &r.device_name,
            )
            .await?;
        Ok(Response::new(response))
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
                join_key: r.join_key,
            })?)
            .await
            .map_err(upstream)?
            .into_inner();
        let response = self
            .session_response(joined.team, joined.user, String::new(), &r.device_name)
            .await?;
        Ok(Response::new(response))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let token = request.into_inner().refresh_token;
        let tokens = self
            .sessions
            .refresh(&token, |user| async move {
                Ok(self.membership(user).await?.is_some())
            })
            .await?;
        Ok(Response::new(tokens_pb(tokens)))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<common::Principal>, Status> {
        match self.verifier.verify(&request.into_inner().access_token)? {
            Principal::Member {
                user_id,
                team_id,
                session_id,
            } => Ok(Response::new(common::Principal {
                user_id: user_id.to_string(),
                team_id: team_id.to_string(),
                session_id: session_id.to_string(),
            })),
            Principal::Service { .. } => {
                Err(ApiError::unauthenticated("not a member token").into())
            }
        }
    }

    async fn me(
        &self,
        request: Request<pb::MeRequest>,
    ) -> Result<Response<pb::MeResponse>, Status> {
        let (user, _, sid, session) = self.caller(&request).await?;
        let found = self
            .membership(user)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("you are no longer a member of this team"))?;
        Ok(Response::new(pb::MeResponse {
            team: Some(found.team),
            user: Some(found.user),
            session: Some(session_pb(&session, sid)),
        }))
    }

    async fn create_device_code(
        &self,
        request: Request<pb::CreateDeviceCodeRequest>,
    ) -> Result<Response<pb::SignInCode>, Status> {
        let (user, team, _, _) = self.caller(&request).await?;
        let (code, expires) = self
            .sessions
            .create_code(CodeKind::Device, user, team, Some(user))
            .await?;
        Ok(Response::new(code_pb(code, expires)))
    }

    async fn create_recovery_code(
        &self,
        request: Request<pb::CreateRecoveryCodeRequest>,
    ) -> Result<Response<pb::SignInCode>, Status> {
        let (user, team, _, _) = self.caller(&request).await?;
        let target: UserId = request
            .into_inner()
            .user_id
            .parse()
            .map_err(|_| ApiError::not_found("no such member in your team"))?;
        let caller = self
            .membership(user)
            .await?
            .ok_or_else(|| ApiError::forbidden("not a member of this team"))?;
        if caller.rank() < 2 {
            return Err(
                ApiError::forbidden("only the team's owners and admins may do this").into(),
            );
        }
        if target == user {
            return Err(ApiError::invalid(
                "you are signed in: add a device with a device code instead",
            )
            .into());
        }
        let member = self
            .membership(target)
            .await?
            .filter(|m| m.team.id == team.to_string())
            .ok_or_else(|| ApiError::not_found("no such member in your team"))?;
        // Signing in as someone is only for those who outrank them: an admin cannot become the
        // owner or another admin this way.
        if member.rank() >= caller.rank() {
            return Err(ApiError::forbidden(
                "only someone who outranks this member may make their recovery code",
            )
            .into());
        }
        let (code, expires) = self
            .sessions
            .create_code(CodeKind::Recovery, target, team, Some(user))
            .await?;
        tracing::info!(target: "audit", user_id = %user, member = %target, "recovery code created");
        Ok(Response::new(code_pb(code, expires)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let (user, _, sid, _) = self.caller(&request).await?;
        let sessions = self.sessions.sessions_of(user).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(|s| session_pb(s, sid)).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (user, _, _, _) = self.caller(&request).await?;
        let not_found = || ApiError::not_found("no such session of yours");
        let id: SessionId = request
            .into_inner()
            .session_id
            .parse()
            .map_err(|_| not_found())?;
        self.sessions
            .live_session(id)
            .await?
            .filter(|s| s.user_id == user)
            .ok_or_else(not_found)?;
        let ended = self.sessions.end(user, Some(id), "revoked").await?;
        Ok(Response::new(pb::RevokeSessionResponse {
            ended: u32::try_from(ended).unwrap_or(u32::MAX),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (user, _, sid, _) = self.caller(&request).await?;
        let ended = self.sessions.end(user, Some(sid), "logout").await?;
        Ok(Response::new(pb::RevokeSessionResponse {
            ended: u32::try_from(ended).unwrap_or(u32::MAX),
        }))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (user, _, _, _) = self.caller(&request).await?;
        let ended = self.sessions.end(user, None, "logout").await?;
        Ok(Response::new(pb::RevokeSessionResponse {
            ended: u32::try_from(ended).unwrap_or(u32::MAX),
        }))
    }

    async fn redeem_sign_in_code(
        &self,
        request: Request<pb::RedeemSignInCodeRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let r = request.into_inner();
        let code = self.sessions.redeem_code(&r.code).await?;
        let member = self
            .membership(code.user_id)
            .await?
            .filter(|m| m.team.id == code.team_id.to_string())
            .ok_or_else(|| ApiError::unauthenticated("invalid or expired code"))?;
        if code.kind == CodeKind::Recovery {
            tracing::info!(target: "audit", user_id = %code.user_id, "signed in with a recovery code");
        }
        let response = self
            .session_response(
                Some(member.team),
                Some(member.user),
                String::new(),
                &r.device_name,
            )
            .await?;
        Ok(Response::new(response))
    }
}
