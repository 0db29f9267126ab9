//! Team chat and presence. Messages are durable (the team store); presence is hot state with a
//! TTL (the hot store; its rules in `presence.rs`). Both are published on the team's fan-out
//! channel as team events. Only a member of the team can read or write either.

use std::sync::Arc;
use std::time::Duration;

use covibe_storage::HotStore;
use covibe_types::{ApiError, MessageId, TeamId, UserId, now_ms};

use crate::Error;
use crate::events;
use crate::model::{Before, ChatMessage, ChatPage, Member, PRESENCE_TTL};
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

/// The longest client id of a message or holder id of a presence entry.
pub const MAX_CLIENT_ID: usize = 64;

/// Whether `id` is 1 to 64 of `[A-Za-z0-9_-]`: what a client chooses to name a message (or a
/// gateway itself as a presence holder).
pub(crate) fn is_client_chosen_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a message's client id.
pub fn clean_client_id(id: Option<&str>) -> Result<Option<String>, ApiError> {
    match id {
        None => Ok(None),
        Some(id) if is_client_chosen_id(id) => Ok(Some(id.to_owned())),
        Some(_) => Err(ApiError::invalid(
            "clientId must be 1 to 64 characters, each a letter, a digit, '_' or '-'",
        )),
    }
}

pub struct Chat {
    pub(crate) store: Arc<dyn TeamStore>,
    pub(crate) hot: Arc<dyn HotStore>,
    /// How long a holder's presence entry lives after its last update.
    pub(crate) presence_ttl: Duration,
}

impl Chat {
    pub fn new(store: Arc<dyn TeamStore>, hot: Arc<dyn HotStore>) -> Self {
        Self {
            store,
            hot,
            presence_ttl: PRESENCE_TTL,
        }
    }

    /// Presence entries live `ttl` after their last update (holders repeat them about every
    /// third of it).
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// The caller as a member of `team`, or `permission_denied`.
    pub(crate) async fn member_of(&self, user: UserId, team: TeamId) -> Result<Member, Error> {
        match self.store.find_member(user).await? {
            Some(member) if member.team_id == team => Ok(member),
            _ => Err(ApiError::forbidden("not a member of this team").into()),
        }
    }

    /// Stores a message in the caller's team chat and tells the team. A message with a client
    /// id the member used before is not stored again: the first one is the answer, and the
    /// team is not told twice.
    pub async fn post(
        &self,
        user: UserId,
        team: TeamId,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<ChatMessage, Error> {
        let text = clean_message(text)?;
        let client_id = clean_client_id(client_id)?;
        let member = self.member_of(user, team).await?;
        let message = ChatMessage {
            id: MessageId::new(),
            team_id: team,
            user_id: user,
            display_name: member.display_name,
            text,
            created_at_ms: now_ms(),
            client_id,
        };
        if let Some(earlier) = self.store.add_message(&message).await? {
            tracing::debug!(team_id = %team, message_id = %earlier.id, "chat message retried");
            return Ok(earlier);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PresenceStatus;

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
    fn client_ids_are_short_and_plain() {
        assert_eq!(clean_client_id(None).ok(), Some(None));
        let uuid = "0190a8e2-7c1d-7bbb-8000-1234567890ab";
        assert_eq!(
            clean_client_id(Some(uuid)).ok().flatten().as_deref(),
            Some(uuid)
        );
        assert!(clean_client_id(Some(&"a".repeat(64))).is_ok());
        for bad in ["", "has space", "émoji", "semi;colon", &"a".repeat(65)] {
            let err = clean_client_id(Some(bad)).err();
            assert!(
                err.is_some_and(|e| e.message.contains("clientId")),
                "{bad:?}"
            );
        }
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
