//! Ids, domain enums and the shared error code, used by every CoVibe crate.

mod code;
mod ids;
mod status;

pub use code::{ApiError, Code, is_for_caller};
pub use ids::{AgentId, IdError, MessageId, SessionId, TeamId, UserId, VmId};
pub use status::AgentStatus;

#[doc(hidden)]
pub use covibe_proto::tonic as __tonic;

/// Gives a crate's `Error` (an enum whose `Api` variant holds an [`ApiError`] for the caller;
/// every other variant is internal: logged, and answered `internal error`) its conversions to
/// `ApiError` and `tonic::Status`. Invoke it where `Error` is in scope.
#[macro_export]
macro_rules! api_error {
    ($error:ident) => {
        impl From<$error> for $crate::ApiError {
            fn from(err: $error) -> Self {
                match err {
                    $error::Api(api) => api,
                    other => $crate::ApiError::internal(other),
                }
            }
        }

        impl From<$error> for $crate::__tonic::Status {
            fn from(err: $error) -> Self {
                $crate::ApiError::from(err).into()
            }
        }
    };
}

/// Milliseconds since the Unix epoch, the one time representation on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
