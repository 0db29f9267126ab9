//! A keyed token bucket: one bucket per key (an address, a member), refilled continuously.
//!
//! Memory stays bounded: a bucket that has refilled to its burst is the same as no bucket, so
//! idle keys are dropped by a periodic sweep, and the table never holds more than `max_keys`.
//! When it is full of busy keys, a new key is let through untracked (and logged): an attacker
//! with that many addresses defeats per-address limits anyway, and failing closed would lock
//! out people who did nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often idle buckets are swept out, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How often a full table is swept, at most.
const PRESSURE_SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens a bucket holds: the requests allowed at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_sec` tokens a second (a fraction is fine: `1.0 / 60.0` is one a minute), at most
    /// `burst` at once. Nonsense values become the tightest sensible ones.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        Self {
            per_sec: if per_sec.is_finite() && per_sec > 0.0 {
                per_sec
            } else {
                1e-6
            },
            burst: f64::from(burst.max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_sec).min(rate.burst)
    }
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    last_sweep: Instant,
}

#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: Rate,
    max_keys: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(table.last_sweep) >= SWEEP_EVERY {
            sweep(&mut table, rate, now);
        }
        let tokens = match table.buckets.get(&key) {
            Some(bucket) => bucket.refilled(rate, now),
            None if table.buckets.len() < self.max_keys => rate.burst,
            None => {
                // Full: drop the idle keys, sweeping at most once a second so a flood of new
                // keys cannot make every request walk the whole table.
                if now.saturating_duration_since(table.last_sweep) < PRESSURE_SWEEP_EVERY {
                    return Ok(());
                }
                sweep(&mut table, rate, now);
                if table.buckets.len() >= self.max_keys {
                    tracing::warn!(
                        keys = table.buckets.len(),
                        "rate limiter table is full of busy keys; new keys pass untracked"
                    );
                    return Ok(());
                }
                rate.burst
            }
        };
        if tokens >= 1.0 {
            table.buckets.insert(
                key,
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
            Ok(())
        } else {
            table.buckets.insert(key, Bucket { tokens, at: now });
            Err(Duration::try_from_secs_f64((1.0 - tokens) / rate.per_sec).unwrap_or(Duration::MAX))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}

/// Drops every bucket that has refilled to its burst: forgetting it changes nothing.
fn sweep<K>(table: &mut Table<K>, rate: Rate, now: Instant) {
    table
        .buckets
        .retain(|_, bucket| bucket.refilled(rate, now) < rate.burst);
    table.last_sweep = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_then_retry_after() {
        let limiter = KeyedBuckets::new(Rate::new(2.0, 3), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(1, t0).is_ok());
        }
        let wait = limiter.check(1, t0).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(500),
            "one token refills in 1/rate"
        );
        assert!(limiter.check(2, t0).is_ok(), "keys are independent");
        assert!(limiter.check(1, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check(1, t0 + Duration::from_millis(500)).is_err());
        let per_min = KeyedBuckets::new(Rate::new(0.1, 1), 10);
        assert!(per_min.check(1, t0).is_ok());
        assert_eq!(per_min.check(1, t0).unwrap_err(), Duration::from_secs(10));
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_are_evicted() {
        let limiter = KeyedBuckets::new(Rate::new(1.0, 2), 3);
        let t0 = Instant::now();
        for key in 0..3 {
            assert!(limiter.check(key, t0).is_ok());
        }
        // Full of busy keys: a new key is let through but not tracked.
        assert!(limiter.check(99, t0).is_ok());
        assert!(limiter.check(99, t0).is_ok());
        assert_eq!(limiter.len(), 3);
        // A second later every bucket has refilled: the sweep frees room for the new key.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.check(99, t1).is_ok());
        assert_eq!(limiter.len(), 1);
        // The periodic sweep drops idle keys without any pressure.
        let t2 = t1 + SWEEP_EVERY;
        assert!(limiter.check(7, t2).is_ok());
        assert_eq!(limiter.len(), 1, "only the key just used is left");
    }
}
