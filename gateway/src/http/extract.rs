//! What handlers take from a request: the member its bearer token names, and JSON bodies whose
//! rejections answer in the API's error shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use covibe_types::{ApiError, Code};
use serde::de::DeserializeOwned;

use crate::http::error::HttpError;
use crate::member::Member;
use crate::state::Gateway;

type Result<T> = std::result::Result<T, HttpError>;

/// A JSON body whose rejections are answered in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(HttpError(json_error(&rejection))),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(Code::PayloadTooLarge, "request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::invalid("expected a JSON body (content-type: application/json)")
        }
        _ => ApiError::invalid(format!("invalid JSON body: {}", rejection.body_text())),
    }
}

/// An optional JSON body: none (or only whitespace) means the defaults.
pub(crate) fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")).into())
}

impl FromRequestParts<Arc<Gateway>> for Member {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Gateway>) -> Result<Self> {
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
        let principal = state.verifier.verify(token)?;
        let (user_id, team_id) = principal.member()?;
        Ok(Self {
            user_id,
            team_id,
            session_id: principal.session()?,
            token: token.to_owned(),
        })
    }
}
