//! Ended sessions. Access tokens are checked without a round trip, so a session that ends
//! (logout, a revoked device, a replayed refresh token, a member removed from their team) is
//! made known to every process: it is recorded in the hot store (which holds it as long as one
//! of its access tokens could still be valid; a removed member for good) and announced on the
//! control channel. Each process keeps a mirror ([`Revocations`]) that its `Verifier`
//! consults on every token, and hands each announcement to its listeners (the gateway closes
//! the sessions' sockets, the orchestrator stops a removed member's agents).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use covibe_proto::events::v1 as events;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, HotStore};
use covibe_types::{SessionId, UserId, now_ms};
use tokio::sync::broadcast;

/// Sessions that ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub sessions: Vec<SessionId>,
    /// Members removed from their team: every session of theirs, for good.
    pub users: Vec<UserId>,
    /// `logout`, `revoked`, `refresh_reuse`, `member_removed`.
    pub reason: String,
}

impl Ended {
    fn to_pb(&self, sessions_until_ms: i64) -> events::SessionsEnded {
        events::SessionsEnded {
            session_ids: self.sessions.iter().map(ToString::to_string).collect(),
            user_ids: self.users.iter().map(ToString::to_string).collect(),
            reason: self.reason.clone(),
            sessions_until_ms,
        }
    }

    fn from_pb(pb: &events::SessionsEnded) -> Self {
        Self {
            sessions: pb
                .session_ids
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            users: pb.user_ids.iter().filter_map(|s| s.parse().ok()).collect(),
            reason: pb.reason.clone(),
        }
    }
}

/// How a hot-store entry names what it revokes.
fn session_key(id: SessionId) -> String {
    format!("s:{id}")
}

fn user_key(id: UserId) -> String {
    format!("u:{id}")
}

/// A removed member's entry never expires.
const FOREVER: i64 = i64::MAX;

#[derive(Default)]
struct State {
    /// Ended sessions, until when their tokens could still be valid (ms since the epoch).
    sessions: HashMap<SessionId, i64>,
    users: HashSet<UserId>,
}

struct Inner {
    state: RwLock<State>,
    announce: broadcast::Sender<Arc<Ended>>,
}

/// This process's mirror of the ended sessions. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Revocations(Arc<Inner>);

impl Default for Revocations {
    fn default() -> Self {
        let (announce, _) = broadcast::channel(256);
        Self(Arc::new(Inner {
            state: RwLock::default(),
            announce,
        }))
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("Revocations")
            .field("sessions", &state.sessions.len())
            .field("users", &state.users.len())
            .finish()
    }
}

impl Revocations {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.0
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.0
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a token of this session (of this member) must be refused.
    pub fn is_revoked(&self, session: SessionId, user: UserId) -> bool {
        let state = self.read();
        state.users.contains(&user)
            || state
                .sessions
                .get(&session)
                .is_some_and(|until| *until > now_ms())
    }

    /// Whether the member was removed from their team.
    pub fn is_removed(&self, user: UserId) -> bool {
        self.read().users.contains(&user)
    }

    /// Every member removed from their team.
    pub fn removed_users(&self) -> Vec<UserId> {
        self.read().users.iter().copied().collect()
    }

    /// Announcements of sessions that ended, from the moment of the call.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Ended>> {
        self.0.announce.subscribe()
    }

    /// Records what ended (sessions held for `hold`) and, if any of it is new here, announces
    /// it to this process's listeners.
    fn record(&self, ended: &Ended, session_until: i64) {
        let fresh = {
            let mut state = self.write();
            let now = now_ms();
            state.sessions.retain(|_, until| *until > now);
            let mut fresh = Ended {
                sessions: Vec::new(),
                users: Vec::new(),
                reason: ended.reason.clone(),
            };
            for session in &ended.sessions {
                if state.sessions.insert(*session, session_until).is_none() {
                    fresh.sessions.push(*session);
                }
            }
            for user in &ended.users {
                if state.users.insert(*user) {
                    fresh.users.push(*user);
                }
            }
            fresh
        };
        if !fresh.sessions.is_empty() || !fresh.users.is_empty() {
            // Nobody listening is fine: a process without sockets or agents.
            let _ = self.0.announce.send(Arc::new(fresh));
        }
    }

    /// Records `ended` in this process only (tests; and what `end_sessions` does locally).
    pub fn apply(&self, ended: &Ended) {
        self.record(ended, FOREVER);
    }

    /// Loads every entry the hot store holds.
    fn load(&self, entries: Vec<(String, i64)>) {
        let mut sessions = HashMap::new();
        let mut users = Vec::new();
        for (key, until) in entries {
            if let Some(id) = key.strip_prefix("s:").and_then(|id| id.parse().ok()) {
                sessions.insert(id, until);
            } else if let Some(id) = key.strip_prefix("u:").and_then(|id| id.parse().ok()) {
                users.push(id);
            }
        }
        if !users.is_empty() {
            self.record(
                &Ended {
                    sessions: Vec::new(),
                    users,
                    reason: "member_removed".to_owned(),
                },
                FOREVER,
            );
        }
        for (session, until) in sessions {
            self.record(
                &Ended {
                    sessions: vec![session],
                    users: Vec::new(),
                    reason: "revoked".to_owned(),
                },
                until,
            );
        }
    }
}

