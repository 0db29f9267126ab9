//! The hot store: what is read and written on every output line. Two implementations with one
//! contract, checked by one conformance suite (`tests/hot_store.rs`): Redis for many processes,
//! in-process for `covibe standalone`.

mod memory;
mod redis;

pub use memory::MemoryHotStore;
pub use redis::RedisHotStore;

use bytes::Bytes;
use covibe_types::{AgentId, TeamId};
use tokio::sync::mpsc;

use crate::Error;

/// One output chunk of an agent, as kept in its ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotChunk {
    pub seq: u64,
    /// 1 = stdout, 2 = stderr (the proto's `OutputStream` numbering).
    pub stream: i32,
    pub data: Bytes,
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

/// Every team's fan-out events, in publication order per publisher.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<FanoutEvent>,
}

impl Subscription {
    pub(crate) fn new(rx: mpsc::Receiver<FanoutEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<FanoutEvent> {
        self.rx.recv().await
    }
}

#[async_trait::async_trait]
pub trait HotStore: Send + Sync + 'static {
    /// Adds chunks to the agent's ring buffer, keeping only the newest ones. Adding a chunk whose
    /// `seq` is already held changes nothing.
    async fn append(&self, agent: AgentId, chunks: &[HotChunk]) -> Result<(), Error>;

    /// Chunks with `seq >= from`, in order, at most `limit`. The buffer may no longer hold the
    /// start of the range (evicted, expired, or lost in a restart): callers compare the first
    /// `seq` with `from` and fall back to the database.
    async fn range(&self, agent: AgentId, from: u64, limit: usize) -> Result<Vec<HotChunk>, Error>;

    /// Publishes an encoded event on the team's channel.
    async fn publish(&self, team: TeamId, event: Bytes) -> Result<(), Error>;

    /// Subscribes to every team's channel.
    async fn subscribe(&self) -> Result<Subscription, Error>;

    /// Publishes an encoded `covibe.events.v1.AgentCommand` to every orchestrator.
    async fn publish_control(&self, command: Bytes) -> Result<(), Error>;

    /// Subscribes to the control channel.
    async fn subscribe_control(&self) -> Result<Subscription, Error>;
}

/// Subscriber queue length before a subscriber is told it has a gap.
pub(crate) const SUBSCRIBER_QUEUE: usize = 16 * 1024;
