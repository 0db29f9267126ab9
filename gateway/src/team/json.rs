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

/// One list of allow rules and one of deny rules, in Claude Code's permission syntax
/// (`Bash(git diff:*)`, `Edit(src/**)`, `Read`, `WebFetch(domain:github.com)`): the body of
/// `PUT /api/team/policy` and `PUT /api/team/policy/mine`, which replaces both lists.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    /// Tool uses these allow without asking (for a member's own: narrows the team's).
    pub allow: Vec<String>,
    /// Tool uses these refuse; deny wins over allow.
    pub deny: Vec<String>,
}

/// `PUT /api/team/policy`'s body: the team's new rules, and when they were as the editor read
/// them, so that a save never silently undoes another admin's.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamPolicyPut {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// The `updatedAt` of the rules as read (0 when none were set): the save is refused with
    /// `409 conflict` if they changed since. Absent: replace whatever is there.
    #[serde(default)]
    pub if_updated_at: Option<i64>,
}

/// The team's tool-use rules and the caller's own stricter ones.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub team: PolicyRules,
    pub mine: PolicyRules,
    /// The caller is an owner or admin, who may change the team's rules.
    pub can_edit_team: bool,
    /// When the team's rules were last changed (ms since the epoch); null when never.
    pub updated_at: Option<i64>,
    /// The member who last changed them (user id); null when never.
    pub updated_by: Option<String>,
}

fn rules(rules: Option<team_pb::PolicyRules>) -> PolicyRules {
    let rules = rules.unwrap_or_default();
    PolicyRules {
        allow: rules.allow,
        deny: rules.deny,
    }
}

pub fn policy_view(p: team_pb::PolicyResponse) -> PolicyView {
    let set = p.team_updated_at_ms > 0;
    PolicyView {
        team: rules(p.team),
        mine: rules(p.mine),
        can_edit_team: p.can_edit_team,
        updated_at: set.then_some(p.team_updated_at_ms),
        updated_by: (set && !p.team_updated_by.is_empty()).then_some(p.team_updated_by),
    }
}
