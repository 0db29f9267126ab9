//! The caller's VMs: `POST /api/vm/register`, `PUT /api/vm/update`, `POST /api/vm/token`,
//! `GET /api/vm/list`, each
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

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::state::Gateway;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterVm {
    pub name: String,
    /// `local` when left out, or `dial_in`.
    #[serde(default)]
    pub strategy: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateVm {
    pub vm_id: String,
    pub name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateVmToken {
    pub vm_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VmView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub strategy: String,
    /// Milliseconds since the Unix epoch; 0 when never used.
    pub last_seen: i64,
}

/// `{vm}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VmEnvelope {
    pub vm: VmView,
}

/// `{vms}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VmList {
    pub vms: Vec<VmView>,
}

/// A VM's dial-in token, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VmToken {
    pub vm_token: String,
    /// Where the daemon dials in (`covibe vm-agent daemon --connector URL`).
    pub connector_url: String,
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
    Ok((StatusCode::CREATED, Json(VmEnvelope { vm: view(vm) })))
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
    Ok(Json(VmEnvelope { vm: view(vm) }))
}

/// `POST /api/vm/token {vmId}` → 201 `{vmToken}`: a fresh token for one of the caller's own
/// `dial_in` VMs, replacing the previous one.
pub(crate) async fn create_token(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<CreateVmToken>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::CreateVmTokenRequest { vm_id: body.vm_id };
    let minted = gw
        .vm_connector
        .clone()
        .create_vm_token(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(VmToken {
            vm_token: minted.vm_token,
            connector_url: gw.dial_in_url.clone(),
        }),
    ))
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
    Ok(Json(VmList {
        vms: list.vms.into_iter().map(view).collect(),
    }))
}
