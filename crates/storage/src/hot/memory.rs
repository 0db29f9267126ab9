//! The in-process hot store of `covibe standalone`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use covibe_types::{AgentId, TeamId, UserId};

use super::feed::{Feed, feed};
use super::{
    HotChunk, HotStore, PresenceEntry, PresenceSnapshot, PresenceWrite, RING_MAX_BYTES, RING_TTL,
    Subscription,
};
use crate::Error;

/// One agent's newest chunks, sorted by seq, with their total size, and when it was last
/// written.
struct Ring {
    chunks: VecDeque<HotChunk>,
    bytes: usize,
    written: Instant,
}

/// Every agent's ring, and when the rings were last swept of those past their TTL.
struct Rings {
    agents: HashMap<AgentId, Ring>,
    swept: Instant,
}

pub struct MemoryHotStore {
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
    rings: Mutex<Rings>,
    fanout: Subscribers,
    control: Subscribers,
    presence: Mutex<Presence>,
    revoked: Mutex<HashMap<String, i64>>,
}

/// Per team, per (member, holder): when the entry expires, and the entry.
type Entries = HashMap<(UserId, String), (Instant, Bytes)>;

#[derive(Default)]
struct Presence {
    teams: HashMap<TeamId, Entries>,
    /// The last snapshot version handed out (store-wide, so it never goes back).
    version: u64,
}

fn entry(((user, holder), (_, value)): (&(UserId, String), &(Instant, Bytes))) -> PresenceEntry {
    PresenceEntry {
        user: *user,
        holder: holder.clone(),
        value: value.clone(),
    }
}

/// Removes the expired entries, returning them.
fn prune(entries: &mut Entries, now: Instant) -> Vec<PresenceEntry> {
    let expired: Vec<PresenceEntry> = entries
        .iter()
        .filter(|(_, (until, _))| *until <= now)
        .map(entry)
        .collect();
    entries.retain(|_, (until, _)| *until > now);
    expired
}

impl Presence {
    fn next_version(&mut self) -> u64 {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.version = now_us.max(self.version.saturating_add(1));
        self.version
    }
}

