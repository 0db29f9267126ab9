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

/// A team's live presence entries right after one write, taken atomically with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSnapshot {
    /// Strictly greater than the version of every snapshot of the team taken before it (it is
    /// time-based, so it keeps growing even after the team's entries all expired): of two
    /// snapshots, the one with the higher version holds every write the other holds.
    pub version: u64,
    pub entries: Vec<Bytes>,
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

    /// Sets `user`'s presence entry in `team` (opaque bytes; the team service stores an encoded
    /// `covibe.team.v1.PresenceUser`), replacing the previous one. It lives for `ttl` from now,
    /// each member's entry expiring on its own. Returns the team's live entries just after the
    /// write, versioned, so concurrent writers can tell whose snapshot is the newer one.
    async fn set_presence(
        &self,
        team: TeamId,
        user: UserId,
        entry: Bytes,
        ttl: Duration,
    ) -> Result<PresenceSnapshot, Error>;

    /// The team's live presence entries, one per member, in no particular order. Expired
    /// entries are never returned (and are pruned).
    async fn presence(&self, team: TeamId) -> Result<Vec<Bytes>, Error>;

    /// Records revocation entries (opaque keys), each held until its time (ms since the
    /// epoch); an entry recorded twice keeps the later time.
    async fn revoke(&self, entries: &[(String, i64)]) -> Result<(), Error>;

    /// Every revocation entry whose time has not passed (expired ones are pruned).
    async fn revocations(&self) -> Result<Vec<(String, i64)>, Error>;
}
