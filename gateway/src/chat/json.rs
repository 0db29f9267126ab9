//! The JSON shapes of the team chat and presence.

use covibe_proto::team::v1 as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PostMessage {
    pub message: String,
    /// Chosen by the client (1 to 64 of `[A-Za-z0-9_-]`, e.g. a UUID made once per message)
    /// and sent again with every retry: the message is stored and broadcast once.
    #[serde(default)]
    #[schema(max_length = 64, min_length = 1, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub client_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryQuery {
    /// Only messages before this instant (ms since the epoch).
    #[serde(default)]
    pub before: Option<i64>,
    /// With `before`: at that same instant, only messages with a smaller id.
    #[serde(default)]
    pub before_id: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceUpdate {
    pub status: String,
}

/// `agent_watch {agentId}`: the agent a socket watches, or `null` for none.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AgentWatch {
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// One chat message, as REST answers it and as the `chat_message` event carries it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatMessageView {
    pub id: String,
    pub user_id: String,
    pub display_name: String,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The client id it was sent with; `null` when none.
    #[schema(required = true)]
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceUserView {
    pub user_id: String,
    pub display_name: String,
    #[schema(value_type = PresenceName)]
    pub status: &'static str,
    /// Milliseconds since the Unix epoch; 0 when unknown.
    pub last_seen: i64,
    /// The agents the member watches on any of their devices (agent ids, sorted).
    pub watching: Vec<String>,
}

/// The `team_presence` event: every member of the team with their status and the agents they
/// watch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TeamPresenceView {
    pub users: Vec<PresenceUserView>,
}

/// `{message}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MessageEnvelope {
    pub message: ChatMessageView,
}

/// A page of chat, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatHistory {
    pub messages: Vec<ChatMessageView>,
    /// Older messages exist before the first one.
    pub has_more: bool,
}

/// A member's presence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // names for the document; the values are written as text
pub(crate) enum PresenceName {
    Online,
    Away,
    Busy,
    Offline,
}

pub(crate) fn message_view(m: pb::ChatMessage) -> ChatMessageView {
    ChatMessageView {
        id: m.id,
        user_id: m.user_id,
        display_name: m.display_name,
        message: m.text,
        timestamp: m.created_at_ms,
        client_id: m.client_id,
    }
}

pub(crate) fn presence_view(p: pb::TeamPresence) -> TeamPresenceView {
    TeamPresenceView {
        users: p
            .users
            .into_iter()
            .map(|u| PresenceUserView {
                status: status_name(u.status),
                user_id: u.user_id,
                display_name: u.display_name,
                last_seen: u.last_seen_ms,
                watching: u.watching,
            })
            .collect(),
    }
}

pub(crate) fn status_name(raw: i32) -> &'static str {
    match pb::PresenceStatus::try_from(raw) {
        Ok(pb::PresenceStatus::Online) => "online",
        Ok(pb::PresenceStatus::Away) => "away",
        Ok(pb::PresenceStatus::Busy) => "busy",
        _ => "offline",
    }
}

pub(crate) fn parse_status(status: &str) -> Option<pb::PresenceStatus> {
    match status.trim().to_ascii_lowercase().as_str() {
        "online" => Some(pb::PresenceStatus::Online),
        "away" => Some(pb::PresenceStatus::Away),
        "busy" => Some(pb::PresenceStatus::Busy),
        "offline" => Some(pb::PresenceStatus::Offline),
        _ => None,
    }
}
