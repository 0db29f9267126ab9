//! The rules: a member reads their own team's preview; a push webhook is verified (HMAC-SHA256
//! over the raw body, constant-time) before anything of it is looked at, recorded once per
//! delivery id, and published as `preview_updated` on the team's fan-out.

use std::sync::Arc;

use covibe_storage::HotStore;
use covibe_types::{ApiError, TeamId, now_ms};

use crate::Error;
use crate::model::{Preview, Push, PushDelivery, PushOutcome};
use crate::store::PreviewStore;
use crate::webhook::{self, PushEvent, verify_signature};

pub struct PreviewDomain {
    store: Arc<dyn PreviewStore>,
    hot: Arc<dyn HotStore>,
    /// The deployment's webhook secret; `None` refuses every webhook.
    webhook_secret: Option<Vec<u8>>,
}

impl PreviewDomain {
    pub fn new(
        store: Arc<dyn PreviewStore>,
        hot: Arc<dyn HotStore>,
        webhook_secret: Option<String>,
    ) -> Self {
        Self {
            store,
            hot,
            webhook_secret: webhook_secret
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
        }
    }

    /// The team's preview (`none` before its first push).
    pub async fn preview(&self, team: TeamId) -> Result<Preview, Error> {
        Ok(self.store.get(team).await?.unwrap_or(Preview {
            team_id: team,
            url: String::new(),
            commit: String::new(),
            status: "none".to_owned(),
            updated_at_ms: 0,
        }))
    }

    /// A webhook delivery: verified, then recorded once and published.
    pub async fn receive_push(&self, r: Push) -> Result<PushOutcome, Error> {
        let Some(secret) = &self.webhook_secret else {
            tracing::warn!(target: "audit", action = "webhook.push", outcome = "refused",
                reason = "not_configured", team = %r.team_id, delivery_id = %r.delivery_id,
                "webhook refused: no webhook secret is configured");
            return Err(ApiError::new(
                covibe_types::Code::Unavailable,
                "webhooks are not configured (set preview.webhook_secret)",
            )
            .into());
        };
        // The signature first: nothing from an unsigned request is looked at further.
        if let Err(reason) = verify_signature(secret, &r.signature_256, &r.body) {
            tracing::warn!(target: "audit", action = "webhook.push", outcome = "refused",
                reason = reason.as_str(), team = %r.team_id, delivery_id = %r.delivery_id,
                event = %r.event, body_bytes = r.body.len(), "webhook signature refused");
            return Err(ApiError::unauthenticated(reason.message()).into());
        }
        let team: TeamId = r.team_id.parse().map_err(|_| {
            ApiError::invalid("invalid team id (the webhook url needs ?team=TEAM_ID)")
        })?;
        if r.event != "push" {
            tracing::info!(team_id = %team, event = %r.event, delivery_id = %r.delivery_id,
                "webhook event ignored");
            return Ok(PushOutcome::default());
        }
        if r.delivery_id.is_empty()
            || r.delivery_id.len() > 128
            || !r.delivery_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ApiError::invalid("missing or invalid X-GitHub-Delivery header").into());
        }
        let push = PushEvent::parse(&r.body).map_err(ApiError::invalid)?;
        if push.deleted {
            tracing::info!(team_id = %team, git_ref = %push.git_ref, "branch deletion ignored");
            return Ok(PushOutcome::default());
        }
        let delivery = PushDelivery {
            delivery_id: r.delivery_id,
            team_id: team,
            commit: push.after.clone(),
            received_at_ms: now_ms(),
        };
        let Some(preview) = self.store.record_push(&delivery).await? else {
            tracing::info!(team_id = %team, delivery_id = %delivery.delivery_id,
                "webhook redelivery: already recorded");
            return Ok(PushOutcome {
                accepted: true,
                duplicate: true,
                preview: self.store.get(team).await?,
            });
        };
        tracing::info!(target: "audit", action = "webhook.push", outcome = "accepted",
            team_id = %team, delivery_id = %delivery.delivery_id, commit = %preview.commit,
            repository = %push.repository, git_ref = %push.git_ref, "push recorded");
        let event = webhook::preview_updated(&preview, &push);
        // Recorded is what counts: a fan-out outage only delays what viewers see until they
        // read the preview again.
        if let Err(err) = self.hot.publish(team, event).await {
            tracing::warn!(team_id = %team, error = %err, "could not publish preview_updated");
        }
        Ok(PushOutcome {
            accepted: true,
            duplicate: false,
            preview: Some(preview),
        })
    }
}
