//! `join_team {teamId, token, since?}`: the socket's member, checked like any REST call, is
//! seated in the team's room; what a reconnecting client missed is replayed before it goes
//! live.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::member::Member;
use crate::realtime::resume;
use crate::realtime::socket::{Ack, Data, Joined, SocketRef, SocketState, invalid, refuse};
use crate::state::Gateway;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinTeam {
    team_id: String,
    token: String,
    /// Per agent, the last `seq` the client has: what it missed is replayed before live events.
    #[serde(default)]
    since: HashMap<String, i64>,
}

/// Agents one `since` may name: each is a history read on join.
pub(crate) const MAX_SINCE_AGENTS: usize = 256;

pub(crate) async fn join_team(socket: SocketRef, data: Data<JoinTeam>, ack: Ack, gw: Arc<Gateway>) {
    let Ok(request) = data else {
        return refuse(ack, invalid("join_team needs {teamId, token}"));
    };
    if request.since.len() > MAX_SINCE_AGENTS {
        return refuse(
            ack,
            invalid(&format!(
                "join_team's since names at most {MAX_SINCE_AGENTS} agents: keep the ones on \
                 screen, the others' history is read over REST"
            )),
        );
    }
    let verified =
        gw.verifier
            .verify_expiring(&request.token)
            .and_then(|(principal, expires_at_ms)| {
                Ok((principal.member()?, principal.session()?, expires_at_ms))
            });
    let ((user_id, team_id), session_id, expires_at_ms) = match verified {
        Ok(verified) => verified,
        Err(err) => return refuse(ack, err),
    };
    if request.team_id != team_id.to_string() {
        tracing::warn!(user_id = %user_id, "join_team refused: not a member of the requested team");
        return refuse(
            ack,
            covibe_types::ApiError::forbidden("not a member of this team"),
        );
    }
    let previous = SocketState::joined(&socket);
    // One team per socket: a second join for another team replaces nothing.
    if let Some(previous) = &previous
        && previous.team_id != team_id
    {
        return refuse(ack, invalid("this socket has already joined another team"));
    }
    let member = Member {
        user_id,
        team_id,
        session_id,
        token: request.token,
    };
    let delivered = previous
        .map(|previous| previous.delivered.clone())
        .unwrap_or_default();
    let joined = Joined::new(member, expires_at_ms, delivered);
    socket.state().joined = Some(joined.clone());
    gw.rooms.seat(&socket, &joined);
    let resumed = resume::join(&gw, &socket, &joined, request.since).await;
    ack.send(&json!({
        "ok": true,
        "teamId": team_id.to_string(),
        "userId": user_id.to_string(),
        "tokenExpiresAt": expires_at_ms,
        "resumed": resumed,
    }));
    crate::chat::joined(&gw, &socket).await;
    crate::agents::permissions::joined(&gw, &socket).await;
}
