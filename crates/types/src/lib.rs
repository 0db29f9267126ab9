//! Ids, domain enums and the shared error code, used by every CoVibe crate.

mod code;
mod ids;
mod status;

pub use code::{ApiError, Code};
pub use ids::{AgentId, IdError, MessageId, SessionId, TeamId, UserId, VmId};
pub use status::AgentStatus;

/// Milliseconds since the Unix epoch, the one time representation on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
