//! The caller's VMs: register, update, get, delete, replace a credential, accept a changed host
//! key, read the audit log, mint a dial-in token, list. Each is one call to the vm-connector,
//! which checks that a member only ever sees and changes their own VMs and validates every
//! field. A credential goes in and never comes out: no answer carries one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use covibe_bootstrap::bearer;
use covibe_proto::vmconnector::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::http::error::HttpError;
use crate::http::extract::ApiJson;
use crate::member::Member;
use crate::state::Gateway;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterVm {
    pub name: String,
    /// `local` when left out, `dial_in`, or `ssh_proxy`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// `ssh_proxy`: the VM's host name or address.
    #[serde(default)]
    pub host: Option<String>,
    /// `ssh_proxy`: 22 when left out.
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub username: Option<String>,
    /// `ssh_proxy`: an OpenSSH or PEM private key (exactly one of it or `password`).
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub passphrase: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Where agents work on the VM; the login's home directory when left out.
    #[serde(default)]
    pub project_dir: Option<String>,
}

/// Written by hand so that no log line can carry the secret.
impl std::fmt::Debug for RegisterVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterVm")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateVm {
    pub vm_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub project_dir: Option<String>,
    /// `true` makes it the VM used when a spawn names none.
    #[serde(default)]
    pub is_default: Option<bool>,
}

/// A new secret for an `ssh_proxy` VM: exactly one of `privateKey` or `password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReplaceVmCredential {
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub passphrase: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AcceptHostKey {
    /// The pending fingerprint the owner was shown (`SHA256:...`).
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditQuery {
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One audit record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor_id: String,
    /// `vm.register`, `ssh.start`, `agent.kill`, ...
    pub action: String,
    pub vm_id: Option<String>,
    pub agent_id: Option<String>,
    pub strategy: Option<String>,
    /// Hex SHA-256 of the command run on the VM.
    pub command_digest: Option<String>,
    /// `ok`, `error`, `requested` or `refused`.
    pub result: String,
    pub detail: Option<String>,
}

/// `{entries}`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    pub entries: Vec<AuditEntry>,
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
    /// Used when a spawn names no VM.
    pub is_default: bool,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub username: Option<String>,
    pub project_dir: Option<String>,
    /// `key` or `password`: the kind only, never the secret.
    pub credential: Option<String>,
    /// `SHA256:...` of the pinned host key.
    pub host_key_fingerprint: Option<String>,
    /// A changed host key the VM presented and was refused for, until the owner accepts it.
    pub pending_host_key_fingerprint: Option<String>,
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch; 0 when none.
    pub last_error_at: i64,
    /// A dial-in daemon attached, or an SSH connection up.
    pub connected: bool,
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

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn view(vm: pb::Vm) -> VmView {
    VmView {
        id: vm.id,
        user_id: vm.user_id,
        name: vm.name,
        strategy: vm.strategy,
        last_seen: vm.last_seen_ms,
        is_default: vm.is_default,
        port: (vm.port != 0).then_some(vm.port),
        host: some(vm.host),
        username: some(vm.username),
        project_dir: some(vm.project_dir),
        credential: some(vm.credential),
        host_key_fingerprint: some(vm.host_key_fingerprint),
        pending_host_key_fingerprint: some(vm.pending_host_key_fingerprint),
        last_error: some(vm.last_error),
        last_error_at: vm.last_error_ms,
        connected: vm.connected,
    }
}

fn credential(
    private_key: Option<String>,
    passphrase: Option<String>,
    password: Option<String>,
) -> Option<pb::SshCredential> {
    if private_key.is_none() && password.is_none() && passphrase.is_none() {
        return None;
    }
    Some(pb::SshCredential {
        private_key: private_key.unwrap_or_default(),
        passphrase: passphrase.unwrap_or_default(),
        password: password.unwrap_or_default(),
    })
}

/// `POST /api/vm/register {name, strategy?, host?, port?, username?, privateKey?, passphrase?,
/// password?, projectDir?}` → 201 `{vm}`.
pub(crate) async fn register(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<RegisterVm>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::RegisterVmRequest {
        name: body.name,
        strategy: body.strategy.unwrap_or_default(),
        host: body.host.unwrap_or_default(),
        port: body.port.unwrap_or(0),
        username: body.username.unwrap_or_default(),
        project_dir: body.project_dir.unwrap_or_default(),
        credential: credential(body.private_key, body.passphrase, body.password),
    };
    let vm = gw
        .vm_connector
        .clone()
        .register_vm(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(VmEnvelope { vm: view(vm) })))
}

