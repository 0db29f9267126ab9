//! Resume: a client that reconnects says, per agent, the last `seq` it has
//! (`join_team {teamId, token, since: {agentId: seq}}`) and receives exactly the missing output
//! before any live event, with no gap and no duplicate. While it replays history the socket is
//! not in the team's room; the relay buffers the team's live events for it instead. Then, under
//! the hub's lock, the buffer is flushed (skipping what history already gave) and the socket
//! joins the room. History it asks for that is gone is reported, never skipped silently.

use std::collections::HashMap;
use std::time::Duration;

use covibe_bootstrap::bearer;
use covibe_proto::orchestrator::v1 as orch;
use covibe_proto::tonic::Code;
use covibe_types::AgentId;
use serde_json::{Value, json};

use crate::agents::json as agents_json;
use crate::realtime::frames::{Prepared, Resync};
use crate::realtime::hub::Recovery;
use crate::realtime::relay::fell_behind;
use crate::realtime::socket::{Joined, SocketRef};
use crate::state::Gateway;

/// History chunks fetched per call.
const PAGE: u32 = 1_000;
/// How long replay waits for a socket that does not drain its queue.
const REPLAY_GIVE_UP: Duration = Duration::from_secs(30);
/// How long one resume waits, in all, for output that was published but is not durable yet, and
/// how often it looks (output becomes durable within milliseconds unless the database is in
/// trouble).
const HISTORY_CATCH_UP: Duration = Duration::from_secs(5);
const HISTORY_POLL: Duration = Duration::from_millis(20);

/// Queues an event on a socket, waiting while its queue is full (replay is the one place where
/// we wait for a client: it asked for this history); an error says why the socket must resync
/// instead.
async fn deliver_waiting(
    socket: &SocketRef,
    joined: &Joined,
    event: &Prepared,
) -> Result<(), Resync> {
    let deadline = tokio::time::Instant::now() + REPLAY_GIVE_UP;
    loop {
        match event.deliver(socket, joined) {
            Ok(()) => return Ok(()),
            Err(Resync::SlowConsumer)
                if socket.connected() && tokio::time::Instant::now() < deadline =>
            {
                let _ = tokio::time::timeout_at(deadline, socket.wait_for_room()).await;
            }
            Err(why) => return Err(why),
        }
    }
}

/// Whether the event is output the replay sent already (`last_sent`: per agent, the last seq).
fn replayed(event: &Prepared, last_sent: &HashMap<String, u64>) -> bool {
    event
        .output_seq()
        .is_some_and(|(agent, seq)| last_sent.get(agent).is_some_and(|last| seq <= *last))
}

