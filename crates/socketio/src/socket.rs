//! One client connection: its queue of frames to send, its state, and its room.
//!
//! The queue is bounded in frames and in bytes. A send never waits: a full queue is the caller's
//! to handle (the gateway tells such a socket to resync). Frames are shared bytes, so a frame
//! broadcast to a thousand sockets is held once.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::config::Config;
use crate::packet::{self, Frame};

/// A socket's number, unique in this process.
pub type Sid = u64;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the socket's send queue is full")]
    Full,
    #[error("the socket is closed")]
    Closed,
}

/// Frames and bytes an answer to the client's own packet may take past the queue's limits.
const ANSWER_ROOM: (usize, usize) = (64, 256 * 1024);

#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) frames: VecDeque<Frame>,
    pub(crate) bytes: usize,
    /// No more frames are taken; the transport closes once the queue is written.
    pub(crate) closing: bool,
}

pub struct Socket<S> {
    pub id: Sid,
    /// The Engine.IO session id (the only credential of a polling request).
    pub(crate) wire: Box<str>,
    pub(crate) outbox: Mutex<Outbox>,
    /// Frames were queued (the transport's writer waits on it).
    pub(crate) wake: Notify,
    /// Room was made in the queue.
    pub(crate) drained: Notify,
    /// The client connected to the namespace (and was not refused).
    pub(crate) connected: AtomicBool,
    /// The transport is gone: nothing more is sent or received.
    pub(crate) gone: AtomicBool,
    /// The client answered the last ping.
    pub(crate) ponged: AtomicBool,
    /// The transport is a WebSocket (from the start, or upgraded): polling requests are refused.
    pub(crate) websocket: AtomicBool,
    /// A polling request is waiting for frames.
    pub(crate) polling: AtomicBool,
    /// Where a polling session's upgrade request hands its WebSocket to the socket's task.
    pub(crate) upgrade: Mutex<Option<tokio::sync::oneshot::Sender<hyper::upgrade::Upgraded>>>,
    /// Wakes the socket's task for what is not a frame to write (closing, while polling).
    pub(crate) control: Notify,
    /// Places for the client's events being handled at once.
    pub(crate) events: Arc<tokio::sync::Semaphore>,
    /// Frames and bytes the queue holds at most.
    limits: (usize, usize),
    /// The client's address, counted against the sessions one address may hold.
    pub(crate) address: Option<IpAddr>,
    /// What the application keeps per socket.
    pub state: Mutex<S>,
}

