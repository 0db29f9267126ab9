//! Proto <-> domain.

use covibe_proto::preview::v1 as pb;

use crate::model::{Deployment, Preview, PreviewConfig, Push, PushOutcome};

impl From<Preview> for pb::Preview {
    fn from(p: Preview) -> Self {
        Self {
            team_id: p.team_id.to_string(),
            url: p.url,
            upstream: p.upstream,
            commit: p.commit,
            status: p.status,
            updated_at_ms: p.updated_at_ms,
        }
    }
}

impl From<pb::ReceivePushRequest> for Push {
    fn from(r: pb::ReceivePushRequest) -> Self {
        Self {
            team_id: r.team_id,
            delivery_id: r.delivery_id,
            signature_256: r.signature_256,
            event: r.event,
            body: r.body,
        }
    }
}

impl From<PushOutcome> for pb::ReceivePushResponse {
    fn from(o: PushOutcome) -> Self {
        Self {
            accepted: o.accepted,
            duplicate: o.duplicate,
            preview: o.preview.map(Into::into),
            ignored: o.ignored,
        }
    }
}

/// A team's configuration as the API shows it (`configured: false` before the first one).
pub(crate) fn config_pb(config: Option<PreviewConfig>) -> pb::PreviewConfig {
    let Some(c) = config else {
        return pb::PreviewConfig::default();
    };
    pb::PreviewConfig {
        repository: c.repository,
        branch: c.branch,
        vm_id: c.vm_id,
        work_dir: c.work_dir,
        build_command: c.build_command,
        start_command: c.start_command,
        port: u32::from(c.port),
        health_path: c.health_path,
        public_url: c.public_url,
        updated_by: c.updated_by,
        updated_at_ms: c.updated_at_ms,
        configured: true,
    }
}

/// A configuration a member sent; a port out of range is refused.
pub(crate) fn config_of(c: pb::PreviewConfig) -> Result<PreviewConfig, covibe_types::ApiError> {
    Ok(PreviewConfig {
        repository: c.repository,
        branch: c.branch,
        vm_id: c.vm_id,
        work_dir: c.work_dir,
        build_command: c.build_command,
        start_command: c.start_command,
        port: u16::try_from(c.port)
            .map_err(|_| covibe_types::ApiError::invalid("port must be 1 to 65535"))?,
        health_path: c.health_path,
        public_url: c.public_url,
        updated_by: String::new(),
        updated_at_ms: 0,
    })
}

pub(crate) fn deployment_pb(d: Deployment) -> pb::Deployment {
    pb::Deployment {
        id: d.id,
        commit: d.commit,
        trigger: d.trigger,
        requested_by: d.requested_by,
        status: d.status,
        attempts: d.attempts,
        created_at_ms: d.created_at_ms,
        started_at_ms: d.started_at_ms,
        finished_at_ms: d.finished_at_ms,
        log_tail: d.log_tail,
    }
}