enum Replayed {
    /// The last seq sent (None when there was nothing newer), how many were sent, and the
    /// agent's status when the replay began (a status event missed meanwhile is not replayed).
    Sent(Option<u64>, u64, &'static str),
    NotFound,
    HistoryLost {
        available_from: u64,
    },
    Failed,
}

async fn replay(
    gw: &Gateway,
    socket: &SocketRef,
    joined: &Joined,
    agent_id: &str,
    from: u64,
    catch_up_until: tokio::time::Instant,
) -> Replayed {
    let mut orchestrator = gw.orchestrator.clone();
    let agent = match orchestrator
        .get_agent(bearer(
            orch::GetAgentRequest {
                agent_id: agent_id.to_owned(),
            },
            &joined.token,
        ))
        .await
    {
        Ok(agent) => agent.into_inner(),
        Err(status)
            if matches!(
                status.code(),
                Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
            ) =>
        {
            return Replayed::NotFound;
        }
        Err(status) => {
            tracing::warn!(agent_id, error = %status, "resume: could not read the agent");
            return Replayed::Failed;
        }
    };
    let (mut last, mut count) = (None, 0u64);
    let fetch = |from_seq: u64| {
        let request = orch::GetOutputRequest {
            agent_id: agent_id.to_owned(),
            from_seq,
            limit: PAGE,
        };
        let mut orchestrator = gw.orchestrator.clone();
        let request = bearer(request, &joined.token);
        // Fetched in the background, so the next page is on its way while this one is sent.
        tokio::spawn(async move { orchestrator.get_output(request).await })
    };
    let mut next = from;
    let mut pending = Some(fetch(next));
    while let Some(fetching) = pending.take() {
        let page = match fetching.await {
            Ok(Ok(page)) => page.into_inner(),
            Ok(Err(status)) => {
                tracing::warn!(agent_id, error = %status, "resume: could not read history");
                return Replayed::Failed;
            }
            Err(err) => {
                tracing::warn!(agent_id, error = %err, "resume: history read did not finish");
                return Replayed::Failed;
            }
        };
        let Some(first) = page.chunks.first() else {
            // Live output buffered meanwhile starts further on: what lies between was published
            // but is not durable yet (history stops at what is). It will be: read it again.
            let ahead = gw.hub.lock().first_buffered(socket.id, agent_id);
            if ahead.is_some_and(|first| first > next)
                && tokio::time::Instant::now() < catch_up_until
            {
                tokio::time::sleep(HISTORY_POLL).await;
                pending = Some(fetch(next));
                continue;
            }
            break;
        };
        if first.seq != next {
            return Replayed::HistoryLost {
                available_from: first.seq,
            };
        }
        next = page.next_seq;
        // Where the live events buffered meanwhile begin, history is no longer needed.
        if !gw.hub.lock().buffered_from(socket.id, agent_id, next) {
            pending = Some(fetch(next));
        }
        for chunk in page.chunks {
            let seq = chunk.seq;
            let event = Prepared::output(
                agent.id.clone(),
                agent.owner_id.clone(),
                seq,
                chunk.stream,
                &chunk.data,
                chunk.event_json,
            );
            let sent = match &event {
                Some(event) => deliver_waiting(socket, joined, event).await.is_ok(),
                None => false,
            };
            if !sent {
                if let Some(fetching) = pending {
                    fetching.abort();
                }
                return Replayed::Failed;
            }
            last = Some(seq);
            count += 1;
        }
    }
    Replayed::Sent(last, count, agents_json::status_name(agent.status))
}

/// Joins `socket` to its team's rooms, first replaying what it missed of each agent in `since`
/// (agent id → last seq it has; a negative value means it has nothing yet). Returns the report
/// the `join_team` acknowledgement carries.
pub(crate) async fn join(
    gw: &Gateway,
    socket: &SocketRef,
    joined: &Joined,
    since: HashMap<String, i64>,
) -> Value {
    if since.is_empty() {
        gw.rooms.set_live(joined.team_id, socket.id, true);
        return json!({});
    }
    gw.hub.lock().sockets.insert(
        socket.id,
        Recovery {
            team: joined.team_id,
            events: Vec::new(),
            bytes: 0,
            first_buffered: HashMap::new(),
            missed: None,
        },
    );
    let catch_up_until = tokio::time::Instant::now() + HISTORY_CATCH_UP;
    let mut last_sent: HashMap<String, u64> = HashMap::new();
    let mut report = serde_json::Map::new();
    for (agent_id, last) in since {
        let Ok(agent) = agent_id.parse::<AgentId>() else {
            report.insert(agent_id, json!({"error": "not_found"}));
            continue;
        };
        let from = u64::try_from(last.saturating_add(1)).unwrap_or(0);
        joined.delivered.reset(agent, from.checked_sub(1));
        let outcome = match replay(gw, socket, joined, &agent_id, from, catch_up_until).await {
            Replayed::Sent(last, count, status) => {
                if let Some(last) = last {
                    last_sent.insert(agent_id.clone(), last);
                } else if from > 0 {
                    last_sent.insert(agent_id.clone(), from - 1);
                }
                json!({"replayed": count, "status": status})
            }
            // Live output of an agent whose history could not be replayed is sent as it comes
            // (the acknowledgement says what went wrong), not taken for a gap.
            Replayed::NotFound => {
                joined.delivered.reset(agent, None);
                json!({"error": "not_found"})
            }
            Replayed::HistoryLost { available_from } => {
                joined.delivered.reset(agent, None);
                let _ = socket.emit("resync", &json!({"agentId": agent_id, "reason": "history_lost", "availableFrom": available_from}));
                json!({"error": "history_lost", "availableFrom": available_from})
            }
            Replayed::Failed => {
                joined.delivered.reset(agent, None);
                json!({"error": "unavailable"})
            }
        };
        report.insert(agent_id, outcome);
    }
    // What arrived live meanwhile goes out in turns while the relay keeps buffering, each
    // event when the socket's queue has room, as replay does (a long replay can leave more
    // buffered than the queue holds); the last turn, once the queue has room for all of it, is
    // sent and the room joined atomically with respect to the relay.
    loop {
        let turn = {
            let mut recovering = gw.hub.lock();
            let Some(recovery) = recovering.sockets.get_mut(&socket.id) else {
                break;
            };
            if recovery.missed.is_some()
                || !socket.connected()
                || socket.has_room_for(recovery.events.len(), recovery.bytes)
            {
                break;
            }
            recovery.bytes = 0;
            std::mem::take(&mut recovery.events)
        };
        for event in turn.iter().filter(|e| !replayed(e, &last_sent)) {
            if let Err(why) = deliver_waiting(socket, joined, event).await {
                gw.hub.lock().sockets.remove(&socket.id);
                fell_behind(gw, socket.clone(), joined.team_id, why);
                return json!(report);
            }
        }
    }
    let mut recovering = gw.hub.lock();
    let recovery = recovering.sockets.remove(&socket.id);
    if let Some(recovery) = &recovery {
        tracing::info!(
            sid = socket.id,
            buffered = recovery.events.len(),
            missed = ?recovery.missed,
            last_sent = ?last_sent,
            "resume: history replayed, flushing live events"
        );
    }
    if let Some(recovery) = recovery {
        for event in recovery.events.iter().filter(|e| !replayed(e, &last_sent)) {
            if let Err(why) = event.deliver(socket, joined) {
                drop(recovering);
                fell_behind(gw, socket.clone(), joined.team_id, why);
                return json!(report);
            }
        }
        if let Some(why) = recovery.missed {
            drop(recovering);
            let _ = socket.emit("resync", &why.payload());
            return json!(report);
        }
    }
    gw.rooms.set_live(joined.team_id, socket.id, true);
    drop(recovering);
    Value::Object(report)
}
