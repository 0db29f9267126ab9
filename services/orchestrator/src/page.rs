//! One page of history being filled: chunks in order, gap-free, while they fit its chunk and
//! byte bounds (always at least one chunk), and whether more is stored past it.

use crate::model::{OutputPage, StoredChunk};

/// Chunks the first database read of a history page asks for; later reads are sized by the
/// room left in the page.
pub(crate) const FIRST_READ: u64 = 16;
/// Bytes counted per chunk besides its data and event (its seq, stream and framing).
const CHUNK_OVERHEAD: usize = 16;

/// A history page being filled: chunks in order from `from`, gap-free, while they fit.
pub(crate) struct Page {
    chunks: Vec<StoredChunk>,
    next: u64,
    wanted: u64,
    bytes: usize,
    max_bytes: usize,
    /// The next chunk did not fit.
    full: bool,
}

impl Page {
    pub(crate) fn new(from: u64, wanted: u64, max_bytes: usize) -> Self {
        Self {
            chunks: Vec::new(),
            next: from,
            wanted,
            bytes: 0,
            max_bytes,
            full: false,
        }
    }

    fn size(chunk: &StoredChunk) -> usize {
        chunk.data.len() + chunk.event.len() + CHUNK_OVERHEAD
    }

    /// Adds the chunk if it is the next one and fits (the first always does); `false` when
    /// the page takes no more.
    pub(crate) fn push(&mut self, mut chunk: StoredChunk) -> bool {
        if self.is_done() || chunk.seq != self.next {
            return false;
        }
        if chunk.event.is_empty() {
            // Parsed at ingest; lines stored before that are parsed now.
            chunk.event = crate::stream_json::parse(&chunk.data)
                .event
                .to_string()
                .into();
        }
        let size = Self::size(&chunk);
        if !self.chunks.is_empty() && self.bytes + size > self.max_bytes {
            self.full = true;
            return false;
        }
        self.bytes += size;
        self.next += 1;
        self.chunks.push(chunk);
        true
    }

    pub(crate) fn is_done(&self) -> bool {
        self.full || self.chunks.len() as u64 >= self.wanted
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next
    }

    /// How many chunks to read next: as many as the room left holds at the average size so
    /// far, and one more (to learn that the page is full).
    pub(crate) fn next_step(&self) -> u64 {
        let left = self.wanted.saturating_sub(self.chunks.len() as u64).max(1);
        let average = (self.bytes / self.chunks.len().max(1)).max(1);
        let room = (self.max_bytes.saturating_sub(self.bytes) / average) as u64;
        (room + 1).clamp(1, left)
    }

    pub(crate) fn finish(self, end: u64) -> OutputPage {
        OutputPage {
            more: self.next < end,
            next_seq: self.next,
            chunks: self.chunks,
        }
    }
}
