//! Sockets that are replaying history, and the live events buffered for them meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use covibe_socketio::Sid;
use covibe_types::TeamId;

use crate::realtime::frames::{Prepared, Resync};

/// Bytes of live events buffered for one resuming socket before it is told to resync instead.
const MAX_BUFFERED_BYTES: usize = 4 << 20;

pub(crate) struct Recovery {
    pub(crate) team: TeamId,
    pub(crate) events: Vec<Arc<Prepared>>,
    /// What `events` hold, in bytes.
    pub(crate) bytes: usize,
    /// Per agent, the first seq buffered: from there on the buffer has its output, so replay
    /// stops there.
    pub(crate) first_buffered: HashMap<String, u64>,
    /// Live events were lost while it replayed: it must resync instead of joining.
    pub(crate) missed: Option<Resync>,
}

/// Sockets that are replaying history, and the live events buffered for them.
#[derive(Default)]
pub struct Hub {
    recovering: Mutex<Recovering>,
}

#[derive(Default)]
pub(crate) struct Recovering {
    pub(crate) sockets: HashMap<Sid, Recovery>,
}

impl Recovering {
    pub(crate) fn buffer(&mut self, team: TeamId, event: &Arc<Prepared>) {
        let size = event.size();
        for recovery in self.sockets.values_mut().filter(|r| r.team == team) {
            if recovery.missed.is_some() {
                continue;
            }
            if recovery.bytes + size > MAX_BUFFERED_BYTES {
                recovery.missed = Some(Resync::SlowConsumer);
                recovery.events = Vec::new();
                continue;
            }
            if let Some((agent, seq)) = event.output_seq()
                && !recovery.first_buffered.contains_key(agent)
            {
                recovery.first_buffered.insert(agent.to_owned(), seq);
            }
            recovery.bytes += size;
            recovery.events.push(event.clone());
        }
    }

    /// Whether the live events buffered for `sid` hold `agent`'s output from `seq` on.
    pub(crate) fn buffered_from(&self, sid: Sid, agent: &str, seq: u64) -> bool {
        self.first_buffered(sid, agent)
            .is_some_and(|first| first <= seq)
    }

    /// The first seq of `agent` buffered for `sid`, if any is.
    pub(crate) fn first_buffered(&self, sid: Sid, agent: &str) -> Option<u64> {
        self.sockets
            .get(&sid)
            .and_then(|r| r.first_buffered.get(agent).copied())
    }

    /// Every resuming socket missed live events.
    pub(crate) fn missed(&mut self, why: Resync) {
        for recovery in self.sockets.values_mut() {
            recovery.missed.get_or_insert(why);
        }
    }
}

impl Hub {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Recovering> {
        self.recovering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn forget(&self, sid: Sid) {
        self.lock().sockets.remove(&sid);
    }
}
