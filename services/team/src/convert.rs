//! Proto <-> domain: requests refused when a field they need is missing or malformed.

use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as pb;

use covibe_types::{ApiError, MessageId};

use crate::events;
use crate::model::{
    Before, Invite, Member, PolicyRules, PolicyScope, PolicyView, PresenceUpdate, Role, Team,
};
use crate::presence::{clean_holder, clean_watching};

pub(crate) fn team_pb(t: &Team) -> common::Team {
    common::Team {
        id: t.id.to_string(),
        name: t.name.clone(),
        created_at_ms: t.created_at_ms,
    }
}

pub(crate) fn role_pb(role: Role) -> common::Role {
    match role {
        Role::Owner => common::Role::Owner,
        Role::Admin => common::Role::Admin,
        Role::Member => common::Role::Member,
    }
}

pub(crate) fn user_pb(m: &Member) -> common::User {
    common::User {
        id: m.id.to_string(),
        team_id: m.team_id.to_string(),
        email: m.email.clone(),
        display_name: m.display_name.clone(),
        created_at_ms: m.created_at_ms,
        role: role_pb(m.role) as i32,
    }
}

pub(crate) fn invite_pb(i: &Invite) -> pb::Invite {
    pb::Invite {
        id: i.id.clone(),
        created_by: i.created_by.to_string(),
        created_at_ms: i.created_at_ms,
        expires_at_ms: i.expires_at_ms,
        max_uses: i.max_uses,
        uses: i.uses,
        revoked: i.revoked,
        usable: i.usable(covibe_types::now_ms()),
    }
}

/// A role as a request names it; `UNSPECIFIED` is refused.
impl TryFrom<common::Role> for Role {
    type Error = ApiError;

    fn try_from(role: common::Role) -> Result<Self, ApiError> {
        match role {
            common::Role::Owner => Ok(Self::Owner),
            common::Role::Admin => Ok(Self::Admin),
            common::Role::Member => Ok(Self::Member),
            common::Role::Unspecified => Err(ApiError::invalid("role must be admin or member")),
        }
    }
}

/// The history cursor of a `ChatHistoryRequest`.
pub(crate) struct Cursor(pub pb::ChatHistoryRequest);

impl TryFrom<Cursor> for Option<Before> {
    type Error = ApiError;

    fn try_from(Cursor(r): Cursor) -> Result<Self, ApiError> {
        let id = if r.before_id.is_empty() {
            None
        } else {
            Some(
                r.before_id
                    .parse::<MessageId>()
                    .map_err(|_| ApiError::invalid("invalid before_id: not a message id"))?,
            )
        };
        match (r.before_ms, id) {
            (Some(at_ms), id) => Ok(Some(Before { at_ms, id })),
            (None, Some(_)) => Err(ApiError::invalid("before_id needs before_ms")),
            (None, None) => Ok(None),
        }
    }
}

/// A holder's presence update; an unknown status number is refused (UNSPECIFIED is "still
/// here").
impl TryFrom<pb::UpdatePresenceRequest> for PresenceUpdate {
    type Error = ApiError;

    fn try_from(r: pb::UpdatePresenceRequest) -> Result<Self, ApiError> {
        let status = events::status_of(r.status);
        if status.is_none() && r.status != pb::PresenceStatus::Unspecified as i32 {
            return Err(ApiError::invalid(
                "status must be one of online, away, busy, offline",
            ));
        }
        Ok(Self {
            status,
            holder: clean_holder(&r.holder)?,
            watching: clean_watching(&r.watching)?,
        })
    }
}

fn rules_pb(rules: &PolicyRules) -> pb::PolicyRules {
    pb::PolicyRules {
        allow: rules.allow.clone(),
        deny: rules.deny.clone(),
    }
}

pub(crate) fn policy_pb(view: &PolicyView) -> pb::PolicyResponse {
    pb::PolicyResponse {
        team: Some(rules_pb(&view.team.rules)),
        mine: Some(rules_pb(&view.mine)),
        can_edit_team: view.can_edit_team,
        team_updated_at_ms: view.team.updated_at_ms,
        team_updated_by: view
            .team
            .updated_by
            .map(|user| user.to_string())
            .unwrap_or_default(),
    }
}

/// The scope a `PutPolicyRequest` names; `UNSPECIFIED` (or an unknown number) is refused.
impl TryFrom<i32> for PolicyScope {
    type Error = ApiError;

    fn try_from(raw: i32) -> Result<Self, ApiError> {
        match pb::PolicyScope::try_from(raw) {
            Ok(pb::PolicyScope::Team) => Ok(Self::Team),
            Ok(pb::PolicyScope::Mine) => Ok(Self::Mine),
            _ => Err(ApiError::invalid("scope must be TEAM or MINE")),
        }
    }
}