/// `PUT /api/vm/update {vmId, name?, host?, port?, username?, projectDir?, isDefault?}` →
/// `{vm}`; another member's VM is 404.
pub(crate) async fn update(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    ApiJson(body): ApiJson<UpdateVm>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::UpdateVmRequest {
        vm_id: body.vm_id,
        name: body.name,
        host: body.host,
        port: body.port,
        username: body.username,
        project_dir: body.project_dir,
        is_default: body.is_default,
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

/// `GET /api/vm/{id}` → `{vm}`: settings and health of one of the caller's VMs.
pub(crate) async fn get(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let vm = gw
        .vm_connector
        .clone()
        .get_vm(bearer(pb::GetVmRequest { vm_id: id }, &member.token))
        .await?
        .into_inner();
    Ok(Json(VmEnvelope { vm: view(vm) }))
}

/// `DELETE /api/vm/{id}` → `{ok: true}`: the VM and its credential are gone.
pub(crate) async fn delete(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    gw.vm_connector
        .clone()
        .delete_vm(bearer(pb::GetVmRequest { vm_id: id }, &member.token))
        .await?;
    Ok(Json(crate::agents::json::Accepted { ok: true }))
}

/// `POST /api/vm/{id}/credential {privateKey?, passphrase?, password?}` → `{vm}`.
pub(crate) async fn replace_credential(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplaceVmCredential>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::ReplaceCredentialRequest {
        vm_id: id,
        credential: credential(body.private_key, body.passphrase, body.password),
    };
    let vm = gw
        .vm_connector
        .clone()
        .replace_credential(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(VmEnvelope { vm: view(vm) }))
}

/// `POST /api/vm/{id}/host-key/accept {fingerprint}` → `{vm}`: pins the changed key.
pub(crate) async fn accept_host_key(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AcceptHostKey>,
) -> Result<impl IntoResponse, HttpError> {
    let request = pb::AcceptHostKeyRequest {
        vm_id: id,
        fingerprint: body.fingerprint,
    };
    let vm = gw
        .vm_connector
        .clone()
        .accept_host_key(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(VmEnvelope { vm: view(vm) }))
}

/// `GET /api/vm/{id}/audit?before&limit` → `{entries}`, newest first.
pub(crate) async fn audit(
    State(gw): State<Arc<Gateway>>,
    member: Member,
    Path(id): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, HttpError> {
    let Query(query) = query.map_err(|e| {
        covibe_types::ApiError::invalid(format!("invalid query: {}", e.body_text()))
    })?;
    let request = pb::ListAuditRequest {
        vm_id: id,
        before: query.before.unwrap_or(0),
        limit: query.limit.unwrap_or(0),
    };
    let page = gw
        .vm_connector
        .clone()
        .list_audit(bearer(request, &member.token))
        .await?
        .into_inner();
    Ok(Json(AuditPage {
        entries: page
            .entries
            .into_iter()
            .map(|e| AuditEntry {
                id: e.id,
                at: e.at_ms,
                actor_id: e.actor_id,
                action: e.action,
                vm_id: some(e.vm_id),
                agent_id: some(e.agent_id),
                strategy: some(e.strategy),
                command_digest: some(e.command_digest),
                result: e.result,
                detail: some(e.detail),
            })
            .collect(),
    }))
}
