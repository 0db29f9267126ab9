//! Agents: spawn, list, read, history and control, over REST and Socket.io alike. Spawn and
//! control are written once (`spawn_agent`, `control_agent`); the orchestrator checks the
//! caller itself (agents: read all, control your own).

pub(crate) mod json;
pub(crate) mod permissions;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::common::v1 as common;
use covibe_proto::orchestrator::v1 as orch;
use covibe_proto::vmagent::v1::{Command, Input, Interrupt, Kill, command};
use covibe_types::ApiError;
use serde_json::json;

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::realtime::socket::{Ack, Data, SocketRef, acting, refuse};
use crate::state::Gateway;
use json::{ControlEvent, OutputQuery, Spawn};

type Result<T> = std::result::Result<T, HttpError>;

/// Largest input a client may type into an agent at once.
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// The agent command a client names: `kill`, `interrupt` or `input` (with its data).
fn command(name: &str, data: Option<String>) -> std::result::Result<Command, ApiError> {
    let command = match name {
        "kill" => command::Command::Kill(Kill { grace_ms: 0 }),
        "interrupt" => command::Command::Interrupt(Interrupt {}),
        "input" => {
            let mut data = data.ok_or_else(|| ApiError::invalid("input needs data"))?;
            if data.len() > MAX_INPUT_BYTES {
                return Err(ApiError::invalid(format!(
                    "input is longer than {MAX_INPUT_BYTES} bytes"
                )));
            }
            if !data.ends_with('\n') {
                data.push('\n');
            }
            command::Command::Input(Input {
                data: data.into_bytes(),
            })
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown command {other:?}: use kill, interrupt or input"
            )));
        }
    };
    Ok(Command {
        command: Some(command),
    })
}

/// Starts an agent on one of the caller's VMs (their default one when `vm_id` is empty).
async fn spawn_agent(gw: &Gateway, token: &str, spawn: Spawn) -> Result<common::Agent> {
    let request = orch::SpawnAgentRequest {
        task: spawn.task,
        vm_id: spawn.vm_id.unwrap_or_default(),
    };
    Ok(gw
        .orchestrator
        .clone()
        .spawn_agent(bearer(request, token))
        .await?
        .into_inner())
}

/// Passes a command to one of the caller's agents.
async fn control_agent(
    gw: &Gateway,
    token: &str,
    agent_id: String,
    name: &str,
    data: Option<String>,
) -> Result<()> {
    let request = orch::ControlAgentRequest {
        agent_id,
        command: Some(command(name, data)?),
    };
    gw.orchestrator
        .clone()
        .control_agent(bearer(request, token))
        .await?;
    Ok(())
}

// REST

/// `POST /api/agent/spawn {task, vmId?}` → 201 `{agent}`.
pub(crate) async fn spawn(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<Spawn>,
) -> Result<impl IntoResponse> {
    tracing::info!(user_id = %member.user_id, team_id = %member.team_id, "spawn requested over rest");
    let agent = spawn_agent(&gw, &member.token, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json::AgentEnvelope {
            agent: json::agent(agent),
        }),
    ))
}

/// `GET /api/agent/list` → `{agents}`.
pub(crate) async fn list(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse> {
    let list = gw
        .orchestrator
        .clone()
        .list_agents(bearer(orch::ListAgentsRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::AgentList {
        agents: list.agents.into_iter().map(json::agent).collect(),
    }))
}

/// `GET /api/agent/{id}` → `{agent}`.
pub(crate) async fn get(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let agent = gw
        .orchestrator
        .clone()
        .get_agent(bearer(
            orch::GetAgentRequest { agent_id: id },
            &member.token,
        ))
        .await?;
    Ok(Json(json::AgentEnvelope {
        agent: json::agent(agent.into_inner()),
    }))
}

/// `DELETE /api/agent/{id}` → 202: kills one of the caller's agents.
pub(crate) async fn kill(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    control_agent(&gw, &member.token, id, "kill", None).await?;
    Ok((StatusCode::ACCEPTED, Json(json::Accepted { ok: true })))
}

/// `GET /api/agent/{id}/output?fromSeq&limit` → a page of history.
pub(crate) async fn output(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
    query: std::result::Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let request = orch::GetOutputRequest {
        agent_id: id.clone(),
        from_seq: query.from_seq,
        limit: query.limit.unwrap_or(0),
    };
    let page = gw
        .orchestrator
        .clone()
        .get_output(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(json::output_page(id, page)))
}

// Socket.io

/// `agent_spawn {task, vmId?}` → ack `{ok, agent}`.
pub(crate) async fn on_spawn(socket: SocketRef, data: Data<Spawn>, ack: Ack, gw: Arc<Gateway>) {
    let Some((joined, spawn, ack)) = acting(&socket, data, ack, "agent_spawn needs {task, vmId?}")
    else {
        return;
    };
    tracing::info!(user_id = %joined.user_id, team_id = %joined.team_id, "spawn requested over socket.io");
    match spawn_agent(&gw, &joined.token, spawn).await {
        Ok(agent) => ack.send(&json!({"ok": true, "agent": json::agent(agent)})),
        Err(err) => refuse(ack, err.0),
    }
}

/// `agent_control {agentId, command: kill | interrupt | input, data?}` → ack `{ok}`.
pub(crate) async fn on_control(
    socket: SocketRef,
    data: Data<ControlEvent>,
    ack: Ack,
    gw: Arc<Gateway>,
) {
    let usage = "agent_control needs {agentId, command: kill | interrupt | input, data?}";
    let Some((joined, control, ack)) = acting(&socket, data, ack, usage) else {
        return;
    };
    let result = control_agent(
        &gw,
        &joined.token,
        control.agent_id,
        &control.command,
        control.data,
    )
    .await;
    match result {
        Ok(()) => ack.send(&json!({"ok": true})),
        Err(err) => refuse(ack, err.0),
    }
}