/// Ends sessions everywhere: recorded in the hot store (sessions for `hold`, as long as one of
/// their access tokens may live; removed members for good), in this process at once, and
/// announced to every other process. An error means it was not recorded: the caller must not
/// report success.
pub async fn end_sessions(
    hot: &dyn HotStore,
    revocations: &Revocations,
    ended: Ended,
    hold: Duration,
) -> Result<(), covibe_storage::Error> {
    let until = now_ms().saturating_add(i64::try_from(hold.as_millis()).unwrap_or(i64::MAX));
    let entries = entries(&ended, until);
    if entries.is_empty() {
        return Ok(());
    }
    hot.revoke(&entries).await?;
    revocations.record(&ended, until);
    let message = events::ControlMessage {
        message: Some(events::control_message::Message::SessionsEnded(
            ended.to_pb(until),
        )),
    };
    hot.publish_control(Bytes::from(message.encode_to_vec()))
        .await?;
    tracing::info!(
        sessions = ended.sessions.len(),
        users = ended.users.len(),
        reason = %ended.reason,
        "sessions ended"
    );
    Ok(())
}

/// What a service that ends sessions holds: the hot store, this process's mirror, and how
/// long an ended session's tokens could still be valid (the access-token lifetime).
#[derive(Clone)]
pub struct Ender {
    pub hot: Arc<dyn HotStore>,
    pub revocations: Revocations,
    pub hold: Duration,
}

impl Ender {
    /// [`end_sessions`].
    pub async fn end(&self, ended: Ended) -> Result<(), covibe_storage::Error> {
        end_sessions(&*self.hot, &self.revocations, ended, self.hold).await
    }

    /// Writes entries again, without announcing them: for the owner of the truth (the
    /// database) after a hot-store restart lost them. Sessions are held for `hold` from now.
    pub async fn reassert(&self, ended: &Ended) -> Result<(), covibe_storage::Error> {
        let until =
            now_ms().saturating_add(i64::try_from(self.hold.as_millis()).unwrap_or(i64::MAX));
        let entries = entries(ended, until);
        if entries.is_empty() {
            return Ok(());
        }
        self.hot.revoke(&entries).await
    }
}

fn entries(ended: &Ended, session_until: i64) -> Vec<(String, i64)> {
    ended
        .sessions
        .iter()
        .map(|s| (session_key(*s), session_until))
        .chain(ended.users.iter().map(|u| (user_key(*u), FOREVER)))
        .collect()
}

/// Keeps `revocations` in step with the hot store: loads what it holds, then follows the
/// announcements on the control channel (reloading after any gap in them). Returns once it
/// has loaded, so that a service started after it refuses every ended session.
pub async fn follow(
    hot: Arc<dyn HotStore>,
    revocations: Revocations,
) -> Result<(), covibe_storage::Error> {
    // Subscribed before loading: an announcement between the two is not missed.
    let mut control = hot.subscribe_control().await?;
    revocations.load(hot.revocations().await?);
    tokio::spawn(async move {
        while let Some(event) = control.recv().await {
            match event {
                FanoutEvent::Message(bytes) => {
                    let Ok(message) = events::ControlMessage::decode(bytes) else {
                        continue;
                    };
                    if let Some(events::control_message::Message::SessionsEnded(ended)) =
                        message.message
                    {
                        let until = match ended.sessions_until_ms {
                            0 => FOREVER,
                            until => until,
                        };
                        revocations.record(&Ended::from_pb(&ended), until);
                    }
                }
                FanoutEvent::Gap => reload(&*hot, &revocations).await,
            }
        }
    });
    Ok(())
}

/// After a gap in the announcements: read the hot store's entries again, retrying until it
/// answers.
async fn reload(hot: &dyn HotStore, revocations: &Revocations) {
    let mut wait = Duration::from_millis(100);
    loop {
        match hot.revocations().await {
            Ok(entries) => return revocations.load(entries),
            Err(err) => {
                tracing::warn!(error = %err, "could not reload ended sessions; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
