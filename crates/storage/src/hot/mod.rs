//! The hot store: what is read and written on every output line, and team presence. Two
//! implementations with one contract, checked by one conformance suite (`tests/hot_store.rs`):
//! Redis for many processes, in-process for `covibe standalone`.

mod feed;
mod memory;
mod redis;

pub use feed::Subscription;
pub use memory::MemoryHotStore;
pub use redis::RedisHotStore;

use std::time::Duration;

use bytes::Bytes;
use covibe_types::{AgentId, TeamId, UserId};

use crate::Error;

/// Bytes of output kept in one agent's ring, at most, whatever its chunk count (always its
/// newest chunk): long lines cannot grow memory.
pub const RING_MAX_BYTES: usize = 8 * 1024 * 1024;

/// How long an agent's ring is kept after its last write: an agent that ended is forgotten
/// then (its output stays in the database).
pub const RING_TTL: Duration = Duration::from_secs(3600);

/// One output chunk of an agent, as kept in its ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotChunk {
    pub seq: u64,
    /// 1 = stdout, 2 = stderr (the proto's `OutputStream` numbering).
    pub stream: i32,
    pub data: Bytes,
    /// The line understood (the orchestrator's event JSON), parsed once at ingest; empty when
    /// unknown (written by an older version).
    pub event: Bytes,
}

/// What a fan-out subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutEvent {
    /// An encoded `covibe.events.v1.TeamEvent`.
    Message(Bytes),
    /// The subscriber fell behind or the link to the hot store broke: events were missed and
    /// receivers must resynchronise from history.
    Gap,
}

/// Where [`HotStore::range`] stops: the first seq past `from..from + limit`.
fn range_end(from: u64, limit: usize) -> u64 {
    from.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX))
}

/// One member's presence entry as one holder keeps it (a gateway replica, for the member's
/// sockets there): a member has as many entries as holders.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PresenceEntry {
    pub user: UserId,
    pub holder: String,
    /// Opaque to the store (the team service keeps an encoded `covibe.team.v1.PresenceUser`).
    pub value: Bytes,
}

/// One write of a member's presence: `value` becomes `holder`'s entry for `ttl` from now and,
/// in the same step, the member's entry from `remove` (another holder) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceWrite {
    pub user: UserId,
    pub holder: String,
    pub value: Bytes,
    pub ttl: Duration,
    pub remove: Option<String>,
}

/// A team's live presence entries right after one call, taken atomically with it, and what the
/// call took away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSnapshot {
    /// For a call that changed something (a write, or a read that pruned): strictly greater
    /// than the version of every snapshot of the team taken before it (it is time-based, so it
    /// keeps growing even after the team's entries all expired), so of two snapshots the one
    /// with the higher version holds every change the other holds. 0 when the call changed
    /// nothing.
    pub version: u64,
    /// Every live entry, in no particular order.
    pub entries: Vec<PresenceEntry>,
    /// The entries this call took away, as they were: the expired ones it pruned (each is
    /// reported by exactly one call, the one that prunes it, so its holder's disappearance can
    /// be told) and the live ones it replaced or removed.
    pub gone: Vec<PresenceEntry>,
}

#[async_trait::async_trait]
pub trait HotStore: Send + Sync + 'static {
    /// Adds chunks to the agent's ring buffer, keeping only the newest ones. Adding a chunk whose
    /// `seq` is already held changes nothing.
    async fn append(&self, agent: AgentId, chunks: &[HotChunk]) -> Result<(), Error>;

    /// The chunks held with `seq` in `from..from + limit`, in order. The buffer may no longer
    /// hold all of them (evicted, expired, or lost in a restart): callers check that the range
    /// is whole and otherwise read the database.
    async fn range(&self, agent: AgentId, from: u64, limit: usize) -> Result<Vec<HotChunk>, Error>;

    /// `append` for several agents at once: one round trip where the store has them.
    async fn append_many(&self, batches: &[(AgentId, Vec<HotChunk>)]) -> Result<(), Error> {
        for (agent, chunks) in batches {
            self.append(*agent, chunks).await?;
        }
        Ok(())
    }

    /// Publishes an encoded event on the team's channel.
    async fn publish(&self, team: TeamId, event: Bytes) -> Result<(), Error>;

    /// Publishes several events, in order, as one message where the store can: subscribers
    /// still receive them one by one.
    async fn publish_many(&self, events: &[(TeamId, Bytes)]) -> Result<(), Error> {
        for (team, event) in events {
            self.publish(*team, event.clone()).await?;
        }
        Ok(())
    }

    /// Subscribes to every team's channel.
    async fn subscribe(&self) -> Result<Subscription, Error>;

    /// Publishes an encoded `covibe.events.v1.ControlMessage` to every orchestrator and
    /// vm-connector replica.
    async fn publish_control(&self, command: Bytes) -> Result<(), Error>;

    /// Subscribes to the control channel.
    async fn subscribe_control(&self) -> Result<Subscription, Error>;

    /// Applies `write` to the team's presence: expired entries are pruned first (and reported
    /// in `gone`), then the write's holder entry is set and its `remove` entry deleted. Each
    /// entry expires on its own. Returns the team's live entries just after, versioned.
    async fn set_presence(
        &self,
        team: TeamId,
        write: PresenceWrite,
    ) -> Result<PresenceSnapshot, Error>;

    /// The team's live presence entries. Expired entries are never returned: they are pruned
    /// and reported in `gone` (the snapshot is versioned then).
    async fn presence(&self, team: TeamId) -> Result<PresenceSnapshot, Error>;

    /// Records revocation entries (opaque keys), each held until its time (ms since the
    /// epoch); an entry recorded twice keeps the later time.
    async fn revoke(&self, entries: &[(String, i64)]) -> Result<(), Error>;

    /// Every revocation entry whose time has not passed (expired ones are pruned).
    async fn revocations(&self) -> Result<Vec<(String, i64)>, Error>;
}