impl<S> std::fmt::Debug for Socket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<S> Socket<S> {
    pub(crate) fn new(
        id: Sid,
        wire: Box<str>,
        address: Option<IpAddr>,
        config: &Config,
        state: S,
    ) -> Self {
        Self {
            limits: (config.queue_frames, config.queue_bytes),
            address,
            id,
            wire,
            outbox: Mutex::default(),
            wake: Notify::new(),
            drained: Notify::new(),
            connected: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            ponged: AtomicBool::new(false),
            websocket: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            upgrade: Mutex::new(None),
            control: Notify::new(),
            events: Arc::new(tokio::sync::Semaphore::new(config.max_events_in_flight)),
            state: Mutex::new(state),
        }
    }

    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The application's state of this socket, locked.
    pub fn state(&self) -> MutexGuard<'_, S> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the client is still connected to the namespace.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.gone.load(Ordering::Acquire)
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        if self.queue(frame)? {
            self.flush();
        }
        Ok(())
    }

    /// Queues a frame without waking the socket's writer: `true` means the caller must call
    /// [`Socket::flush`] (soon: nothing is written until then). A broadcaster queues a burst of
    /// frames this way and wakes each socket once, so they go out in one write.
    pub fn queue(&self, frame: Frame) -> Result<bool, SendError> {
        let mut outbox = self.outbox();
        if outbox.closing || self.gone.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if self.full(&outbox, 1, frame.len()) {
            return Err(SendError::Full);
        }
        Ok(push(&mut outbox, frame))
    }

    /// Whether `frames` more frames of `bytes` in all are past the queue's limits (one frame
    /// always fits an empty queue).
    fn full(&self, outbox: &Outbox, frames: usize, bytes: usize) -> bool {
        let (max_frames, max_bytes) = self.limits;
        outbox.frames.len() + frames > max_frames
            || (outbox.bytes + bytes > max_bytes && !(frames == 1 && outbox.frames.is_empty()))
    }

    /// Wakes the writer for what [`Socket::queue`] queued.
    pub fn flush(&self) {
        self.wake.notify_one();
    }

    /// Queues an answer the client's own packet asked for (a pong, an acknowledgement, an
    /// error). It counts against the queue's limits like any frame, with a little room past
    /// them ([`ANSWER_ROOM`]) so that an answer owed after a burst that filled the queue (a
    /// resume's replay, then the join's acknowledgement) still goes out. A client that keeps
    /// asking and never reads fills that room too and is closed, instead of growing its queue
    /// without end.
    pub(crate) fn answer(&self, frame: Frame) {
        let mut outbox = self.outbox();
        if outbox.closing || self.gone.load(Ordering::Acquire) {
            return;
        }
        let (max_frames, max_bytes) = self.limits;
        let (room_frames, room_bytes) = ANSWER_ROOM;
        let full = outbox.frames.len() + 1 > max_frames + room_frames
            || (outbox.bytes + frame.len() > max_bytes + room_bytes && !outbox.frames.is_empty());
        if full {
            drop(outbox);
            tracing::debug!(
                sid = self.id,
                "send queue full of answers never read; closing"
            );
            self.discard_queued();
            self.end();
            return;
        }
        if push(&mut outbox, frame) {
            drop(outbox);
            self.flush();
        }
    }

    /// Queues a frame whatever the queue holds: the server's own control packets (the open
    /// packet, its pings, the answer to a connect), few and small, never a client's to multiply.
    pub(crate) fn send_control(&self, frame: Frame) {
        let mut outbox = self.outbox();
        if !outbox.closing && push(&mut outbox, frame) {
            self.flush();
        }
    }

    /// Sends an event with one argument.
    pub fn emit(&self, event: &str, payload: &impl Serialize) -> Result<(), SendError> {
        self.send(Frame::event(event, payload))
    }

    /// Whether a frame would be queued now.
    pub fn has_room(&self) -> bool {
        !self.full(&self.outbox(), 1, 1)
    }

    /// Whether `frames` more frames, of `bytes` in all, would be queued now.
    pub fn has_room_for(&self, frames: usize, bytes: usize) -> bool {
        !self.full(&self.outbox(), frames, bytes)
    }

    /// Waits until the queue has room or the socket is gone.
    pub async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.has_room() || !self.connected() {
                return;
            }
            drained.await;
        }
    }

    /// Drops the frames queued and not yet taken by the transport: what must no longer reach
    /// the client (its session ended, say).
    pub fn discard_queued(&self) {
        {
            let mut outbox = self.outbox();
            outbox.frames.clear();
            outbox.bytes = 0;
        }
        self.drained.notify_waiters();
    }

    /// Ends the connection: the client is told (`disconnect`), then the transport closes.
    pub fn disconnect(&self) {
        let mut outbox = self.outbox();
        if outbox.closing {
            return;
        }
        if self.connected.load(Ordering::Acquire) {
            push(&mut outbox, packet::DISCONNECT);
        }
        outbox.closing = true;
        self.flush();
        self.control.notify_one();
    }

    /// Ends the connection without a word to the client (it is the one leaving).
    pub(crate) fn end(&self) {
        self.outbox().closing = true;
        self.wake.notify_one();
        self.control.notify_one();
    }

    /// Takes frames to write, up to about `max_bytes` (always at least one).
    pub(crate) fn take(&self, max_bytes: usize) -> (Vec<Frame>, bool) {
        let mut outbox = self.outbox();
        let mut taken = Vec::new();
        let mut size = 0;
        while let Some(frame) = outbox.frames.front() {
            if !taken.is_empty() && size + frame.len() > max_bytes {
                break;
            }
            size += frame.len();
            if let Some(frame) = outbox.frames.pop_front() {
                taken.push(frame);
            }
        }
        outbox.bytes -= size;
        if outbox.frames.is_empty() && outbox.frames.capacity() > 64 {
            outbox.frames = VecDeque::new();
        }
        let closing = outbox.closing && outbox.frames.is_empty();
        drop(outbox);
        if !taken.is_empty() {
            self.drained.notify_waiters();
        }
        (taken, closing)
    }
}

/// Appends a frame; `true` if the queue was empty (its writer may be waiting for a wake-up).
fn push(outbox: &mut Outbox, frame: Frame) -> bool {
    let was_empty = outbox.frames.is_empty();
    outbox.bytes += frame.len();
    outbox.frames.push_back(frame);
    was_empty
}

/// The answer a client asked for with its event (none if it did not ask).
#[derive(Debug)]
pub struct Ack<S> {
    pub(crate) socket: Arc<Socket<S>>,
    pub(crate) id: Option<u64>,
}

impl<S> Ack<S> {
    /// Sends the answer; an answer to an event that asked none is dropped.
    pub fn send(self, payload: &impl Serialize) {
        if let Some(id) = self.id {
            self.socket.answer(Frame::ack(id, payload));
        }
    }
}

/// An event a client sent.
#[derive(Debug)]
pub struct Event<S> {
    pub name: String,
    /// Its first argument, if any.
    pub data: Option<Box<RawValue>>,
    pub ack: Ack<S>,
}

impl<S> Event<S> {
    /// The first argument, as `T`.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.data {
            Some(data) => serde_json::from_str(data.get()),
            None => serde_json::from_str("null"),
        }
    }
}
