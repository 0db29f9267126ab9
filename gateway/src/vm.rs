//! The caller's VMs: `POST /api/vm/register`, `PUT /api/vm/update`, `GET /api/vm/list`, each
//! one call to the vm-connector, which checks that a member only ever sees and changes their
//! own VMs (and validates names and strategies).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::vmconnector::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Gateway;
use crate::error::HttpError;
use crate::rest::{ApiJson, Member};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterVm {
    pub name: String,
    /// `local` when left out (the only strategy available so far).
    #[serde(default)]
    pub strategy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateVm {
    pub vm_id: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VmView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub strategy: String,
    /// Milliseconds since the Unix epoch; 0 when never used.
    pub last_seen: i64,
}

fn view(vm: pb::Vm) -> VmView {
    VmView {
        id: vm.id,
        user_id: vm.user_id,
        name: vm.name,
        strategy: vm.strategy,
        last_seen: vm.last_seen_ms,
    }
}

/// `POST /api/vm/register {name, strategy?}` → 201 `{vm}`.
pub(crate) async fn register(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<RegisterVm>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::RegisterVmRequest {
        name: body.name,
        strategy: body.strategy.unwrap_or_default(),
    };
    let vm = gw
        .vm_connector
        .clone()
        .register_vm(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(json!({"vm": view(vm)}))))
}

/// `PUT /api/vm/update {vmId, name}` → `{vm}`; another member's VM is 404.
pub(crate) async fn update(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<UpdateVm>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::UpdateVmRequest {
        vm_id: body.vm_id,
        name: body.name,
    };
    let vm = gw
        .vm_connector
        .clone()
        .update_vm(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(json!({"vm": view(vm)})))
}

/// `GET /api/vm/list` → `{vms}`: the caller's own VMs only.
pub(crate) async fn list(
    State(gw): State<Arc<Gateway>>,
    member: Member,
) -> Result<impl IntoResponse, HttpError> {
    let list = gw
        .vm_connector
        .clone()
        .list_vms(bearer(pb::ListVmsRequest {}, &member.token))
        .await?
        .into_inner();
    Ok(Json(
        json!({"vms": list.vms.into_iter().map(view).collect::<Vec<_>>()}),
    ))
}
