//! The team's shared preview: `GET /api/preview` for every member; `GET`/`PUT
//! /api/preview/config` and `POST /api/preview/config/webhook-secret` for owners and admins (the
//! preview service checks the role); and `POST /api/webhook/push?team=TEAM_ID`, GitHub's push
//! webhook.
//!
//! The gateway holds no webhook secret: it forwards the raw body and GitHub's headers unchanged
//! to `PreviewService.ReceivePush`, which verifies the signature with the team's own secret,
//! de-duplicates by delivery id and records the push. The deploy itself happens later, so the
//! answer is a quick 202.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::preview::v1 as pb;
use covibe_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::state::Gateway;

/// The team's preview.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewView {
    pub url: String,
    pub commit: String,
    /// `none` before the first push, then `pending`, `deploying`, `live` or `failed`.
    pub status: String,
    /// Milliseconds since the Unix epoch; 0 when never.
    pub updated_at: i64,
}

/// `{preview}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PreviewEnvelope {
    pub preview: PreviewView,
}

/// How the team's preview is built and run (`configured: false` until it was set).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewConfigView {
    pub configured: bool,
    pub repository: String,
    pub branch: String,
    pub vm_id: Option<String>,
    pub work_dir: Option<String>,
    pub build_command: Option<String>,
    pub start_command: String,
    pub port: u32,
    pub health_path: Option<String>,
    /// Where members open the preview when an operator exposes it themselves.
    pub public_url: Option<String>,
    /// The member who set it.
    pub updated_by: Option<String>,
    pub updated_at: i64,
}

/// `{config, webhookUrl}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewConfigEnvelope {
    pub config: PreviewConfigView,
    /// Where GitHub sends the team's pushes.
    pub webhook_url: String,
}

/// The team's preview configuration.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutPreviewConfig {
    /// A clone URL or path, or GitHub's `owner/name`: pushes count only from this repository.
    pub repository: String,
    /// `main` when empty; only pushes to it deploy.
    #[serde(default)]
    pub branch: String,
    /// The VM the preview runs on; the caller's default VM when left out.
    #[serde(default)]
    pub vm_id: Option<String>,
    #[serde(default)]
    pub work_dir: Option<String>,
    #[serde(default)]
    pub build_command: Option<String>,
    pub start_command: String,
    /// Where the app listens (1 to 65535).
    pub port: u32,
    /// `/` when left out.
    #[serde(default)]
    pub health_path: Option<String>,
    /// An `http(s)` address where the operator exposes the app themselves, opened instead of
    /// the gateway's preview path; needed for a VM that dials in, whose ports CoVibe cannot
    /// reach.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// `{config, webhookUrl, webhookSecret?}`: the secret only on the team's first configuration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutPreviewConfigAnswer {
    pub config: PreviewConfigView,
    pub webhook_url: String,
    /// Shown this once: paste it into GitHub's webhook settings.
    pub webhook_secret: Option<String>,
}

/// A new webhook secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookSecret {
    pub webhook_url: String,
    pub webhook_secret: String,
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn config_view(c: pb::PreviewConfig) -> PreviewConfigView {
    PreviewConfigView {
        configured: c.configured,
        repository: c.repository,
        branch: c.branch,
        vm_id: some(c.vm_id),
        work_dir: some(c.work_dir),
        build_command: some(c.build_command),
        start_command: c.start_command,
        port: c.port,
        health_path: some(c.health_path),
        public_url: some(c.public_url),
        updated_by: some(c.updated_by),
        updated_at: c.updated_at_ms,
    }
}

/// The webhook URL of the caller's team, as the caller reached this gateway.
fn webhook_url(headers: &HeaderMap, team: &str) -> String {
    let host = header(headers, "x-forwarded-host");
    let host = if host.is_empty() {
        header(headers, "host")
    } else {
        host
    };
    let proto = header(headers, "x-forwarded-proto");
    let proto = if proto == "https" { "https" } else { "http" };
    format!("{proto}://{host}/api/webhook/push?team={team}")
}

/// `GET /api/preview` → `{preview}`: the caller's team's preview.
pub(crate) async fn get_preview(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse, HttpError> {
    let p = gw
        .preview
        .clone()
        .get_preview(bearer(pb::GetPreviewRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(PreviewEnvelope {
        preview: PreviewView {
            url: p.url,
            commit: p.commit,
            status: p.status,
            updated_at: p.updated_at_ms,
        },
    }))
}

/// One deploy of the team's preview.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentView {
    pub id: String,
    pub commit: String,
    /// `push` or `manual`.
    pub trigger: String,
    /// Who pushed, or the member who asked.
    pub requested_by: String,
    /// `queued`, `running`, `live`, `failed` or `replaced`.
    pub status: String,
    pub attempts: u32,
    pub created_at: i64,
    /// 0 until it started.
    pub started_at: i64,
    /// 0 until it ended.
    pub finished_at: i64,
    /// The end of its log.
    pub log_tail: String,
}

/// `{deployments}`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeploymentList {
    pub deployments: Vec<DeploymentView>,
}

