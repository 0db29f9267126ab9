//! One error code for the whole mesh, mapped exhaustively to `tonic::Code` and HTTP status.
//! The message that travels with a code is written for the person at the other end; internal
//! details are logged where they happen and never put in an `ApiError`.

use std::fmt;

use covibe_proto::tonic;
use http::StatusCode;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl Code {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub const fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub const fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::Conflict => tonic::Code::Aborted,
            Self::PayloadTooLarge => tonic::Code::OutOfRange,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The code a gRPC status carries; unknown or transport-level codes become `Unavailable`
    /// or `Internal`, whichever a caller can act on.
    pub fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Self::InvalidArgument,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists => Self::AlreadyExists,
            tonic::Code::Aborted => Self::Conflict,
            tonic::Code::OutOfRange => Self::PayloadTooLarge,
            tonic::Code::ResourceExhausted => Self::RateLimited,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Self::Unavailable
            }
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::DataLoss => Self::Internal,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error fit to show a client: a code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// For `rate_limited`: seconds until a retry may succeed (HTTP's `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// `rate_limited`, retry in `secs` seconds (at least one).
    pub fn rate_limited(message: impl Into<String>, secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs.max(1)),
            ..Self::new(Code::RateLimited, message)
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// An internal failure: `detail` is logged here, the client sees only a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(Code::Internal, "internal error")
    }

    /// Reads a status that came back from another service.
    /// A status that did not come from a service's own answer (a transport failure, a
    /// timeout) may carry addresses and OS errors: it is logged here and the caller gets a
    /// generic message of its code.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = Code::from_grpc(status.code());
        if !is_for_caller(status) {
            tracing::warn!(grpc_code = ?status.code(), error = %status.message(), "a call to a service failed");
            return match code {
                Code::Internal => Self::new(code, "internal error"),
                Code::RateLimited => Self::rate_limited("too many requests, slow down", 1),
                Code::Unavailable => Self::new(code, "a service is unavailable, try again"),
                Code::PayloadTooLarge => Self::new(code, "a message was too large"),
                _ => Self::new(code, "the request could not be completed"),
            };
        }
        match code {
            Code::Internal => Self::new(code, "internal error"),
            Code::Unavailable if status.message().is_empty() => {
                Self::new(code, "a service is unavailable, try again")
            }
            Code::RateLimited => {
                let secs = status
                    .metadata()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                Self::rate_limited(status.message(), secs)
            }
            _ => Self::new(code, status.message()),
        }
    }
}

/// The gRPC metadata a `rate_limited` status carries its retry delay in.
const RETRY_AFTER: &str = "retry-after";

/// Marks a status a service made from its own `ApiError`: its message was written for the
/// caller. A status without it (a transport failure) may carry addresses and OS errors.
const FOR_CALLER: &str = "covibe-for-caller";

/// Whether `status` came from a service's own answer rather than from the transport.
pub fn is_for_caller(status: &tonic::Status) -> bool {
    status.metadata().contains_key(FOR_CALLER)
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut status = tonic::Status::new(err.code.grpc(), err.message);
        status
            .metadata_mut()
            .insert(FOR_CALLER, tonic::metadata::MetadataValue::from_static("1"));
        if let Some(secs) = err.retry_after_secs
            && let Ok(value) = secs.to_string().parse()
        {
            status.metadata_mut().insert(RETRY_AFTER, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_grpc_round_trip() {
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::AlreadyExists,
            Code::Conflict,
            Code::PayloadTooLarge,
            Code::RateLimited,
            Code::Unavailable,
            Code::Internal,
        ] {
            assert_eq!(Code::from_grpc(code.grpc()), code);
        }
    }

    #[test]
    fn a_retry_delay_crosses_grpc() {
        let status = tonic::Status::from(ApiError::rate_limited("slow down", 17));
        let back = ApiError::from_status(&status);
        assert_eq!(back.code, Code::RateLimited);
        assert_eq!(back.retry_after_secs, Some(17));
    }

    #[test]
    fn a_transport_failure_is_never_echoed() {
        for status in [
            tonic::Status::unavailable("tcp connect error: 10.1.2.3:50052 (os error 111)"),
            tonic::Status::unknown("h2 protocol error: 10.1.2.3"),
            tonic::Status::cancelled("10.1.2.3 reset"),
        ] {
            let err = ApiError::from_status(&status);
            assert!(!err.message.contains("10.1.2.3"), "{}", err.message);
        }
        let ours = tonic::Status::from(ApiError::not_found("no such agent"));
        assert_eq!(ApiError::from_status(&ours).message, "no such agent");
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let status = tonic::Status::internal("password=hunter2 at db.rs:10");
        assert_eq!(ApiError::from_status(&status).message, "internal error");
        assert_eq!(
            ApiError::internal("secret detail").message,
            "internal error"
        );
    }
}
