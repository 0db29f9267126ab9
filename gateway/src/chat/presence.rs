//! The presence this gateway holds. The gateway is one presence holder (an instance id made
//! at start, so a restarted gateway is a new one): for each member joined here it tells the
//! team service one entry, merged from the member's sockets here: their statuses (`busy` over
//! `online` over `away`; "still here" when none chose one) and every agent they watch. The
//! team service merges the entries of every holder.
//!
//! The entry is sent when a socket joins, chooses a status, watches an agent or disconnects,
//! and repeated every heartbeat (a third of the presence TTL) while the member stays; when
//! their last socket here goes it is `offline`, which withdraws this holder's entry. Should
//! this gateway die, its entries expire and the team service tells the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use covibe_bootstrap::bearer;
use covibe_proto::team::v1 as pb;
use covibe_proto::tonic;
use covibe_types::{AgentId, ApiError, TeamId, UserId};
use futures::StreamExt;

use crate::realtime::socket::{Joined, SocketIo, SocketRef, SocketState};
use crate::state::Gateway;

/// Presence calls made on a socket's behalf give up after this long (they never hold up a
/// disconnect for long).
const PRESENCE_CALL: Duration = Duration::from_secs(5);

/// Which status a member's sockets that disagree show, as the team service ranks them.
fn rank(status: pb::PresenceStatus) -> u8 {
    match status {
        pb::PresenceStatus::Busy => 3,
        pb::PresenceStatus::Online => 2,
        pb::PresenceStatus::Away => 1,
        pb::PresenceStatus::Offline | pb::PresenceStatus::Unspecified => 0,
    }
}

/// What this gateway says of a member: from their sockets here, the entry and the seat whose
/// token lasts longest to say it with.
struct Entry {
    status: pb::PresenceStatus,
    watching: Vec<String>,
    speaker: Joined,
}

fn entry_of(sockets: &[SocketRef], fallback: &Joined) -> Entry {
    let mut chosen: Option<pb::PresenceStatus> = None;
    let mut still_here = false;
    let mut watching: BTreeSet<AgentId> = BTreeSet::new();
    let mut speaker = fallback.clone();
    for socket in sockets {
        let state = socket.state();
        let Some(joined) = &state.joined else {
            continue;
        };
        if joined.expires_at_ms() > speaker.expires_at_ms() {
            speaker = joined.clone();
        }
        match state.presence {
            None => still_here = true,
            Some(pb::PresenceStatus::Offline | pb::PresenceStatus::Unspecified) => {}
            Some(status) if chosen.is_none_or(|c| rank(status) > rank(c)) => {
                chosen = Some(status);
            }
            Some(_) => {}
        }
        watching.extend(state.watching);
    }
    let status = match chosen {
        Some(status) => status,
        None if still_here => pb::PresenceStatus::Unspecified,
        // No socket left, or every one chose to look offline.
        None => pb::PresenceStatus::Offline,
    };
    Entry {
        status,
        watching: watching.iter().map(ToString::to_string).collect(),
        speaker,
    }
}

/// Tells the team service what this gateway says of `joined`'s member now, from their sockets
/// seated here (`joined` speaks for them when none is left).
pub(crate) async fn speak_for(gw: &Gateway, joined: &Joined) -> Result<pb::TeamPresence, ApiError> {
    let _turn = gw.presence_holder.turn(joined.user_id).await;
    let sockets = gw.rooms.member_sockets(joined.team_id, joined.user_id);
    let entry = entry_of(&sockets, joined);
    let request = bearer(
        pb::UpdatePresenceRequest {
            status: entry.status.into(),
            holder: gw.presence_holder.id.clone(),
            watching: entry.watching,
        },
        entry.speaker.live_token()?,
    );
    let call = async {
        // A burst of joins (a reconnect storm) queues here rather than opening thousands of
        // calls at once, whose buffers the allocator would keep long after.
        let _permit = gw.presence_calls.acquire().await;
        gw.team.clone().update_presence(request).await
    };
    match tokio::time::timeout(PRESENCE_CALL, call).await {
        Ok(Ok(presence)) => Ok(presence.into_inner()),
        Ok(Err(status)) => Err(ApiError::from_status(&status)),
        Err(_) => Err(ApiError::from_status(&tonic::Status::unavailable(
            "the team service did not answer in time",
        ))),
    }
}

/// [`speak_for`] where nobody waits for the answer: a failure is only logged (an expired token
/// ends presence until the client joins again with a fresh one).
async fn refresh(gw: &Gateway, joined: &Joined, sid: covibe_socketio::Sid) {
    if let Err(err) = speak_for(gw, joined).await {
        tracing::debug!(sid, user_id = %joined.user_id, error = %err.message, "presence not recorded");
    }
}

/// Called once a socket has joined its team: its member is present, and stays so while the
/// socket is connected.
pub(crate) async fn joined(gw: &Arc<Gateway>, socket: &SocketRef) {
    if let Some(joined) = SocketState::joined(socket) {
        refresh(gw, &joined, socket.id).await;
    }
}

/// Called when a socket disconnects (after it left its room): what it watched is no longer
/// watched, and its member goes `offline` here unless another of their sockets stays.
pub(crate) async fn disconnected(gw: &Gateway, socket: &SocketRef) {
    if let Some(joined) = SocketState::joined(socket) {
        refresh(gw, &joined, socket.id).await;
    }
}

/// Every heartbeat, repeats the entry of each member joined on this gateway: one call per
/// member (not per socket), from one task (not one per socket).
pub(crate) async fn refresh_presence(io: SocketIo, gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gw.presence_holder.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut members: HashMap<(TeamId, UserId), (Joined, covibe_socketio::Sid)> = HashMap::new();
        for socket in io.sockets() {
            if let Some(joined) = SocketState::joined(&socket) {
                members
                    .entry((joined.team_id, joined.user_id))
                    .or_insert((joined, socket.id));
            }
        }
        futures::stream::iter(members.into_values())
            .for_each_concurrent(16, |(joined, sid)| {
                let gw = gw.clone();
                async move { refresh(&gw, &joined, sid).await }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_over_online_over_away() {
        assert!(rank(pb::PresenceStatus::Busy) > rank(pb::PresenceStatus::Online));
        assert!(rank(pb::PresenceStatus::Online) > rank(pb::PresenceStatus::Away));
        assert!(rank(pb::PresenceStatus::Away) > rank(pb::PresenceStatus::Offline));
    }
}
