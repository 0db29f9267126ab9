//! The JSON shapes of teams, members and invites.

use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as team_pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
    pub email: String,
    pub display_name: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub team_id: String,
    pub email: String,
    pub display_name: String,
    pub created_at: i64,
    #[schema(value_type = RoleName)]
    pub role: &'static str,
}

pub fn team(t: common::Team) -> Team {
    Team {
        id: t.id,
        name: t.name,
        created_at: t.created_at_ms,
    }
}

pub fn user(u: common::User) -> User {
    User {
        role: role(u.role),
        id: u.id,
        team_id: u.team_id,
        email: u.email,
        display_name: u.display_name,
        created_at: u.created_at_ms,
    }
}

/// A role's JSON name.
pub fn role(raw: i32) -> &'static str {
    match common::Role::try_from(raw) {
        Ok(common::Role::Owner) => "owner",
        Ok(common::Role::Admin) => "admin",
        _ => "member",
    }
}

/// An invite as owners and admins see it: never its code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteInfo {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
    pub usable: bool,
}

pub fn invite_json(i: team_pb::Invite) -> InviteInfo {
    InviteInfo {
        id: i.id,
        created_by: i.created_by,
        created_at: i.created_at_ms,
        expires_at: i.expires_at_ms,
        max_uses: i.max_uses,
        uses: i.uses,
        revoked: i.revoked,
        usable: i.usable,
    }
}

/// A new invite, with its code (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewInvite {
    pub id: String,
    pub invite_code: String,
    pub expires_at: i64,
    pub max_uses: u32,
}

/// `{invites}`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteList {
    pub invites: Vec<InviteInfo>,
}

/// `{invite}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteEnvelope {
    pub invite: InviteInfo,
}

/// The team and its members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamView {
    pub team: Option<Team>,
    pub members: Vec<User>,
}

pub fn team_view(team: team_pb::GetTeamResponse) -> TeamView {
    TeamView {
        team: team.team.map(self::team),
        members: team.members.into_iter().map(user).collect(),
    }
}

/// `{member}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberEnvelope {
    pub member: User,
}

/// `{ok: true}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Done {
    pub ok: bool,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInvite {
    #[serde(default)]
    pub max_uses: u32,
    #[serde(default)]
    pub expires_in_hours: u32,
    /// The older spelling, in seconds.
    #[serde(default)]
    pub ttl_seconds: u32,
}
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetRole {
    /// Read as text, so that `owner` gets an answer saying how ownership moves.
    #[schema(value_type = AssignableRole)]
    pub role: String,
}

/// The roles `PUT /api/team/members/{id}/role` gives.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // names for the document; the values are written as text
pub enum AssignableRole {
    Admin,
    Member,
}

/// What a member may do in their team.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // names for the document; the values are written as text
pub enum RoleName {
    Owner,
    Admin,
    Member,
}
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transfer {
    pub user_id: String,
}
