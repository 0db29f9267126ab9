//! The outbox: output the orchestrator has not acknowledged yet, and the agent's status.
//!
//! Every chunk is in the spool before it gets here. The outbox keeps the newest unacknowledged
//! chunks in a bounded memory window; older ones were sent and evicted to make room, and are read
//! back from the spool if a reconnect must resend them. The collector waits for room
//! ([`Outbox::reserve`]) before reading more of the agent's output, which stops the pipes being
//! read and so throttles the agent: while the window is full of chunks the link has not sent, or
//! while the spool holds its limit of segments not yet acknowledged. Acks drop chunks and hand
//! back the spool segments that can be deleted. Everything lives in a `watch` channel so every
//! waiter wakes on change; each link session reads from it with its own [`Cursor`].

use std::collections::VecDeque;

use bytes::Bytes;
use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::vmagent::v1::{AgentFrame, Output, StatusChange, agent_frame::Frame};
use tokio::sync::watch;

use crate::spool::Spooled;

/// How much unacknowledged output is held in memory and on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The memory window, in chunks and in bytes.
    pub(crate) max_chunks: usize,
    pub(crate) max_bytes: usize,
    /// Spool segments not fully acknowledged.
    pub(crate) max_spool_bytes: u64,
}

/// A spool segment holding unacknowledged chunks.
#[derive(Debug)]
struct SegmentUse {
    first_seq: u64,
    bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Queue {
    limits: Limits,
    /// The newest unacknowledged chunks, in `seq` order, the last one being `next_seq - 1`.
    window: VecDeque<Output>,
    window_bytes: usize,
    /// The sequence number the next chunk gets: the count of chunks produced so far.
    next_seq: u64,
    /// Every chunk below this one is stored by the orchestrator.
    acked: u64,
    /// The current link session has sent every chunk below this one.
    sent: u64,
    /// Spool segments not fully acknowledged, oldest first; the last one is being written.
    segments: VecDeque<SegmentUse>,
    spool_bytes: u64,
    status: Option<StatusChange>,
    /// Bumped on every status change so each session sends the latest one.
    status_version: u64,
    is_final: bool,
    status_stored: bool,
    /// Output is no longer wanted (the link was refused): nothing waits.
    abandoned: bool,
    /// The collector waits for room.
    room_wanted: bool,
}

/// Where a link session is in the outbox.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    seq: u64,
    status_version: u64,
    final_sent: bool,
}

impl Cursor {
    /// The chunk `seq` was read from the spool and sent.
    pub(crate) fn sent_from_spool(&mut self, seq: u64) {
        self.seq = self.seq.max(seq + 1);
    }
}

/// What a link session sends next.
#[derive(Debug)]
pub(crate) enum Next {
    Frame(AgentFrame),
    /// The chunk with this `seq`, which is only in the spool.
    FromSpool(u64),
}

impl Queue {
    fn window_start(&self) -> u64 {
        self.next_seq - self.window.len() as u64
    }

    /// Whether `chunks` more chunks of `bytes` in all fit in the window (anything fits in an
    /// empty window).
    fn window_fits(&self, chunks: usize, bytes: usize) -> bool {
        self.window.is_empty()
            || (self.window.len() + chunks <= self.limits.max_chunks
                && self.window_bytes + bytes <= self.limits.max_bytes)
    }

    /// Makes room in the window by dropping chunks already sent, which the spool still has.
    fn evict(&mut self, chunks: usize, bytes: usize) {
        while !self.window_fits(chunks, bytes)
            && self.window.front().is_some_and(|c| c.seq < self.sent)
        {
            if let Some(chunk) = self.window.pop_front() {
                self.window_bytes -= chunk.data.len();
            }
        }
    }

    /// Whether more output must wait (call after [`Queue::evict`]).
    fn must_wait(&self, chunks: usize, bytes: usize) -> bool {
        !self.abandoned
            && (!self.window_fits(chunks, bytes) || self.spool_bytes >= self.limits.max_spool_bytes)
    }

