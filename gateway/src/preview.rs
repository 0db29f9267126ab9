//! `POST /api/webhook/push?team=TEAM_ID`: GitHub push webhooks for the team's shared preview.
//!
//! The gateway holds no webhook secret: it forwards the raw body and GitHub's headers unchanged
//! to `PreviewService.ReceivePush`, which verifies the signature itself, de-duplicates by
//! delivery id and records the push. The deploy itself happens later, so the answer is a quick
//! 202.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use covibe_proto::preview::v1 as pb;
use covibe_types::{ApiError, Code};
use serde::Deserialize;

use crate::http::error::HttpError;
use crate::state::Gateway;

/// What GitHub sends for a push. The gateway forwards the body unparsed (the preview service
/// verifies and reads it): this is its description for the document.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // described, never read here
pub(crate) struct GithubPush {
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The pushed commit's sha.
    pub after: String,
    pub repository: GithubRepository,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // described, never read here
pub(crate) struct GithubRepository {
    pub full_name: String,
}

/// What a webhook delivery became.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookAck {
    /// `false`: not a push (or a branch deletion), ignored.
    pub accepted: bool,
    /// This delivery was received before.
    pub duplicate: bool,
    /// The pushed commit.
    pub commit: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WebhookQuery {
    /// The team whose preview the repository feeds (any URL can be configured on GitHub).
    #[serde(default)]
    team: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) async fn push(
    State(gw): State<Arc<Gateway>>,
    query: Result<Query<WebhookQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, HttpError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let request = pb::ReceivePushRequest {
        // Checked by the preview service, after the signature.
        team_id: query.team.unwrap_or_default(),
        delivery_id: header(&headers, "x-github-delivery"),
        signature_256: header(&headers, "x-hub-signature-256"),
        event: header(&headers, "x-github-event"),
        body: body.to_vec(),
    };
    let answer = match gw.preview.clone().receive_push(request).await {
        Ok(answer) => answer.into_inner(),
        // The preview service's own word that no secret is set: clearer than "unavailable".
        Err(status)
            if status.code() == covibe_proto::tonic::Code::Unavailable
                && status.message().starts_with("webhooks are not configured") =>
        {
            return Err(HttpError(ApiError::new(
                Code::Unavailable,
                status.message().to_owned(),
            )));
        }
        Err(status) => return Err(status.into()),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookAck {
            accepted: answer.accepted,
            duplicate: answer.duplicate,
            commit: answer.preview.map(|p| p.commit),
        }),
    ))
}
