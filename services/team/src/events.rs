//! What the team service publishes on a team's fan-out channel, and how presence entries are
//! kept in the hot store: both as protobuf.

use bytes::Bytes;
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_proto::team::v1 as pb;
use covibe_types::{TeamId, UserId};

use crate::model::{ChatMessage, MemberPresence, PresenceStatus, TeamPresence};

pub(crate) fn status_pb(status: PresenceStatus) -> pb::PresenceStatus {
    match status {
        PresenceStatus::Online => pb::PresenceStatus::Online,
        PresenceStatus::Away => pb::PresenceStatus::Away,
        PresenceStatus::Busy => pb::PresenceStatus::Busy,
        PresenceStatus::Offline => pb::PresenceStatus::Offline,
    }
}

pub(crate) fn status_of(raw: i32) -> Option<PresenceStatus> {
    match pb::PresenceStatus::try_from(raw).ok()? {
        pb::PresenceStatus::Online => Some(PresenceStatus::Online),
        pb::PresenceStatus::Away => Some(PresenceStatus::Away),
        pb::PresenceStatus::Busy => Some(PresenceStatus::Busy),
        pb::PresenceStatus::Offline => Some(PresenceStatus::Offline),
        pb::PresenceStatus::Unspecified => None,
    }
}

pub(crate) fn message_pb(m: &ChatMessage) -> pb::ChatMessage {
    pb::ChatMessage {
        id: m.id.to_string(),
        team_id: m.team_id.to_string(),
        user_id: m.user_id.to_string(),
        display_name: m.display_name.clone(),
        text: m.text.clone(),
        created_at_ms: m.created_at_ms,
        client_id: m.client_id.clone(),
    }
}

fn user_pb(u: &MemberPresence) -> pb::PresenceUser {
    pb::PresenceUser {
        user_id: u.user_id.to_string(),
        display_name: u.display_name.clone(),
        status: status_pb(u.status).into(),
        last_seen_ms: u.last_seen_ms,
        watching: u.watching.iter().map(ToString::to_string).collect(),
    }
}

pub(crate) fn presence_pb(p: &TeamPresence) -> pb::TeamPresence {
    pb::TeamPresence {
        team_id: p.team_id.to_string(),
        users: p.users.iter().map(user_pb).collect(),
        version: p.version,
    }
}

/// A holder's entry of a member's presence as kept in the hot store.
pub(crate) fn presence_entry(u: &MemberPresence) -> Bytes {
    Bytes::from(user_pb(u).encode_to_vec())
}

pub(crate) fn decode_presence_entry(raw: Bytes) -> Option<MemberPresence> {
    let u = pb::PresenceUser::decode(raw).ok()?;
    Some(MemberPresence {
        user_id: u.user_id.parse().ok()?,
        display_name: u.display_name,
        status: status_of(u.status)?,
        last_seen_ms: u.last_seen_ms,
        watching: u.watching.iter().filter_map(|id| id.parse().ok()).collect(),
    })
}

fn team_event(team_id: String, event: ev::team_event::Event) -> Bytes {
    Bytes::from(
        ev::TeamEvent {
            team_id,
            event: Some(event),
        }
        .encode_to_vec(),
    )
}

pub(crate) fn chat_message(m: &ChatMessage) -> Bytes {
    team_event(
        m.team_id.to_string(),
        ev::team_event::Event::ChatMessage(message_pb(m)),
    )
}

pub(crate) fn team_presence(p: &TeamPresence) -> Bytes {
    team_event(
        p.team_id.to_string(),
        ev::team_event::Event::TeamPresence(presence_pb(p)),
    )
}

pub(crate) fn policy_updated(team: TeamId, by: UserId, at_ms: i64) -> Bytes {
    team_event(
        team.to_string(),
        ev::team_event::Event::PolicyUpdated(pb::PolicyUpdated {
            updated_by: by.to_string(),
            updated_at_ms: at_ms,
        }),
    )
}
