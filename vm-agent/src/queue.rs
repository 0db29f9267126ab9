//! The outbox: output chunks the orchestrator has not acknowledged yet, and the agent's status.
//!
//! One collector pushes chunks (waiting while the queue is full, which stops the pipes being read
//! and so throttles the agent); each link session reads from it with its own [`Cursor`]; acks drop
//! chunks from the front. Everything lives in a `watch` channel so every waiter wakes on change.

use std::collections::VecDeque;

use bytes::Bytes;
use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::vmagent::v1::{AgentFrame, Output, StatusChange, agent_frame::Frame};
use tokio::sync::watch;

/// How much unacknowledged output is held before the agent's pipes stop being read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_chunks: usize,
    pub(crate) max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chunks: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    limits: Limits,
    /// Unacknowledged chunks, in `seq` order, the first one being `acked`.
    chunks: VecDeque<Output>,
    bytes: usize,
    /// The sequence number the next chunk gets: the count of chunks produced so far.
    next_seq: u64,
    /// Every chunk below this one is stored by the orchestrator.
    acked: u64,
    status: Option<StatusChange>,
    /// Bumped on every status change so each session sends the latest one.
    status_version: u64,
    is_final: bool,
    status_stored: bool,
    /// Output is no longer wanted (the link was refused): pushes never wait.
    abandoned: bool,
}

/// Where a link session is in the outbox.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    seq: u64,
    status_version: u64,
    final_sent: bool,
}

impl Queue {
    fn has_space(&self) -> bool {
        self.abandoned
            || (self.chunks.len() < self.limits.max_chunks && self.bytes < self.limits.max_bytes)
    }

    fn drop_below(&mut self, seq: u64) {
        self.acked = self.acked.max(seq.min(self.next_seq));
        while self
            .chunks
            .front()
            .is_some_and(|chunk| chunk.seq < self.acked)
        {
            if let Some(chunk) = self.chunks.pop_front() {
                self.bytes -= chunk.data.len();
            }
        }
    }

    /// Everything is stored: all chunks, and the final status.
    fn delivered(&self) -> bool {
        self.is_final && self.status_stored && self.acked == self.next_seq
    }

    /// The next frame for the session at `cursor`, advancing it: a newer non-final status first,
    /// then chunks in order, then the final status once every chunk has been sent.
    pub(crate) fn next_frame(&self, cursor: &mut Cursor) -> Option<AgentFrame> {
        let frame = |frame| Some(AgentFrame { frame: Some(frame) });
        if !self.is_final && cursor.status_version < self.status_version {
            cursor.status_version = self.status_version;
            return self
                .status
                .clone()
                .and_then(|status| frame(Frame::Status(status)));
        }
        cursor.seq = cursor.seq.max(self.acked);
        if cursor.seq < self.next_seq {
            let index = usize::try_from(cursor.seq - self.acked).ok()?;
            let chunk = self.chunks.get(index)?.clone();
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

#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: watch::Sender<Queue>,
}

impl Outbox {
    pub(crate) fn new(limits: Limits) -> Self {
        let queue = Queue {
            limits,
            chunks: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            acked: 0,
            status: None,
            status_version: 0,
            is_final: false,
            status_stored: false,
            abandoned: false,
        };
        Self {
            tx: watch::Sender::new(queue),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Queue> {
        self.tx.subscribe()
    }

    /// Queues one chunk once there is room, returning its sequence number.
    pub(crate) async fn push(&self, stream: OutputStream, data: Bytes) -> u64 {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = rx.wait_for(Queue::has_space).await;
        let mut seq = 0;
        self.tx.send_modify(|queue| {
            seq = queue.next_seq;
            queue.next_seq += 1;
            if !queue.abandoned {
                queue.bytes += data.len();
                queue.chunks.push_back(Output {
                    seq,
                    stream: stream.into(),
                    data,
                });
            }
        });
        seq
    }

    /// Records the orchestrator's acknowledgement; returns whether everything is now delivered.
    pub(crate) fn ack(&self, next_seq: u64, status_stored: bool) -> bool {
        let mut delivered = false;
        self.tx.send_modify(|queue| {
            if next_seq > queue.next_seq {
                tracing::warn!(
                    next_seq,
                    produced = queue.next_seq,
                    "ack beyond the produced output"
                );
            }
            queue.drop_below(next_seq);
            // Only the final status is ever reported as stored.
            queue.status_stored |= status_stored && queue.is_final;
            delivered = queue.delivered();
        });
        delivered
    }

    /// Applies a `Welcome`: drops what the orchestrator already has and returns the cursor to
    /// send from (the latest status is re-sent first).
    pub(crate) fn resume(&self, resume_from_seq: u64) -> Cursor {
        let mut cursor = Cursor::default();
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
            queue.drop_below(resume_from_seq);
            cursor.seq = queue.acked;
        });
        cursor
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
            queue.chunks.clear();
            queue.bytes = 0;
        });
    }