    /// Marks every chunk below `seq` stored; returns the spool segments now fully acknowledged.
    fn drop_below(&mut self, seq: u64) -> Vec<u64> {
        self.acked = self.acked.max(seq.min(self.next_seq));
        self.sent = self.sent.max(self.acked);
        while self.window.front().is_some_and(|c| c.seq < self.acked) {
            if let Some(chunk) = self.window.pop_front() {
                self.window_bytes -= chunk.data.len();
            }
        }
        let mut discard = Vec::new();
        while self
            .segments
            .get(1)
            .is_some_and(|s| s.first_seq <= self.acked)
        {
            if let Some(segment) = self.segments.pop_front() {
                self.spool_bytes -= segment.bytes;
                discard.push(segment.first_seq);
            }
        }
        discard
    }

    /// Everything is stored: all chunks, and the final status.
    fn delivered(&self) -> bool {
        self.is_final && self.status_stored && self.acked == self.next_seq
    }

    /// What the session at `cursor` sends next, advancing it past frames returned: a newer
    /// non-final status first, then chunks in order, then the final status once every chunk
    /// has been sent. A chunk only in the spool is returned as [`Next::FromSpool`] without
    /// advancing; the caller does with [`Cursor::sent_from_spool`].
    pub(crate) fn next(&self, cursor: &mut Cursor) -> Option<Next> {
        let frame = |frame| Some(Next::Frame(AgentFrame { frame: Some(frame) }));
        if !self.is_final && cursor.status_version < self.status_version {
            cursor.status_version = self.status_version;
            return self
                .status
                .clone()
                .and_then(|status| frame(Frame::Status(status)));
        }
        cursor.seq = cursor.seq.max(self.acked);
        if cursor.seq < self.window_start() {
            return Some(Next::FromSpool(cursor.seq));
        }
        if cursor.seq < self.next_seq {
            let index = usize::try_from(cursor.seq - self.window_start()).ok()?;
            let chunk = self.window.get(index)?.clone();
            cursor.seq += 1;
            return frame(Frame::Output(chunk));
        }
        if self.is_final && !cursor.final_sent {
            cursor.final_sent = true;
            return self
                .status
                .clone()
                .and_then(|status| frame(Frame::Status(status)));
        }
        None
    }
}

/// The result of an acknowledgement.
#[derive(Debug)]
pub(crate) struct Acked {
    /// Every chunk and the final status are stored.
    pub(crate) delivered: bool,
    /// Spool segments to delete, all their chunks being stored.
    pub(crate) discard: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: watch::Sender<Queue>,
}