impl MemoryHotStore {
    /// A store keeping at most `capacity` chunks and [`RING_MAX_BYTES`] per agent (always the
    /// newest chunk), each agent's for [`RING_TTL`] after its last write, as Redis keeps them.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes: RING_MAX_BYTES,
            ttl: RING_TTL,
            rings: Mutex::new(Rings {
                agents: HashMap::new(),
                swept: Instant::now(),
            }),
            fanout: Subscribers::default(),
            control: Subscribers::default(),
            presence: Mutex::new(Presence::default()),
            revoked: Mutex::default(),
        }
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps each ring for `ttl` after its last write (an agent that ended is forgotten then).
    #[must_use]
    pub fn with_ring_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keeps at most `max_bytes` of output per agent (and always its newest chunk).
    #[must_use]
    pub fn with_ring_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn rings(&self) -> std::sync::MutexGuard<'_, Rings> {
        // A panic while holding the lock cannot leave a ring half-updated in a way that matters.
        self.rings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl HotStore for MemoryHotStore {
    async fn append(&self, agent: AgentId, chunks: &[HotChunk]) -> Result<(), Error> {
        if chunks.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut rings = self.rings();
        // Rings past their TTL go, looked for at most once per TTL (and per minute).
        if now.duration_since(rings.swept) >= self.ttl.min(Duration::from_secs(60)) {
            let ttl = self.ttl;
            rings
                .agents
                .retain(|_, ring| now.duration_since(ring.written) < ttl);
            rings.swept = now;
        }
        let ring = rings.agents.entry(agent).or_insert_with(|| Ring {
            chunks: VecDeque::new(),
            bytes: 0,
            written: now,
        });
        ring.written = now;
        for chunk in chunks {
            // Keep the ring sorted by seq; chunks almost always arrive in order.
            let kept = match ring.chunks.back() {
                Some(last) if last.seq >= chunk.seq => {
                    match ring.chunks.binary_search_by_key(&chunk.seq, |c| c.seq) {
                        Err(at) if at > 0 || ring.chunks.len() < self.capacity => {
                            ring.chunks.insert(at, chunk.clone());
                            true
                        }
                        _ => false,
                    }
                }
                _ => {
                    ring.chunks.push_back(chunk.clone());
                    true
                }
            };
            if kept {
                ring.bytes += chunk.data.len() + chunk.event.len();
            }
            while ring.chunks.len() > self.capacity
                || (ring.bytes > self.max_bytes && ring.chunks.len() > 1)
            {
                if let Some(evicted) = ring.chunks.pop_front() {
                    ring.bytes -= evicted.data.len() + evicted.event.len();
                }
            }
        }
        Ok(())
    }

    async fn range(&self, agent: AgentId, from: u64, limit: usize) -> Result<Vec<HotChunk>, Error> {
        let mut rings = self.rings();
        let Some(ring) = rings.agents.get(&agent) else {
            return Ok(Vec::new());
        };
        if ring.written.elapsed() >= self.ttl {
            rings.agents.remove(&agent);
            return Ok(Vec::new());
        }
        let start = ring.chunks.partition_point(|c| c.seq < from);
        let end = super::range_end(from, limit);
        Ok(ring
            .chunks
            .iter()
            .skip(start)
            .take_while(|c| c.seq < end)
            .cloned()
            .collect())
    }

    async fn publish(&self, _team: TeamId, event: Bytes) -> Result<(), Error> {
        // No subscriber is not an error: nobody is watching.
        self.fanout.send(&event);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription, Error> {
        Ok(self.fanout.subscribe())
    }

    async fn publish_control(&self, command: Bytes) -> Result<(), Error> {
        self.control.send(&command);
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<Subscription, Error> {
        Ok(self.control.subscribe())
    }

    async fn set_presence(
        &self,
        team: TeamId,
        write: PresenceWrite,
    ) -> Result<PresenceSnapshot, Error> {
        let now = Instant::now();
        let expires = now.checked_add(write.ttl).unwrap_or(now);
        let mut presence = self.presence();
        let version = presence.next_version();
        let entries = presence.teams.entry(team).or_default();
        let mut gone = prune(entries, now);
        let written = entries.insert((write.user, write.holder.clone()), (expires, write.value));
        let removed = write
            .remove
            .filter(|holder| *holder != write.holder)
            .and_then(|holder| entries.remove_entry(&(write.user, holder)));
        for (key, value) in written
            .map(|value| ((write.user, write.holder), value))
            .into_iter()
            .chain(removed)
        {
            gone.push(entry((&key, &value)));
        }
        Ok(PresenceSnapshot {
            version,
            entries: entries.iter().map(entry).collect(),
            gone,
        })
    }

    async fn presence(&self, team: TeamId) -> Result<PresenceSnapshot, Error> {
        let now = Instant::now();
        let mut presence = self.presence();
        let Some(entries) = presence.teams.get_mut(&team) else {
            return Ok(PresenceSnapshot {
                version: 0,
                entries: Vec::new(),
                gone: Vec::new(),
            });
        };
        let gone = prune(entries, now);
        let live = entries.iter().map(entry).collect();
        if entries.is_empty() {
            presence.teams.remove(&team);
        }
        let version = if gone.is_empty() {
            0
        } else {
            presence.next_version()
        };
        Ok(PresenceSnapshot {
            version,
            entries: live,
            gone,
        })
    }

    async fn revoke(&self, entries: &[(String, i64)]) -> Result<(), Error> {
        let mut revoked = self
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, until) in entries {
            let at = revoked.entry(key.clone()).or_insert(*until);
            *at = (*at).max(*until);
        }
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, i64)>, Error> {
        let now = covibe_types::now_ms();
        let mut revoked = self
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.retain(|_, until| *until > now);
        Ok(revoked.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }
}

/// The feeds of one channel's subscribers; each has its own byte budget, so a slow one costs
/// the others nothing.
#[derive(Default)]
struct Subscribers(Mutex<Vec<Feed>>);

impl Subscribers {
    fn feeds(&self) -> std::sync::MutexGuard<'_, Vec<Feed>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(&self) -> Subscription {
        let (feed, subscription) = feed();
        self.feeds().push(feed);
        subscription
    }

    /// Queues the event for every subscriber, forgetting those that are gone.
    fn send(&self, event: &Bytes) {
        self.feeds().retain_mut(|feed| feed.push(event.clone()));
    }
}
