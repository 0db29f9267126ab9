//! Every failure a client sees: `{"error": {"code", "message"}}` with the matching status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use covibe_proto::tonic;
use covibe_types::{ApiError, Code};

#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<tonic::Status> for HttpError {
    fn from(status: tonic::Status) -> Self {
        // Transport failures carry addresses and OS errors: `from_status` logs them, never
        // sends them.
        Self(ApiError::from_status(&status))
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`, `not_found`,
    /// `already_exists`, `conflict`, `payload_too_large`, `rate_limited`, `unavailable` or
    /// `internal`.
    pub code: &'static str,
    /// What went wrong, for a person to act on.
    pub message: String,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let ApiError {
            code,
            message,
            retry_after_secs,
        } = self.0;
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: code.as_str(),
                message,
            },
        });
        let mut response = (code.http_status(), body).into_response();
        if code == Code::RateLimited {
            let secs = retry_after_secs.unwrap_or(1);
            if let Ok(value) = http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
