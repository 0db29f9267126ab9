//! Message limits every process in the mesh agrees on: each gRPC server and client sets its
//! decoding and encoding limits from here, so a message one side may send the other accepts.

/// Largest gRPC message any server or client of the mesh encodes or decodes (tonic's default
/// of 4 MiB is too little for a history page of long lines and its framing).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of output one page of history holds at most (`GetOutput` and the REST page as JSON),
/// always at least one chunk: four pages fit in one message.
pub const MAX_HISTORY_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Longest output chunk: the vm-agent cuts longer lines (at a UTF-8 character boundary) and
/// the orchestrator refuses longer chunks. A chunk and its parsed event, escaped as JSON at
/// worst, still fit in one history page.
pub const MAX_OUTPUT_CHUNK_BYTES: usize = 256 * 1024;

/// GitHub's largest webhook payload: the one body larger than a message, taken by the gateway's
/// push route and `PreviewService.ReceivePush` alone.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

/// A push's message: its body and the delivery's headers.
pub const MAX_WEBHOOK_MESSAGE_BYTES: usize = MAX_WEBHOOK_BYTES + 64 * 1024;

/// A whole tool-use policy as a REST body: past the gateway's usual body limit, so that a policy
/// of as many rules as the policy crate takes is never refused for its size (the team service
/// checks the two agree).
pub const MAX_POLICY_BODY_BYTES: usize = 1024 * 1024;

/// Room for a frame's fields besides its output bytes.
pub const FRAME_OVERHEAD_BYTES: usize = 4096;

// One chunk whose every byte JSON escapes to six (`\u0001`), with an event as long, fits a page.
const _: () = assert!(MAX_OUTPUT_CHUNK_BYTES * 6 * 2 < MAX_HISTORY_PAGE_BYTES);
const _: () = assert!(MAX_HISTORY_PAGE_BYTES * 2 <= MAX_MESSAGE_BYTES);
