//! Proto <-> domain.

use covibe_proto::preview::v1 as pb;

use crate::model::{Preview, Push, PushOutcome};

impl From<Preview> for pb::Preview {
    fn from(p: Preview) -> Self {
        Self {
            team_id: p.team_id.to_string(),
            url: p.url,
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
        }
    }
}
