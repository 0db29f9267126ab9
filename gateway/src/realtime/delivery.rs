//! What each socket has been sent: per agent, the last output seq, so that a chunk is sent at
//! most once whichever path (replay, buffer, live) it comes by, and never past a hole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use covibe_types::AgentId;

/// Whether an output chunk is the one a socket needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// It is (or the first the socket gets of that agent): recorded as sent.
    Next,
    /// Sent already, by another path: never twice.
    Seen,
    /// Chunks before it never reached this socket (they were lost on the way): sending it would
    /// show the client a hole, so the socket must resync from history instead.
    Gap,
}

/// Per agent, the last seq sent (agent ids are ours, so a fast hash is fine). Shared by the
/// clones of one socket's record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deliveries(Arc<Mutex<HashMap<AgentId, u64, foldhash::fast::RandomState>>>);

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, HashMap<AgentId, u64, foldhash::fast::RandomState>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `seq` of `agent` as sent if it is the next one this socket needs.
    pub(crate) fn first(&self, agent: AgentId, seq: u64) -> Delivery {
        let mut delivered = self.lock();
        match delivered.get_mut(&agent) {
            Some(last) if seq <= *last => Delivery::Seen,
            Some(last) if seq > *last + 1 => Delivery::Gap,
            Some(last) => {
                *last = seq;
                Delivery::Next
            }
            None => {
                delivered.insert(agent, seq);
                Delivery::Next
            }
        }
    }

    /// What the client says it has of `agent` is the truth from here on (`None`: nothing).
    pub(crate) fn reset(&self, agent: AgentId, last: Option<u64>) {
        let mut delivered = self.lock();
        match last {
            Some(last) => {
                delivered.insert(agent, last);
            }
            None => {
                delivered.remove(&agent);
            }
        }
    }

    /// Forgets a delivery that did not happen after all (the socket's queue was full).
    pub(crate) fn undo(&self, agent: AgentId, seq: u64) {
        let mut delivered = self.lock();
        if let Some(last) = delivered.get_mut(&agent)
            && *last == seq
        {
            *last = seq.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_each_chunk_once_and_never_past_a_hole() {
        let socket = Deliveries::default();
        let (a, b) = (AgentId::new(), AgentId::new());
        // The first chunk of an agent a socket sees may be any (it joined mid-stream).
        assert_eq!(socket.first(a, 7), Delivery::Next);
        assert_eq!(socket.first(a, 8), Delivery::Next);
        assert_eq!(socket.first(a, 8), Delivery::Seen);
        assert_eq!(socket.first(a, 3), Delivery::Seen);
        // 9 was lost on the way: 10 is not sent (the socket resyncs from history instead).
        assert_eq!(socket.first(a, 10), Delivery::Gap);
        assert_eq!(socket.first(a, 9), Delivery::Next);
        assert_eq!(socket.first(a, 10), Delivery::Next);
        // A queue-full undo makes the chunk due again.
        socket.undo(a, 10);
        assert_eq!(socket.first(a, 10), Delivery::Next);
        // What a resuming client says it has is the truth from there on.
        socket.reset(a, Some(4));
        assert_eq!(socket.first(a, 6), Delivery::Gap);
        assert_eq!(socket.first(a, 5), Delivery::Next);
        socket.reset(a, None);
        assert_eq!(socket.first(a, 42), Delivery::Next);
        assert_eq!(socket.first(b, 0), Delivery::Next);
    }
}
