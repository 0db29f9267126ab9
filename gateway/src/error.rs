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
        let ApiError { code, message } = self.0;
        let body = Json(json!({"error": {"code": code.as_str(), "message": message}}));
        let mut response = (code.http_status(), body).into_response();
        if code == Code::RateLimited {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