/// `{deployment}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeploymentEnvelope {
    pub deployment: DeploymentView,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeploymentsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

fn deployment_view(d: pb::Deployment) -> DeploymentView {
    DeploymentView {
        id: d.id,
        commit: d.commit,
        trigger: d.trigger,
        requested_by: d.requested_by,
        status: d.status,
        attempts: d.attempts,
        created_at: d.created_at_ms,
        started_at: d.started_at_ms,
        finished_at: d.finished_at_ms,
        log_tail: d.log_tail,
    }
}

/// `GET /api/preview/deployments?limit` → `{deployments}`: the team's deploys, newest first.
pub(crate) async fn deployments(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    query: Result<Query<DeploymentsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, HttpError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let request = pb::ListDeploymentsRequest {
        limit: query.limit.unwrap_or(0),
    };
    let list = gw
        .preview
        .clone()
        .list_deployments(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(DeploymentList {
        deployments: list.deployments.into_iter().map(deployment_view).collect(),
    }))
}

/// `POST /api/preview/deploy` → 202 `{deployment}`: deploys the newest known commit again
/// (owners and admins).
pub(crate) async fn redeploy(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse, HttpError> {
    let deployment = gw
        .preview
        .clone()
        .redeploy(bearer(pb::RedeployRequest {}, &member.token))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(DeploymentEnvelope {
            deployment: deployment_view(deployment),
        }),
    ))
}

/// Where a member opens the preview: a path holding a capability the preview service signed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewAccess {
    /// `/preview/TEAM/CAPABILITY/`, for a frame.
    pub url: String,
    /// Seconds it stays good: ask again before then.
    pub expires_in: i64,
}

/// `POST /api/preview/access` → `{url, expiresIn}`: where the member's browser opens the
/// team's preview (proxied by the gateway) for the next hour.
pub(crate) async fn access(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse, HttpError> {
    let opened = gw
        .preview
        .clone()
        .open_preview(bearer(pb::OpenPreviewRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(PreviewAccess {
        url: format!("/preview/{}/{}/", member.team_id, opened.capability),
        expires_in: (opened.expires_at_ms - covibe_types::now_ms()) / 1000,
    }))
}

/// `GET /api/preview/config` → `{config, webhookUrl}` (owners and admins).
pub(crate) async fn get_config(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let config = gw
        .preview
        .clone()
        .get_config(bearer(pb::GetPreviewConfigRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(PreviewConfigEnvelope {
        config: config_view(config),
        webhook_url: webhook_url(&headers, &member.team_id.to_string()),
    }))
}

/// `PUT /api/preview/config {...}` → `{config, webhookUrl, webhookSecret?}` (owners and admins).
pub(crate) async fn put_config(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PutPreviewConfig>,
) -> Result<impl IntoResponse, HttpError> {
    let config = pb::PreviewConfig {
        repository: body.repository,
        branch: body.branch,
        vm_id: body.vm_id.unwrap_or_default(),
        work_dir: body.work_dir.unwrap_or_default(),
        build_command: body.build_command.unwrap_or_default(),
        start_command: body.start_command,
        port: body.port,
        health_path: body.health_path.unwrap_or_default(),
        public_url: body.public_url.unwrap_or_default(),
        ..Default::default()
    };
    let answer = gw
        .preview
        .clone()
        .put_config(bearer(
            pb::PutPreviewConfigRequest {
                config: Some(config),
            },
            &member.token,
        ))
        .await?
        .into_inner();
    Ok(Json(PutPreviewConfigAnswer {
        config: config_view(answer.config.unwrap_or_default()),
        webhook_url: webhook_url(&headers, &member.team_id.to_string()),
        webhook_secret: some(answer.webhook_secret),
    }))
}

/// `POST /api/preview/config/webhook-secret` → 201 `{webhookUrl, webhookSecret}` (owners and
/// admins): the old secret is refused from now on.
pub(crate) async fn rotate_secret(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let answer = gw
        .preview
        .clone()
        .rotate_webhook_secret(bearer(pb::RotateWebhookSecretRequest {}, &member.token))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(WebhookSecret {
            webhook_url: webhook_url(&headers, &member.team_id.to_string()),
            webhook_secret: answer.webhook_secret,
        }),
    ))
}

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
    /// Why a signed delivery was not acted on (`ping`, `another branch`, ...).
    pub ignored: Option<String>,
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
    let answer = gw.preview.clone().receive_push(request).await?.into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookAck {
            accepted: answer.accepted,
            duplicate: answer.duplicate,
            commit: answer.preview.map(|p| p.commit),
            ignored: some(answer.ignored),
        }),
    ))
}
