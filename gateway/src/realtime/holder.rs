//! This gateway replica as a presence holder: the id the team service keeps the entries of
//! the members joined here under, how often they are repeated, and the order of each member's
//! updates (what is sent lives in `chat::presence`).

use std::time::Duration;

use covibe_types::UserId;

/// Members whose updates are ordered by one lock (a member is always on the same one).
const TURNS: usize = 256;

/// This gateway as a presence holder.
pub(crate) struct PresenceHolder {
    /// The holder id the team service keeps this gateway's entries under.
    pub(crate) id: String,
    /// How often every member joined here is said to be still here.
    pub(crate) heartbeat: Duration,
    /// A member's updates go one at a time, each made from their sockets as they are then: of
    /// a heartbeat and a disconnect racing, the one sent last is the one that counts.
    turns: Box<[tokio::sync::Mutex<()>]>,
}

impl PresenceHolder {
    pub(crate) fn new(heartbeat: Duration) -> Self {
        Self {
            id: format!("gw-{}", uuid::Uuid::new_v4().simple()),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    pub(crate) async fn turn(&self, user: UserId) -> tokio::sync::MutexGuard<'_, ()> {
        // A v7 id ends in random bits.
        let at = usize::try_from(user.as_uuid().as_u128() % TURNS as u128).unwrap_or(0);
        self.turns[at].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_plain_and_distinct() {
        let (a, b) = (
            PresenceHolder::new(Duration::from_secs(30)),
            PresenceHolder::new(Duration::ZERO),
        );
        assert_ne!(a.id, b.id, "every gateway start is a new holder");
        assert!(a.id.len() <= 64);
        assert!(
            a.id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(b.heartbeat > Duration::ZERO);
    }
}