    /// The orchestrator's last `next_seq`, for `Hello.acked_seq`.
    pub(crate) fn acked(&self) -> u64 {
        self.tx.borrow().acked
    }

    /// Whether pushes are waiting for acknowledgements.
    pub(crate) fn is_full(&self) -> bool {
        !self.tx.borrow().has_space()
    }

    /// Produced, acknowledged and held chunk counts, held bytes, and whether the final status is stored.
    pub(crate) fn progress(&self) -> Progress {
        let queue = self.tx.borrow();
        Progress {
            produced: queue.next_seq,
            acked: queue.acked,
            held_bytes: queue.bytes,
            status_stored: queue.status_stored,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    pub(crate) produced: u64,
    pub(crate) acked: u64,
    pub(crate) held_bytes: usize,
    pub(crate) status_stored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &Outbox, cursor: &mut Cursor) -> Vec<Frame> {
        let queue = outbox.subscribe();
        let queue = queue.borrow();
        std::iter::from_fn(|| queue.next_frame(cursor).and_then(|f| f.frame)).collect()
    }

    fn describe(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|frame| match frame {
                Frame::Output(o) => format!("out {}", o.seq),
                Frame::Status(s) => format!("status {} final {}", s.status, s.final_seq),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn resend_acks_and_final_status() {
        let outbox = Outbox::new(Limits {
            max_chunks: 3,
            max_bytes: 1024,
        });
        outbox.set_status(AgentStatus::Running);
        for n in 0..3u8 {
            assert_eq!(
                outbox
                    .push(OutputStream::Stdout, Bytes::from(vec![n]))
                    .await,
                u64::from(n)
            );
        }
        let running = AgentStatus::Running as i32;
        let mut cursor = outbox.resume(0);
        assert_eq!(
            describe(&drain(&outbox, &mut cursor)),
            [
                format!("status {running} final 0"),
                "out 0".into(),
                "out 1".into(),
                "out 2".into()
            ]
        );

        // Full: the fourth push waits until an ack makes room.
        let pushing = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox
                    .push(OutputStream::Stderr, Bytes::from_static(b"x"))
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!pushing.is_finished());
        assert!(!outbox.ack(1, false));
        assert_eq!(pushing.await.ok(), Some(3));

        // A reconnect resumes from the orchestrator's count, never below the last ack.
        let mut cursor = outbox.resume(0);
        assert_eq!(outbox.acked(), 1);
        assert_eq!(
            describe(&drain(&outbox, &mut cursor))[1..],
            ["out 1", "out 2", "out 3"]
        );
        let mut cursor = outbox.resume(2);
        assert_eq!(
            describe(&drain(&outbox, &mut cursor))[1..],
            ["out 2", "out 3"]
        );

        outbox.finish(StatusChange {
            status: AgentStatus::Completed.into(),
            ..Default::default()
        });
        let completed = AgentStatus::Completed as i32;
        assert_eq!(
            describe(&drain(&outbox, &mut cursor)),
            [format!("status {completed} final 4")]
        );
        assert!(!outbox.ack(4, false));
        assert!(outbox.ack(4, true));
        assert_eq!(outbox.progress().held_bytes, 0);
    }
}
