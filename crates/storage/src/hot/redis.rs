//! The Redis hot store: a sorted set per agent (score = seq) trimmed to a number of chunks and
//! of bytes (kept beside it) with a TTL,
//! one pub/sub channel for every team's events (each gateway relays every team, and one channel
//! lets a batch of events travel as one message: length-prefixed frames), and a hash per
//! team for presence (field = `{member}/{holder}`, value = `{expiry ms}:{entry}`; scripts stamp
//! and check expiries with the Redis server's clock, so every process agrees on them).

use bytes::{BufMut, Bytes, BytesMut};
use covibe_types::{AgentId, TeamId, UserId};
use fred::prelude::*;
use fred::types::sorted_sets::ZRange;
use tokio::sync::broadcast::error::RecvError;

use super::feed::feed;
use super::{HotChunk, HotStore, PresenceEntry, PresenceSnapshot, PresenceWrite, Subscription};
use crate::Error;

pub struct RedisHotStore {
    client: Client,
    config: Config,
    prefix: String,
    capacity: usize,
    max_bytes: usize,
    ttl_secs: i64,
}

/// Chunks `range` asks for in one command, at least; and the most commands one `range` sends.
const RANGE_PART: u64 = 256;
const RANGE_PARTS_MAX: u64 = 32;

/// A seq as a sorted-set score bound.
fn score(seq: u64) -> ZRange {
    ZRange::from(i64::try_from(seq).unwrap_or(i64::MAX))
}

/// Adds chunks to a ring (KEYS[1]) and trims it, oldest first, to ARGV[1] chunks and ARGV[2]
/// bytes (always keeping one), its byte count kept in KEYS[2]; both live ARGV[3] seconds from
/// now. ARGV[4..] = score, member pairs. A ring without a count (written by an older version)
/// is counted first.
const APPEND_RING: &str = r"
local capacity, max_bytes, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bytes = tonumber(redis.call('GET', KEYS[2]) or '0')
if bytes == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    bytes = bytes + #member
  end
end
for i = 4, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1]) == 1 then
    bytes = bytes + #ARGV[i + 1]
  end
end
local held = redis.call('ZCARD', KEYS[1])
while held > 1 and (held > capacity or bytes > max_bytes) do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  bytes = bytes - #oldest[1]
  held = held - 1
end
redis.call('SET', KEYS[2], bytes, 'EX', ttl)
redis.call('EXPIRE', KEYS[1], ttl)
return held
";

fn reconnect_policy() -> ReconnectPolicy {
    // Retry forever, 100 ms doubling up to 2 s.
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

impl RedisHotStore {
    /// Connects to `url`. Keys and channels start with `prefix` (so test runs never collide);
    /// each agent's ring keeps `capacity` chunks and [`super::RING_MAX_BYTES`] (always its
    /// newest chunk) for `ttl_secs` after its last write.
    pub async fn connect(
        url: &str,
        prefix: &str,
        capacity: usize,
        ttl_secs: i64,
    ) -> Result<Self, Error> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config.clone())
            .with_connection_config(|c| {
                c.connection_timeout = std::time::Duration::from_secs(5);
                c.tcp.nodelay = Some(true);
            })
            // A command never waits long for a Redis that is down: callers fall back to the
            // database, which holds everything.
            .with_performance_config(|c| {
                c.default_command_timeout = std::time::Duration::from_secs(2);
            })
            .set_policy(reconnect_policy())
            .build()?;
        client.init().await?;
        Ok(Self {
            client,
            config,
            prefix: prefix.to_owned(),
            capacity: capacity.max(1),
            max_bytes: super::RING_MAX_BYTES,
            ttl_secs: ttl_secs.max(1),
        })
    }

    /// Keeps at most `max_bytes` of output per agent (and always its newest chunk).
    #[must_use]
    pub fn with_ring_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn ring_key(&self, agent: AgentId) -> String {
        format!("{}out:{agent}", self.prefix)
    }

    fn revoked_key(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    fn fanout_channel(&self) -> String {
        format!("{}fanout", self.prefix)
    }

    fn ring_bytes_key(&self, agent: AgentId) -> String {
        format!("{}out:{agent}:bytes", self.prefix)
    }

    /// Adds chunks to one agent's ring (concurrent calls share round trips: the client
    /// pipelines them).
    async fn append_one(&self, agent: AgentId, chunks: &[HotChunk]) -> Result<(), Error> {
        if chunks.is_empty() {
            return Ok(());
        }
        let number = |n: usize| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let mut args = Vec::with_capacity(3 + 2 * chunks.len());
        args.extend([
            number(self.capacity),
            number(self.max_bytes),
            Value::Integer(self.ttl_secs),
        ]);
        for chunk in chunks {
            args.push(Value::Integer(i64::try_from(chunk.seq).unwrap_or(i64::MAX)));
            args.push(Value::Bytes(encode(chunk)));
        }
        let keys = vec![self.ring_key(agent), self.ring_bytes_key(agent)];
        let _: Value = self.client.eval(APPEND_RING, keys, args).await?;
        Ok(())
    }

    fn presence_key(&self, team: TeamId) -> String {
        format!("{}presence:{team}", self.prefix)
    }
}

