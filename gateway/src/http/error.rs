//! Every failure a client sees: `{"error": {"code", "message"}}` with the matching status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use covibe_proto::tonic;
use covibe_types::{ApiError, Code};
use serde_json::json;

#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<tonic::Status> for HttpError {
    fn from(status: tonic::Status) -> Self {
        let err = ApiError::from_status(&status);
        if err.code == Code::Unavailable {
            // Transport failures carry addresses and OS errors: logged, never sent.
            tracing::warn!(grpc_code = ?status.code(), error = %status.message(), "a service is unavailable");
            return Self(ApiError::unavailable("a service is unavailable, try again"));
        }
        Self(err)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let ApiError {
            code,
            message,
            retry_after_secs,
        } = self.0;
        let body = Json(json!({"error": {"code": code.as_str(), "message": message}}));
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
