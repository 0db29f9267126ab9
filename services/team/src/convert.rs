//! Domain -> proto.

use covibe_proto::common::v1 as common;
use covibe_proto::team::v1 as pb;

use crate::model::{Invite, Member, Role, Team};

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