/// The start of both presence scripts: prunes the team's presence hash (KEYS[1]) of expired
/// entries, noting them in `gone`, and puts the live ones in `live` (field => entry). Field
/// `~v` (never a member's) holds the last snapshot version; the others are `{user}/{holder}`.
/// `bump` takes the next version; `reply` answers `[version, live count, live field, entry...,
/// gone field, entry...]`.
macro_rules! presence_prune {
    () => {
        r"
local function collect(now, live, gone)
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local field = all[i]
    if field ~= '~v' then
      local value = all[i + 1]
      local sep = string.find(value, ':', 1, true)
      local expires = sep and tonumber(string.sub(value, 1, sep - 1))
      if expires and expires > now then
        live[field] = string.sub(value, sep + 1)
      else
        redis.call('HDEL', KEYS[1], field)
        if sep then
          gone[#gone + 1] = field
          gone[#gone + 1] = string.sub(value, sep + 1)
        end
      end
    end
  end
end
local function bump(now_us)
  local last = tonumber(redis.call('HGET', KEYS[1], '~v') or '0') or 0
  local version = string.format('%.0f', math.max(now_us, last + 1))
  redis.call('HSET', KEYS[1], '~v', version)
  return version
end
local function reply(version, live, gone)
  local out = {version, '0'}
  local n = 0
  for field, value in pairs(live) do
    out[#out + 1] = field
    out[#out + 1] = value
    n = n + 1
  end
  out[2] = tostring(n)
  for i = 1, #gone do
    out[#out + 1] = gone[i]
  end
  return out
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local live, gone = {}, {}
collect(now, live, gone)
"
    };
}

/// ARGV = field, entry, ttl ms, field to remove (empty for none), grace ms. Stores the entry
/// stamped with its expiry, removes the other, keeps the hash alive a grace past its
/// longest-lived entry (so the next call still finds, and reports, the entries that expired)
/// and answers the new version, the live entries and what went: one atomic step, so the
/// snapshot holds exactly the changes up to its version.
const SET_PRESENCE: &str = concat!(
    presence_prune!(),
    r"
local ttl = tonumber(ARGV[3])
if live[ARGV[1]] then
  gone[#gone + 1] = ARGV[1]
  gone[#gone + 1] = live[ARGV[1]]
end
live[ARGV[1]] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + ttl) .. ':' .. ARGV[2])
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[1] and live[ARGV[4]] then
  gone[#gone + 1] = ARGV[4]
  gone[#gone + 1] = live[ARGV[4]]
  live[ARGV[4]] = nil
  redis.call('HDEL', KEYS[1], ARGV[4])
end
local version = bump(now_us)
local keep = ttl + tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return reply(version, live, gone)
"
);

/// Answers the live entries and what expired (deleted, and versioned, if anything did).
const READ_PRESENCE: &str = concat!(
    presence_prune!(),
    r"
local version = '0'
if #gone > 0 then
  version = bump(now_us)
end
return reply(version, live, gone)
"
);

/// How long a team's presence hash outlives its longest-lived entry: the call that comes
/// within it reports the expired entries, as the in-process store's would.
const PRESENCE_GRACE_MS: i64 = 60_000;

/// A presence hash field: the member and the holder.
fn presence_field(user: UserId, holder: &str) -> String {
    format!("{user}/{holder}")
}

/// Reads a presence script's answer (see [`presence_prune`]). Fields that name no member
/// (written by an older version) are skipped.
fn presence_snapshot(reply: Vec<Bytes>) -> Result<PresenceSnapshot, Error> {
    let malformed = || Error::Other("malformed presence script answer".to_owned());
    let number =
        |raw: Option<&Bytes>| -> Option<u64> { std::str::from_utf8(raw?).ok()?.parse().ok() };
    let version = number(reply.first()).ok_or_else(malformed)?;
    let live =
        usize::try_from(number(reply.get(1)).ok_or_else(malformed)?).map_err(|_| malformed())?;
    let rest = reply.get(2..).unwrap_or_default();
    if rest.len() % 2 != 0 || rest.len() / 2 < live {
        return Err(malformed());
    }
    let entry = |pair: &[Bytes]| -> Option<PresenceEntry> {
        let (user, holder) = std::str::from_utf8(&pair[0]).ok()?.split_once('/')?;
        Some(PresenceEntry {
            user: user.parse().ok()?,
            holder: holder.to_owned(),
            value: pair[1].clone(),
        })
    };
    let (live, gone) = rest.split_at(live * 2);
    let entries = live.chunks_exact(2).filter_map(entry).collect();
    let gone = gone.chunks_exact(2).filter_map(entry).collect();
    Ok(PresenceSnapshot {
        version,
        entries,
        gone,
    })
}

/// The stream byte's flag saying a length-prefixed event comes before the data (the streams
/// are 1 and 2: the high bit is free, and chunks written without it still decode).
const WITH_EVENT: u8 = 0x80;

fn encode(chunk: &HotChunk) -> Bytes {
    let mut buf = BytesMut::with_capacity(13 + chunk.event.len() + chunk.data.len());
    buf.put_u64(chunk.seq);
    let stream = u8::try_from(chunk.stream).unwrap_or(0) & !WITH_EVENT;
    match u32::try_from(chunk.event.len()) {
        Ok(len) if len > 0 => {
            buf.put_u8(stream | WITH_EVENT);
            buf.put_u32(len);
            buf.put_slice(&chunk.event);
        }
        _ => buf.put_u8(stream),
    }
    buf.put_slice(&chunk.data);
    buf.freeze()
}

fn decode(mut raw: Bytes) -> Option<HotChunk> {
    if raw.len() < 9 {
        return None;
    }
    let head = raw.split_to(9);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[..8]);
    let mut event = Bytes::new();
    if head[8] & WITH_EVENT != 0 {
        if raw.len() < 4 {
            return None;
        }
        let len = raw.split_to(4);
        let len = usize::try_from(u32::from_be_bytes([len[0], len[1], len[2], len[3]])).ok()?;
        if raw.len() < len {
            return None;
        }
        event = raw.split_to(len);
    }
    Some(HotChunk {
        seq: u64::from_be_bytes(seq),
        stream: i32::from(head[8] & !WITH_EVENT),
        data: raw,
        event,
    })
}

#[async_trait::async_trait]
impl HotStore for RedisHotStore {
    async fn append(&self, agent: AgentId, chunks: &[HotChunk]) -> Result<(), Error> {
        self.append_one(agent, chunks).await
    }

    async fn append_many(&self, batches: &[(AgentId, Vec<HotChunk>)]) -> Result<(), Error> {
        let appends = batches
            .iter()
            .map(|(agent, chunks)| self.append_one(*agent, chunks));
        futures::future::try_join_all(appends).await?;
        Ok(())
    }

    async fn range(&self, agent: AgentId, from: u64, limit: usize) -> Result<Vec<HotChunk>, Error> {
        // Read as several smaller replies at once: one reply of thousands of chunks costs Redis
        // and the client more than its parts together.
        let end = super::range_end(from, limit);
        let len = end - from;
        let part = RANGE_PART.max(len.div_ceil(RANGE_PARTS_MAX));
        let key = self.ring_key(agent);
        let reads = (0..len.div_ceil(part)).map(|i| {
            let lo = from.saturating_add(i.saturating_mul(part));
            let hi = lo.saturating_add(part).min(end) - 1;
            self.client.zrangebyscore::<Vec<Bytes>, _, _, _>(
                &key,
                score(lo),
                score(hi),
                false,
                None,
            )
        });
        let parts = futures::future::try_join_all(reads).await?;
        Ok(parts.into_iter().flatten().filter_map(decode).collect())
    }

    async fn publish(&self, team: TeamId, event: Bytes) -> Result<(), Error> {
        self.publish_many(&[(team, event)]).await
    }

    async fn publish_many(&self, events: &[(TeamId, Bytes)]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let size = events.iter().map(|(_, e)| 4 + e.len()).sum();
        let mut message = BytesMut::with_capacity(size);
        for (_, event) in events {
            let len = u32::try_from(event.len())
                .map_err(|_| Error::Other("fan-out event over 4 GiB".to_owned()))?;
            message.put_u32(len);
            message.put_slice(event);
        }
        let _: i64 = self
            .client
            .publish(self.fanout_channel(), message.freeze())
            .await?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription, Error> {
        self.listen(self.fanout_channel(), true).await
    }

    async fn publish_control(&self, command: Bytes) -> Result<(), Error> {
        let _: i64 = self
            .client
            .publish(format!("{}control", self.prefix), command)
            .await?;
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<Subscription, Error> {
        self.listen(format!("{}control", self.prefix), false).await
    }

    async fn set_presence(
        &self,
        team: TeamId,
        write: PresenceWrite,
    ) -> Result<PresenceSnapshot, Error> {
        let ttl_ms = i64::try_from(write.ttl.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let remove = write
            .remove
            .map(|holder| presence_field(write.user, &holder))
            .unwrap_or_default();
        let args: Vec<Value> = vec![
            Value::from(presence_field(write.user, &write.holder)),
            Value::Bytes(write.value),
            Value::Integer(ttl_ms),
            Value::from(remove),
            Value::Integer(PRESENCE_GRACE_MS),
        ];
        let reply: Vec<Bytes> = self
            .client
            .eval(SET_PRESENCE, self.presence_key(team), args)
            .await?;
        presence_snapshot(reply)
    }

    async fn presence(&self, team: TeamId) -> Result<PresenceSnapshot, Error> {
        let reply: Vec<Bytes> = self
            .client
            .eval(READ_PRESENCE, self.presence_key(team), Vec::<Value>::new())
            .await?;
        presence_snapshot(reply)
    }

    async fn revoke(&self, entries: &[(String, i64)]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        // Scores are doubles: "for good" (i64::MAX) stays far in the future all the same.
        #[allow(clippy::cast_precision_loss)]
        let values: Vec<(f64, String)> = entries
            .iter()
            .map(|(key, until)| (*until as f64, key.clone()))
            .collect();
        let _: i64 = self
            .client
            .zadd(
                self.revoked_key(),
                None,
                Some(fred::types::sorted_sets::Ordering::GreaterThan),
                false,
                false,
                values,
            )
            .await?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, i64)>, Error> {
        let key = self.revoked_key();
        #[allow(clippy::cast_precision_loss)]
        let now = covibe_types::now_ms() as f64;
        let _: i64 = self
            .client
            .zremrangebyscore(&key, f64::NEG_INFINITY, now)
            .await?;
        let entries: Vec<(String, f64)> = self
            .client
            .zrange(&key, 0, -1, None, false, None, true)
            .await?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(entries
            .into_iter()
            .map(|(key, until)| (key, until as i64))
            .collect())
    }
}

/// fred's broadcast capacity per subscriber: messages wait there only until our task moves
/// them to the subscription's feed, which never waits (its bound is in bytes).
const FRED_QUEUE: usize = 2_048;

/// Splits a fan-out message into its length-prefixed events; `None` if it is malformed.
fn frames(mut message: Bytes) -> Option<Vec<Bytes>> {
    let mut events = Vec::new();
    while !message.is_empty() {
        if message.len() < 4 {
            return None;
        }
        let head = message.split_to(4);
        let len = usize::try_from(u32::from_be_bytes([head[0], head[1], head[2], head[3]])).ok()?;
        if message.len() < len {
            return None;
        }
        events.push(message.split_to(len));
    }
    Some(events)
}

impl RedisHotStore {
    /// A dedicated subscriber connection feeding a subscription; it re-subscribes after a
    /// reconnect and reports the outage as a `Gap` (pub/sub messages sent meanwhile are gone).
    /// A `framed` channel carries length-prefixed batches of events, handed on one by one.
    async fn listen(&self, channel: String, framed: bool) -> Result<Subscription, Error> {
        let subscriber = Builder::from_config(self.config.clone())
            .with_connection_config(|c| c.tcp.nodelay = Some(true))
            .set_policy(reconnect_policy())
            // fred hands messages over a broadcast channel (32 by default, sized up front):
            // ours is drained at once into the feed, so a modest one rides out a busy moment.
            .with_performance_config(|c| c.broadcast_channel_capacity = FRED_QUEUE)
            .build_subscriber_client()?;
        subscriber.init().await?;
        let resubscribe = subscriber.manage_subscriptions();
        subscriber.subscribe(channel).await?;
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        let (mut feed, subscription) = feed();
        tokio::spawn(async move {
            // The subscriber lives as long as this task.
            let _subscriber = subscriber;
            let _resubscribe = resubscribe;
            loop {
                let open = tokio::select! {
                    message = messages.recv() => match message {
                        Ok(message) => {
                            let Some(bytes) = message.value.as_bytes() else { continue };
                            let bytes = Bytes::copy_from_slice(bytes);
                            if !framed {
                                feed.push(bytes)
                            } else if let Some(events) = frames(bytes) {
                                events.into_iter().all(|event| feed.push(event))
                            } else {
                                tracing::warn!("malformed fan-out message dropped");
                                feed.gap()
                            }
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "redis subscriber lagged");
                            feed.gap()
                        }
                        Err(RecvError::Closed) => return,
                    },
                    reconnect = reconnects.recv() => match reconnect {
                        Ok(_) => {
                            tracing::warn!("redis subscriber reconnected; messages may have been missed");
                            feed.gap()
                        }
                        Err(RecvError::Lagged(_)) => feed.gap(),
                        Err(RecvError::Closed) => return,
                    },
                    () = feed.closed() => return,
                };
                if !open {
                    return;
                }
            }
        });
        Ok(subscription)
    }
}
