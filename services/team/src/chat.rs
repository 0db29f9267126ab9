//! Team chat and presence. Messages are durable (the team store); presence is hot state with a
//! TTL (the hot store). Both are published on the team's fan-out channel as team events. Only
//! a member of the team can read or write either.

use std::collections::HashMap;
use std::sync::Arc;

use covibe_storage::HotStore;
use covibe_types::{ApiError, MessageId, TeamId, UserId, now_ms};

use crate::Error;
use crate::events;
use crate::model::{
    Before, ChatMessage, ChatPage, Member, MemberPresence, PresenceStatus, TeamPresence,
};
use crate::store::TeamStore;

/// The longest message, in characters (after trimming).
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// History page size when the caller names none, and the largest page.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// Trims a message and checks it: 1 to 4000 characters, no control characters other than
/// line breaks and tabs.
pub fn clean_message(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::invalid("message must not be empty"));
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid(format!(
            "message is too long: {chars} characters, at most {MAX_MESSAGE_CHARS}"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            "message must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(text.to_owned())
}

fn decode_entries(raw: Vec<bytes::Bytes>) -> HashMap<UserId, MemberPresence> {
    raw.into_iter()
        .filter_map(events::decode_presence_entry)
        .map(|e| (e.user_id, e))
        .collect()
}

fn hot_unavailable(err: covibe_storage::Error) -> ApiError {
    tracing::warn!(error = %err, "presence: hot store unavailable");
    ApiError::unavailable("presence is unavailable right now; try again")
}

pub struct Chat {
    store: Arc<dyn TeamStore>,
    hot: Arc<dyn HotStore>,
}

impl Chat {
    pub fn new(store: Arc<dyn TeamStore>, hot: Arc<dyn HotStore>) -> Self {
        Self { store, hot }
    }

    /// The caller as a member of `team`, or `permission_denied`.
    async fn member_of(&self, user: UserId, team: TeamId) -> Result<Member, Error> {
        match self.store.find_member(user).await? {
            Some(member) if member.team_id == team => Ok(member),
            _ => Err(ApiError::forbidden("not a member of this team").into()),
        }
    }

    /// Stores a message in the caller's team chat and tells the team.
    pub async fn post(&self, user: UserId, team: TeamId, text: &str) -> Result<ChatMessage, Error> {
        let text = clean_message(text)?;
        let member = self.member_of(user, team).await?;
        let message = ChatMessage {
            id: MessageId::new(),
            team_id: team,
            user_id: user,
            display_name: member.display_name,
            text,
            created_at_ms: now_ms(),
        };
        self.store.add_message(&message).await?;
        if let Err(err) = self.hot.publish(team, events::chat_message(&message)).await {
            // The message is stored: viewers find it in the history.
            tracing::warn!(team_id = %team, error = %err, "could not publish a chat message");
        }
        Ok(message)
    }

    /// A page of the caller's team chat: the newest `limit` messages before `before`, oldest
    /// first.
    pub async fn history(
        &self,
        user: UserId,
        team: TeamId,
        before: Option<Before>,
        limit: u32,
    ) -> Result<ChatPage, Error> {
        self.member_of(user, team).await?;
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut messages = self
            .store
            .messages(team, before, u64::from(limit) + 1)
            .await?;
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        messages.reverse();
        Ok(ChatPage { messages, has_more })
    }

    /// Sets the caller's presence and returns the team's. `None` means "still here": it keeps
    /// `away` or `busy` and otherwise makes the caller `online`. The team is told only when the
    /// caller's status changes; repeating it just keeps it alive.
    pub async fn update_presence(
        &self,
        user: UserId,
        team: TeamId,
        status: Option<PresenceStatus>,
    ) -> Result<TeamPresence, Error> {
        let member = self.member_of(user, team).await?;
        let live = self.live_entries(team).await?;
        let before = live
            .get(&user)
            .map_or(PresenceStatus::Offline, |e| e.status);
        let status = status.unwrap_or(match before {
            PresenceStatus::Away | PresenceStatus::Busy => before,
            PresenceStatus::Online | PresenceStatus::Offline => PresenceStatus::Online,
        });
        let entry = MemberPresence {
            user_id: user,
            display_name: member.display_name,
            status,
            last_seen_ms: now_ms(),
        };
        // The snapshot is taken with the write: of two concurrent updates, the one with the
        // higher version shows both, and receivers keep the highest version they have seen.
        let snapshot = self
            .hot
            .set_presence(team, user, events::presence_entry(&entry), status.ttl())
            .await
            .map_err(hot_unavailable)?;
        let live = decode_entries(snapshot.entries);
        let mut presence = self.roster(team, live).await?;
        presence.version = snapshot.version;
        if before != status
            && let Err(err) = self
                .hot
                .publish(team, events::team_presence(&presence))
                .await
        {
            tracing::warn!(team_id = %team, error = %err, "could not publish presence");
        }
        Ok(presence)
    }

    /// Every member of the caller's team with their presence.
    pub async fn presence(&self, user: UserId, team: TeamId) -> Result<TeamPresence, Error> {
        self.member_of(user, team).await?;
        let live = self.live_entries(team).await?;
        self.roster(team, live).await
    }

    async fn live_entries(&self, team: TeamId) -> Result<HashMap<UserId, MemberPresence>, Error> {
        let raw = self.hot.presence(team).await.map_err(hot_unavailable)?;
        Ok(decode_entries(raw))
    }

    async fn roster(
        &self,
        team: TeamId,
        mut live: HashMap<UserId, MemberPresence>,
    ) -> Result<TeamPresence, Error> {
        let users = self
            .store
            .members(team)
            .await?
            .into_iter()
            .map(|m| match live.remove(&m.id) {
                Some(entry) => MemberPresence {
                    display_name: m.display_name,
                    ..entry
                },
                None => MemberPresence {
                    user_id: m.id,
                    display_name: m.display_name,
                    status: PresenceStatus::Offline,
                    last_seen_ms: 0,
                },
            })
            .collect();
        Ok(TeamPresence {
            team_id: team,
            users,
            version: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_trimmed_and_bounded() {
        assert_eq!(
            clean_message("  hi\n there \t").ok().as_deref(),
            Some("hi\n there")
        );
        assert!(clean_message(" \n\t ").is_err());
        assert!(clean_message(&"é".repeat(MAX_MESSAGE_CHARS)).is_ok());
        let err = clean_message(&"x".repeat(MAX_MESSAGE_CHARS + 1)).err();
        assert!(err.is_some_and(|e| e.message.contains("too long")));
        assert!(clean_message("nul\0byte").is_err());
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(
            "Away".parse::<PresenceStatus>().ok(),
            Some(PresenceStatus::Away)
        );
        assert!("asleep".parse::<PresenceStatus>().is_err());
    }
}
