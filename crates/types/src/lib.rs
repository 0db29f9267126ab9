//! Ids, domain enums and the shared error code, used by every CoVibe crate.

mod code;
mod ids;
mod status;

pub use code::{ApiError, Code, is_for_caller};
pub use ids::{AgentId, IdError, MessageId, SessionId, TeamId, UserId, VmId};
pub use status::AgentStatus;

#[doc(hidden)]
pub use covibe_proto::tonic as __tonic;
#[doc(hidden)]
pub use tracing as __tracing;

/// Gives a service's `Error` (an enum whose `Api` variant holds an [`ApiError`] for the caller,
/// and whose `Storage` variant holds a `sea_orm::DbErr`) its conversions to `ApiError` and
/// `tonic::Status`. A database that cannot be reached is answered `unavailable` (the caller may
/// try again); every other failure is internal: logged, and answered `internal error`. Invoke
/// it where `Error` is in scope, in a crate that depends on `covibe-storage`.
#[macro_export]
macro_rules! api_error {
    ($error:ident) => {
        impl From<$error> for $crate::ApiError {
            fn from(err: $error) -> Self {
                match err {
                    $error::Api(api) => api,
                    $error::Storage(db) if ::covibe_storage::db_unavailable(&db) => {
                        $crate::__tracing::warn!(error = %db, "the database is unavailable");
                        $crate::ApiError::unavailable(
                            "the database is unavailable, try again shortly",
                        )
                    }
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
