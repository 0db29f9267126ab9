//! A subscriber's queue, bounded in bytes. The side that feeds it never waits: a subscriber that
//! falls behind by more than its budget loses the events past it, so a slow reader costs a
//! bounded amount of memory and never slows the publishers. The loss is marked with a `Gap` where
//! it begins and another where events flow again: whatever the subscriber started between the
//! two (a client's resume, say) knows it missed something too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::FanoutEvent;

/// Bytes of events a subscriber may have waiting before it is told it has a gap.
pub(crate) const SUBSCRIBER_BUDGET: usize = 8 << 20;

/// What each queued event counts for beyond its bytes, so empty events are bounded too.
const EVENT_OVERHEAD: usize = 64;

fn weight(event: &Bytes) -> usize {
    event.len() + EVENT_OVERHEAD
}

/// The feeding side of a [`Subscription`].
pub(crate) struct Feed {
    tx: mpsc::UnboundedSender<FanoutEvent>,
    queued: Arc<AtomicUsize>,
    budget: usize,
    /// Events are being dropped: nothing more is queued until the subscriber is down to half
    /// its budget, so an overloaded reader gets two gaps per episode, not one per event.
    gapped: bool,
}

/// Every team's fan-out events (or the control commands), in publication order per publisher.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<FanoutEvent>,
    queued: Arc<AtomicUsize>,
}

/// A connected feed and subscription.
pub(crate) fn feed() -> (Feed, Subscription) {
    feed_with_budget(SUBSCRIBER_BUDGET)
}

pub(crate) fn feed_with_budget(budget: usize) -> (Feed, Subscription) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let feed = Feed {
        tx,
        queued: queued.clone(),
        budget,
        gapped: false,
    };
    (feed, Subscription { rx, queued })
}

impl Feed {
    /// Queues an event, or drops it if the subscriber is too far behind. `false` once the
    /// subscriber is gone.
    pub(crate) fn push(&mut self, event: Bytes) -> bool {
        let cost = weight(&event);
        let queued = self.queued.load(Ordering::Acquire);
        let room = if self.gapped {
            queued <= self.budget / 2
        } else {
            queued + cost <= self.budget
        };
        if !room {
            if !self.gapped {
                self.gapped = true;
                tracing::warn!(
                    queued,
                    budget = self.budget,
                    "subscriber fell behind; events dropped"
                );
                return self.gap();
            }
            return !self.tx.is_closed();
        }
        if self.gapped {
            self.gapped = false;
            if !self.gap() {
                return false;
            }
        }
        self.queued.fetch_add(cost, Ordering::AcqRel);
        self.tx.send(FanoutEvent::Message(event)).is_ok()
    }

    /// Tells the subscriber that events were missed. `false` once the subscriber is gone.
    pub(crate) fn gap(&mut self) -> bool {
        self.tx.send(FanoutEvent::Gap).is_ok()
    }

    /// Resolves once the subscriber is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl Subscription {
    /// The next event; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<FanoutEvent> {
        let event = self.rx.recv().await?;
        Some(self.taken(event))
    }

    /// The next event if one is there now.
    pub fn try_recv(&mut self) -> Option<FanoutEvent> {
        let event = self.rx.try_recv().ok()?;
        Some(self.taken(event))
    }

    /// An event left the queue: what it weighed is no longer queued.
    fn taken(&self, event: FanoutEvent) -> FanoutEvent {
        if let FanoutEvent::Message(bytes) = &event {
            self.queued.fetch_sub(weight(bytes), Ordering::AcqRel);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_past_its_budget_gets_a_gap_where_the_loss_begins_and_ends() {
        let (mut feed, mut sub) = feed_with_budget(4 * (100 + EVENT_OVERHEAD));
        let event = Bytes::from(vec![7u8; 100]);
        for _ in 0..10 {
            assert!(feed.push(event.clone()));
        }
        for _ in 0..4 {
            assert_eq!(sub.recv().await, Some(FanoutEvent::Message(event.clone())));
        }
        assert_eq!(
            sub.recv().await,
            Some(FanoutEvent::Gap),
            "one gap for the six dropped"
        );
        // Empty again: events flow, after a second gap.
        assert!(feed.push(Bytes::from_static(b"next")));
        assert_eq!(sub.recv().await, Some(FanoutEvent::Gap));
        assert_eq!(
            sub.recv().await,
            Some(FanoutEvent::Message(Bytes::from_static(b"next")))
        );
        drop(sub);
        assert!(!feed.push(event));
        feed.closed().await;
    }
}