impl Outbox {
    pub(crate) fn new(limits: Limits) -> Self {
        let queue = Queue {
            limits,
            window: VecDeque::new(),
            window_bytes: 0,
            next_seq: 0,
            acked: 0,
            sent: 0,
            segments: VecDeque::new(),
            spool_bytes: 0,
            status: None,
            status_version: 0,
            is_final: false,
            status_stored: false,
            abandoned: false,
            room_wanted: false,
        };
        Self {
            tx: watch::Sender::new(queue),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Queue> {
        self.tx.subscribe()
    }

    /// The limits, for sizing batches so that they fit.
    pub(crate) fn limits(&self) -> Limits {
        self.tx.borrow().limits
    }

    /// Waits for room for `chunks` more chunks of `bytes` in all and returns the first one's
    /// sequence number, or `None` when output is no longer wanted.
    pub(crate) async fn reserve(&self, chunks: usize, bytes: usize) -> Option<u64> {
        let mut rx = self.tx.subscribe();
        loop {
            rx.borrow_and_update();
            let mut ready = None;
            // Eviction and the wish for room wake nobody: no waiter cares.
            self.tx.send_if_modified(|queue| {
                queue.evict(chunks, bytes);
                queue.room_wanted = queue.must_wait(chunks, bytes);
                if !queue.room_wanted {
                    ready = Some((!queue.abandoned).then_some(queue.next_seq));
                }
                false
            });
            if let Some(ready) = ready {
                return ready;
            }
            // The sender lives in `self`, so this cannot fail.
            let _ = rx.changed().await;
        }
    }

    /// Queues the chunk `seq` (the one [`Outbox::reserve`] returned, already in the spool).
    pub(crate) fn push(&self, seq: u64, stream: OutputStream, data: Bytes, spooled: Spooled) {
        self.tx.send_modify(|queue| {
            debug_assert_eq!(seq, queue.next_seq, "chunks are pushed in order");
            queue.next_seq = seq + 1;
            match queue.segments.back_mut() {
                Some(segment) if segment.first_seq == spooled.segment => {
                    segment.bytes += spooled.bytes;
                }
                _ => queue.segments.push_back(SegmentUse {
                    first_seq: spooled.segment,
                    bytes: spooled.bytes,
                }),
            }
            queue.spool_bytes += spooled.bytes;
            if !queue.abandoned {
                queue.window_bytes += data.len();
                queue.window.push_back(Output {
                    seq,
                    stream: stream.into(),
                    data,
                });
            }
        });
    }

    /// The current link session has sent every chunk below `next_seq`.
    pub(crate) fn mark_sent(&self, next_seq: u64) {
        self.tx.send_if_modified(|queue| {
            queue.sent = queue.sent.max(next_seq);
            // Only a collector waiting for room cares.
            queue.room_wanted
        });
    }

    /// Records the orchestrator's acknowledgement.
    pub(crate) fn ack(&self, next_seq: u64, status_stored: bool) -> Acked {
        let mut acked = Acked {
            delivered: false,
            discard: Vec::new(),
        };
        self.tx.send_modify(|queue| {
            if next_seq > queue.next_seq {
                tracing::warn!(
                    next_seq,
                    produced = queue.next_seq,
                    "ack beyond the produced output"
                );
            }
            acked.discard = queue.drop_below(next_seq);
            // Only the final status is ever reported as stored.
            queue.status_stored |= status_stored && queue.is_final;
            acked.delivered = queue.delivered();
        });
        acked
    }

    /// Applies a `Welcome` at the start of a session: drops what the orchestrator already has
    /// and returns the cursor to send from (the latest status is re-sent first) and the spool
    /// segments to delete.
    pub(crate) fn resume(&self, resume_from_seq: u64) -> (Cursor, Vec<u64>) {
        let mut cursor = Cursor::default();
        let mut discard = Vec::new();
        self.tx.send_modify(|queue| {
            if resume_from_seq < queue.acked {
                tracing::error!(
                    resume_from_seq,
                    acked = queue.acked,
                    "orchestrator asks for output it already acknowledged, it will have a gap"
                );
            } else if resume_from_seq > queue.next_seq {
                tracing::warn!(
                    resume_from_seq,
                    produced = queue.next_seq,
                    "resume beyond the produced output"
                );
            }
            discard = queue.drop_below(resume_from_seq);
            // The new session has sent nothing yet.
            queue.sent = queue.acked;
            cursor.seq = queue.acked;
        });
        (cursor, discard)
    }

    /// Sets the agent's (non-final) status, sent at once and again on every reconnect.
    pub(crate) fn set_status(&self, status: AgentStatus) {
        self.tx.send_modify(|queue| {
            queue.status = Some(StatusChange {
                status: status.into(),
                ..StatusChange::default()
            });
            queue.status_version += 1;
        });
    }

    /// Sets the final status, sent after every chunk; no chunk may be pushed afterwards.
    pub(crate) fn finish(&self, mut status: StatusChange) {
        self.tx.send_modify(|queue| {
            status.final_seq = queue.next_seq;
            queue.status = Some(status);
            queue.status_version += 1;
            queue.is_final = true;
        });
    }

    /// Stops holding output: the link was refused and nobody will ever acknowledge it.
    pub(crate) fn abandon(&self) {
        self.tx.send_modify(|queue| {
            queue.abandoned = true;
            queue.window.clear();
            queue.window_bytes = 0;
        });
    }

    /// The orchestrator's last `next_seq`, for `Hello.acked_seq`.
    pub(crate) fn acked(&self) -> u64 {
        self.tx.borrow().acked
    }

    /// Whether more output waits for the link to send or the orchestrator to acknowledge.
    pub(crate) fn is_full(&self) -> bool {
        let queue = self.tx.borrow();
        queue.room_wanted && !queue.abandoned
    }

    pub(crate) fn progress(&self) -> Progress {
        let queue = self.tx.borrow();
        Progress {
            produced: queue.next_seq,
            acked: queue.acked,
            held_bytes: queue.window_bytes,
            spool_bytes: queue.spool_bytes,
            status_stored: queue.status_stored,
        }
    }
}

/// Produced and acknowledged chunk counts, bytes held in memory and in the spool, and whether
/// the final status is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    pub(crate) produced: u64,
    pub(crate) acked: u64,
    pub(crate) held_bytes: usize,
    pub(crate) spool_bytes: u64,
    pub(crate) status_stored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(outbox: &Outbox, cursor: &mut Cursor) -> Vec<String> {
        let queue = outbox.subscribe();
        let queue = queue.borrow();
        let mut described = Vec::new();
        while let Some(next) = queue.next(cursor) {
            described.push(match next {
                Next::FromSpool(seq) => {
                    cursor.sent_from_spool(seq);
                    format!("spool {seq}")
                }
                Next::Frame(frame) => match frame.frame {
                    Some(Frame::Output(o)) => format!("out {}", o.seq),
                    Some(Frame::Status(s)) => format!("status {} final {}", s.status, s.final_seq),
                    other => format!("{other:?}"),
                },
            });
        }
        described
    }

    /// Reserves and pushes one 10-byte chunk going to the spool segment `segment`.
    async fn push(outbox: &Outbox, segment: u64) -> u64 {
        let seq = outbox.reserve(1, 10).await.unwrap_or(u64::MAX);
        let spooled = Spooled { segment, bytes: 23 };
        outbox.push(seq, OutputStream::Stdout, Bytes::from(vec![0; 10]), spooled);
        seq
    }

    fn waiting_push(outbox: &Outbox, segment: u64) -> tokio::task::JoinHandle<u64> {
        let outbox = outbox.clone();
        tokio::spawn(async move { push(&outbox, segment).await })
    }

    #[tokio::test]
    async fn window_evicts_sent_chunks_to_the_spool_and_acks_free_segments() {
        let outbox = Outbox::new(Limits {
            max_chunks: 2,
            max_bytes: 1024,
            max_spool_bytes: 100,
        });
        outbox.set_status(AgentStatus::Running);
        assert_eq!((push(&outbox, 0).await, push(&outbox, 0).await), (0, 1));

        // The window is full of unsent chunks: the next chunk waits for the link.
        let pushing = waiting_push(&outbox, 2);
        tokio::task::yield_now().await;
        assert!(!pushing.is_finished() && outbox.is_full());
        let (mut cursor, discard) = outbox.resume(0);
        assert!(discard.is_empty());
        let running = AgentStatus::Running as i32;
        assert_eq!(
            describe(&outbox, &mut cursor),
            [
                format!("status {running} final 0"),
                "out 0".into(),
                "out 1".into()
            ]
        );
        outbox.mark_sent(1);
        assert_eq!(pushing.await.ok(), Some(2));
        outbox.mark_sent(2);
        assert_eq!(push(&outbox, 2).await, 3);
        outbox.mark_sent(3);
        assert_eq!(push(&outbox, 4).await, 4);
        // All sent, so the window has room, but 5 chunks of 23 bytes passed the spool's 100.
        outbox.mark_sent(5);
        let pushing = waiting_push(&outbox, 4);
        tokio::task::yield_now().await;
        assert!(!pushing.is_finished() && outbox.is_full());

        // A reconnect resends the evicted chunks from the spool, the rest from memory.
        let (mut cursor, _) = outbox.resume(1);
        assert_eq!(
            describe(&outbox, &mut cursor)[1..],
            ["spool 1", "spool 2", "spool 3", "out 4"]
        );
        // Acking past a segment frees it, and its bytes, for the waiting chunk.
        let Acked { delivered, discard } = outbox.ack(2, false);
        assert_eq!((delivered, discard), (false, vec![0]));
        assert_eq!(pushing.await.ok(), Some(5));
        let progress = outbox.progress();
        assert_eq!(
            (progress.produced, progress.acked, progress.spool_bytes),
            (6, 2, 4 * 23)
        );

        outbox.finish(StatusChange {
            status: AgentStatus::Completed.into(),
            ..Default::default()
        });
        let completed = AgentStatus::Completed as i32;
        assert_eq!(
            describe(&outbox, &mut cursor),
            ["out 5".to_owned(), format!("status {completed} final 6")]
        );
        let acked = [outbox.ack(6, false), outbox.ack(6, true)];
        let acked = acked.map(|Acked { delivered, discard }| (delivered, discard));
        assert_eq!(acked, [(false, vec![2]), (true, vec![])]);
        assert_eq!(outbox.progress().held_bytes, 0);
    }
}
