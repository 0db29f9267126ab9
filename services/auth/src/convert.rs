//! Domain -> proto.

use covibe_proto::auth::v1 as pb;
use covibe_types::SessionId;

use crate::model::{IssuedTokens, Session};

pub(crate) fn tokens_pb(t: IssuedTokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        access_expires_at_ms: t.access_expires_at_ms,
    }
}

pub(crate) fn session_pb(s: &Session, current: SessionId) -> pb::Session {
    pb::Session {
        id: s.id.to_string(),
        device_name: s.device_name.clone(),
        created_at_ms: s.created_at_ms,
        last_used_at_ms: s.last_used_at_ms,
        current: s.id == current,
    }
}

pub(crate) fn code_pb(code: String, expires_at_ms: i64) -> pb::SignInCode {
    pb::SignInCode {
        qr_payload: format!("covibe:sign-in?code={code}"),
        code,
        expires_at_ms,
    }
}
