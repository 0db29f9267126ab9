//! Socket.io: `join_team` (and the other client events) and the relay of team events from the
//! hot store's fan-out to each team's room.
//!
//! Event handlers are registered in a connect *middleware*: socketioxide sends CONNECT before it
//! runs the connect handler, so handlers registered there can miss a client's first event.

use std::sync::Arc;

use covibe_bootstrap::bearer;
use covibe_proto::events::v1 as ev;
use covibe_proto::orchestrator::v1 as orch;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, Subscription};
use covibe_types::{TeamId, UserId};
use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

use crate::{Gateway, dto};

fn team_room(team: TeamId) -> String {
    format!("t:{team}")
}

fn user_room(user: &str) -> String {
    format!("u:{user}")
}

/// Who a socket joined as.
#[derive(Debug, Clone)]
struct Joined {
    user_id: UserId,
    team_id: TeamId,
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinTeam {
    team_id: String,
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpawnEvent {
    task: String,
    #[serde(default)]
    vm_id: Option<String>,
}

pub fn socket_layer(gateway: Arc<Gateway>) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder().with_state(gateway).build_layer();
    io.ns("/", (async |_socket: SocketRef| {}).with(register_handlers));
    (layer, io)
}

async fn register_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on("join_team", join_team);
    socket.on("agent_spawn", agent_spawn);
    socket.on("agent_control", agent_control);
    Ok(())
}

fn refuse(ack: AckSender, message: &str) {
    let _ = ack.send(&json!({"ok": false, "error": message}));
}

async fn join_team(
    socket: SocketRef,
    TryData(data): TryData<JoinTeam>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Ok(request) = data else {
        return refuse(ack, "join_team needs {teamId, token}");
    };
    let (user_id, team_id) = match gw.verifier.verify(&request.token).and_then(|p| p.member()) {
        Ok(member) => member,
        Err(err) => return refuse(ack, &err.message),
    };
    if request.team_id != team_id.to_string() {
        tracing::warn!(user_id = %user_id, "join_team refused: not a member of the requested team");
        return refuse(ack, "not a member of this team");
    }
    // One team per socket: a second join for another team replaces nothing.
    if let Some(previous) = socket.extensions.get::<Joined>()
        && previous.team_id != team_id
    {
        return refuse(ack, "this socket has already joined another team");
    }
    socket.extensions.insert(Joined {
        user_id,
        team_id,
        token: request.token,
    });
    socket.join([team_room(team_id), user_room(&user_id.to_string())]);
    let _ = ack
        .send(&json!({"ok": true, "teamId": team_id.to_string(), "userId": user_id.to_string()}));
}

async fn agent_spawn(
    socket: SocketRef,
    TryData(data): TryData<SpawnEvent>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Some(joined) = socket.extensions.get::<Joined>() else {
        return refuse(ack, "join a team first");
    };
    let Ok(spawn) = data else {
        return refuse(ack, "agent_spawn needs {task, vmId?}");
    };
    tracing::info!(user_id = %joined.user_id, team_id = %joined.team_id, "spawn requested over socket.io");
    let request = orch::SpawnAgentRequest {
        task: spawn.task,
        vm_id: spawn.vm_id.unwrap_or_default(),
    };
    match gw
        .orchestrator
        .clone()
        .spawn_agent(bearer(request, &joined.token))
        .await
    {
        Ok(agent) => {
            let _ = ack.send(&json!({"ok": true, "agent": dto::agent(agent.into_inner())}));
        }
        Err(status) => refuse(ack, &covibe_types::ApiError::from_status(&status).message),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ControlEvent {
    agent_id: String,
    command: String,
    #[serde(default)]
    data: Option<String>,
}

async fn agent_control(
    socket: SocketRef,
    TryData(data): TryData<ControlEvent>,
    ack: AckSender,
    State(gw): State<Arc<Gateway>>,
) {
    let Some(joined) = socket.extensions.get::<Joined>() else {
        return refuse(ack, "join a team first");
    };
    let Ok(control) = data else {
        return refuse(
            ack,
            "agent_control needs {agentId, command: kill | interrupt | input, data?}",
        );
    };
    let command = match crate::control::command(&control.command, control.data) {
        Ok(command) => command,
        Err(err) => return refuse(ack, &err.message),
    };
    let request = orch::ControlAgentRequest {
        agent_id: control.agent_id,
        command: Some(command),
    };
    match gw
        .orchestrator
        .clone()
        .control_agent(bearer(request, &joined.token))
        .await
    {
        Ok(_) => {
            let _ = ack.send(&json!({"ok": true}));
        }
        Err(status) => refuse(ack, &covibe_types::ApiError::from_status(&status).message),
    }
}

/// Relays every team event from the fan-out to the team's room. `agent_output` goes out twice:
/// with `canControl: true` to the owner's sockets, `false` to everyone else in the team.
pub async fn relay(io: SocketIo, mut subscription: Subscription) {
    while let Some(event) = subscription.recv().await {
        let bytes = match event {
            FanoutEvent::Message(bytes) => bytes,
            FanoutEvent::Gap => {
                // Tell every socket to resync from history: they may have missed events.
                let _ = io.emit("resync", &json!({"reason": "fan-out gap"})).await;
                continue;
            }
        };
        let Ok(event) = ev::TeamEvent::decode(bytes) else {
            tracing::warn!("undecodable team event dropped");
            continue;
        };
        let Ok(team) = event.team_id.parse::<TeamId>() else {
            continue;
        };
        match event.event {
            Some(ev::team_event::Event::AgentOutput(out)) => {
                let event = dto::event_value(out.event_json);
                let mut payload = dto::AgentOutput {
                    agent_id: &out.agent_id,
                    owner: &out.owner_id,
                    seq: out.seq,
                    stream: dto::stream_name(out.stream),
                    data: String::from_utf8_lossy(&out.data),
                    event: &event,
                    can_control: false,
                };
                let owner = user_room(&out.owner_id);
                emit(
                    io.to(team_room(team)).except(owner.clone()),
                    "agent_output",
                    &payload,
                )
                .await;
                payload.can_control = true;
                emit(io.to(owner), "agent_output", &payload).await;
            }
            Some(ev::team_event::Event::AgentStatus(status)) => {
                let payload = json!({
                    "agentId": status.agent_id,
                    "owner": status.owner_id,
                    "status": dto::status_name(status.status),
                    "exitCode": status.exit_code,
                    "task": status.task,
                    "at": status.at_ms,
                });
                emit(io.to(team_room(team)), "agent_status", &payload).await;
            }
            None => {}
        }
    }
    tracing::warn!("fan-out subscription ended");
}

async fn emit<T: serde::Serialize + ?Sized>(
    to: socketioxide::operators::BroadcastOperators,
    event: &str,
    payload: &T,
) {
    if let Err(err) = to.emit(event, payload).await {
        tracing::debug!(event, error = %err, "broadcast reached not every socket");
    }
}
