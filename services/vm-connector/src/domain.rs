//! The rules: a member sees, changes and starts agents on their own VMs only (another member's
//! VM, or a made-up id, is "no such vm"); a member with no VM gets a default `local` one, this
//! machine; each strategy starts vm-agents its own way. Every access to a VM is written to the
//! audit log first, and refused when it cannot be.

use std::sync::Arc;

use covibe_identity::vault::{Binding, Vault, VaultError};
use covibe_proto::vmconnector::v1 as pb;
use covibe_proto::vmconnector::v1::{HealthCheck, Job};
use covibe_storage::{AuditEntry, AuditLog, AuditRecord};
use covibe_types::{ApiError, Code, TeamId, UserId, VmId, now_ms};
use zeroize::Zeroizing;

use crate::Error;
use crate::dial_in::{self, Daemons};
use crate::local::{Launch, LocalLauncher};
use crate::model::{
    CredentialKind, JobGrant, JobOutcome, StartAgent, StoredCredential, Strategy, Vm,
};
use crate::ssh::{self, Secret, SshError, SshPool, Target};
use crate::store::VmStore;

/// After a job that exits 0: the port its app must answer HTTP on.
#[derive(Debug, Clone)]
pub struct JobHealth {
    pub port: u16,
    pub path: String,
    pub within: std::time::Duration,
}

pub struct VmDomain {
    store: Arc<dyn VmStore>,
    local: Arc<LocalLauncher>,
    daemons: Arc<Daemons>,
    ssh: Arc<SshPool>,
    vault: Vault,
    audit: AuditLog,
}

/// A VM as its owner sees it: settings, health and the kind of its credential (never the
/// credential).
#[derive(Debug, Clone)]
pub struct VmView {
    pub vm: Vm,
    pub credential: Option<CredentialKind>,
    pub connected: bool,
}

/// A login secret as a member sends it (exactly one of a key or a password).
#[derive(Default)]
pub struct NewCredential {
    pub private_key: Zeroizing<String>,
    pub passphrase: Zeroizing<String>,
    pub password: Zeroizing<String>,
}

/// What registering a VM takes.
#[derive(Default)]
pub struct NewVm {
    pub name: String,
    pub strategy: String,
    pub host: String,
    pub port: u32,
    pub username: String,
    pub project_dir: String,
    pub credential: Option<NewCredential>,
}

/// Changes to a VM; `None` keeps the value.
#[derive(Debug, Default)]
pub struct VmChanges {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub username: Option<String>,
    pub project_dir: Option<String>,
    pub is_default: Option<bool>,
}

/// VM names: trimmed, 1 to 64 printable characters.
fn clean_vm_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "vm name must be 1 to 64 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// The strategy a VM may be registered with (`local` when left out).
fn requested_strategy(strategy: &str) -> Result<Strategy, ApiError> {
    match strategy.trim() {
        "" => Ok(Strategy::Local),
        other => Strategy::parse(other).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown strategy {other:?}; the strategies are \"local\", \"dial_in\" and \"ssh_proxy\""
            ))
        }),
    }
}

/// A host name or address: no spaces, no option-like start.
fn clean_host(host: &str) -> Result<String, ApiError> {
    let host = host.trim();
    let ok = !host.is_empty()
        && host.len() <= 255
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'));
    if !ok {
        return Err(ApiError::invalid(
            "host must be a host name or an IP address (letters, digits, '.', '-', ':')",
        ));
    }
    Ok(host.to_owned())
}

fn clean_username(username: &str) -> Result<String, ApiError> {
    let username = username.trim();
    let ok = !username.is_empty()
        && username.len() <= 64
        && !username.starts_with('-')
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(ApiError::invalid(
            "username must be 1 to 64 letters, digits, '.', '-' or '_'",
        ));
    }
    Ok(username.to_owned())
}

fn clean_port(port: u32) -> Result<u16, ApiError> {
    match port {
        0 => Ok(22),
        p => u16::try_from(p).map_err(|_| ApiError::invalid("port must be 1 to 65535")),
    }
}

fn clean_project_dir(dir: &str) -> Result<String, ApiError> {
    let dir = dir.trim();
    if dir.len() > 1024 || dir.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "projectDir must be at most 1024 printable characters",
        ));
    }
    Ok(dir.to_owned())
}

/// Checks a credential and puts it in the form that is sealed: `key \0 PEM \0 PASSPHRASE` or
/// `password \0 PASSWORD`.
fn credential_plaintext(
    credential: &NewCredential,
) -> Result<(CredentialKind, Zeroizing<Vec<u8>>), ApiError> {
    let key = credential.private_key.trim();
    let password = credential.password.as_str();
    let has_nul = |s: &str| s.contains('\0');
    if has_nul(key) || has_nul(password) || has_nul(&credential.passphrase) {
        return Err(ApiError::invalid(
            "a credential cannot hold a NUL character",
        ));
    }
    if credential.passphrase.contains('\n') || password.contains('\n') {
        return Err(ApiError::invalid(
            "a password or passphrase cannot hold a line break",
        ));
    }
    let mut plain = Zeroizing::new(Vec::new());
    match (key.is_empty(), password.is_empty()) {
        (false, true) => {
            if key.len() > 16 * 1024
                || !key.starts_with("-----BEGIN")
                || !key.contains("PRIVATE KEY-----")
            {
                return Err(ApiError::invalid(
                    "privateKey must be a private key in OpenSSH or PEM form (-----BEGIN ... PRIVATE KEY-----)",
                ));
            }
            plain.extend_from_slice(b"key\0");
            plain.extend_from_slice(key.as_bytes());
            plain.push(0);
            plain.extend_from_slice(credential.passphrase.as_bytes());
            Ok((CredentialKind::Key, plain))
        }
        (true, false) => {
            if password.len() > 1024 {
                return Err(ApiError::invalid("password must be at most 1024 bytes"));
            }
            plain.extend_from_slice(b"password\0");
            plain.extend_from_slice(password.as_bytes());
            Ok((CredentialKind::Password, plain))
        }
        _ => Err(ApiError::invalid(
            "give exactly one of privateKey (with its passphrase, if any) or password",
        )),
    }
}

/// The sealed form back into a secret.
fn secret_of(plain: &[u8]) -> Result<Secret, SshError> {
    let text = std::str::from_utf8(plain)
        .map_err(|_| SshError::Local("the stored credential is not text".to_owned()))?;
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("key"), Some(pem), passphrase) => Ok(Secret::Key {
            pem: Zeroizing::new(pem.to_owned()),
            passphrase: Zeroizing::new(passphrase.unwrap_or_default().to_owned()),
        }),
        (Some("password"), Some(password), None) => {
            Ok(Secret::Password(Zeroizing::new(password.to_owned())))
        }
        _ => Err(SshError::Local(
            "the stored credential is not in a known form".to_owned(),
        )),
    }
}

fn binding<'a>(c: &'a StoredCredential, team: &'a str, user: &'a str, vm: &'a str) -> Binding<'a> {
    Binding {
        team,
        user,
        vm,
        purpose: match c.kind {
            CredentialKind::Key => "ssh_key",
            CredentialKind::Password => "ssh_password",
        },
    }
}

/// What the member is told when a stored credential will not open; the detail is logged.
fn vault_error(err: &VaultError) -> SshError {
    tracing::warn!(error = %err, "a VM credential did not open");
    SshError::Local(match err {
        VaultError::Retired(_) | VaultError::UnknownVersion(_) => {
            "the VM's stored credential was sealed with a master key this server no longer has; replace the credential".to_owned()
        }
        VaultError::KeyFile(_) => "the server's master key is not readable; tell your operator".to_owned(),
        VaultError::Malformed | VaultError::Tampered => {
            "the VM's stored credential does not open; replace the credential".to_owned()
        }
    })
}

fn ssh_api_error(err: &SshError) -> ApiError {
    let code = match err {
        SshError::HostKeyChanged { .. } => Code::Conflict,
        SshError::Auth(_) => Code::PermissionDenied,
        _ => Code::Unavailable,
    };
    ApiError::new(code, err.to_string())
}

/// Re-encrypts every credential sealed under an older master key version with the newest
/// one. Each row is swapped only if unchanged since it was read, so the run can be stopped at
/// any point and run again. Returns how many rows it re-encrypted.
pub async fn reseal_credentials(store: &dyn VmStore, vault: &Vault) -> Result<usize, Error> {
    let keys = vault
        .keys()
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let current = keys.current();
    let mut done = 0;
    for stored in store.credentials_below(current).await? {
        let (team, user, vm) = (
            stored.team_id.to_string(),
            stored.user_id.to_string(),
            stored.vm_id.to_string(),
        );
        let b = binding(&stored, &team, &user, &vm);
        let plain = keys
            .open(&b, &stored.sealed)
            .map_err(|e| ApiError::unavailable(format!("vm {vm}: {e}")))?;
        let sealed = keys
            .seal(&b, &plain)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if store
            .reseal(stored.vm_id, &stored.sealed, &sealed, current)
            .await?
        {
            done += 1;
        }
    }
    Ok(done)
}

impl VmDomain {
    pub fn new(
        store: Arc<dyn VmStore>,
        local: Arc<LocalLauncher>,
        daemons: Arc<Daemons>,
        ssh: Arc<SshPool>,
        vault: Vault,
        audit: AuditLog,
    ) -> Self {
        Self {
            store,
            local,
            daemons,
            ssh,
            vault,
            audit,
        }
    }

    /// Writes an audit record; the action must not happen when this fails.
    async fn audit(&self, record: AuditRecord) -> Result<(), Error> {
        self.audit.record(&record).await.map_err(|err| {
            tracing::error!(error = %err, action = %record.action, "the audit log could not be written");
            Error::Api(ApiError::unavailable(
                "the audit log could not be written, so nothing was done; try again later",
            ))
        })
    }

    /// An audit record about one of `vm`'s accesses, by its owner.
    fn record(vm: &Vm, action: &str, result: &str) -> AuditRecord {
        AuditRecord {
            team_id: vm.team_id.to_string(),
            actor_id: vm.user_id.to_string(),
            owner_id: vm.user_id.to_string(),
            vm_id: Some(vm.id.to_string()),
            action: action.to_owned(),
            strategy: Some(vm.strategy.as_str().to_owned()),
            result: result.to_owned(),
            ..Default::default()
        }
    }

    /// Writes a record of something already done; a failure is logged, not returned.
    async fn note(&self, record: AuditRecord) {
        if let Err(err) = self.audit.record(&record).await {
            tracing::error!(error = %err, action = %record.action, "the audit log could not be written");
        }
    }

    /// The member's VMs; a member with none gets a default `local` VM, this machine.
    pub async fn vms(&self, user: UserId, team: TeamId) -> Result<Vec<Vm>, Error> {
        let vms = self.store.list(user).await?;
        if !vms.is_empty() {
            return Ok(vms);
        }
        let mut vm = Vm::new(user, team, "this machine".to_owned(), Strategy::Local);
        vm.last_seen_ms = now_ms();
        self.store.insert(&vm).await?;
        // Another request may have raced us: read back and use the first one.
        Ok(self.store.list(user).await?)
    }

    /// The member's VMs with their health and credential kinds.
    pub async fn views(&self, user: UserId, team: TeamId) -> Result<Vec<VmView>, Error> {
        let mut views = Vec::new();
        for vm in self.vms(user, team).await? {
            views.push(self.view(vm).await?);
        }
        Ok(views)
    }

    pub async fn view(&self, vm: Vm) -> Result<VmView, Error> {
        let credential = self.store.credential(vm.id).await?.map(|c| c.kind);
        let connected = self.daemons.is_attached(vm.id) || self.ssh.is_connected(vm.id).await;
        Ok(VmView {
            vm,
            credential,
            connected,
        })
    }

    /// One of the caller's own VMs. Another member's VM, or a made-up id, is simply not one
    /// of theirs: both are "no such vm".
    pub async fn own_vm(&self, user: UserId, team: TeamId, raw_id: &str) -> Result<Vm, Error> {
        let not_found = || ApiError::not_found("no such vm");
        let id: VmId = raw_id.trim().parse().map_err(|_| not_found())?;
        let vms = self.store.list(user).await?;
        Ok(vms
            .into_iter()
            .find(|vm| vm.id == id && vm.team_id == team)
            .ok_or_else(not_found)?)
    }

    /// Starts a vm-agent for an agent of the caller's, on one of their VMs: over the VM's
    /// dial-in daemon when it is connected, else the VM's own strategy. Returns the VM and the
    /// strategy used.
    pub async fn start_agent(
        &self,
        user: UserId,
        team: TeamId,
        start: StartAgent,
    ) -> Result<(Vm, Strategy), Error> {
        if start.user_id != user.to_string() || start.team_id != team.to_string() {
            return Err(
                ApiError::forbidden("a member may start agents only on their own VMs").into(),
            );
        }
        let vms = self.vms(user, team).await?;
        let vm = if start.vm_id.is_empty() {
            let default = vms.iter().position(|vm| vm.is_default).unwrap_or(0);
            vms.into_iter().nth(default)
        } else {
            vms.into_iter().find(|vm| vm.id.to_string() == start.vm_id)
        }
        .ok_or_else(|| ApiError::not_found("no such vm"))?;
        let way = if vm.strategy == Strategy::SshProxy && self.daemons.is_attached(vm.id) {
            Strategy::DialIn
        } else {
            vm.strategy
        };
        let mut requested = Self::record(&vm, "agent.spawn", "requested");
        requested.agent_id = Some(start.agent_id.clone());
        requested.strategy = Some(way.as_str().to_owned());
        self.audit(requested).await?;
        let launch = Launch {
            agent_id: &start.agent_id,
            agent_token: &start.agent_token,
            task: &start.task,
            link_url: &start.link_url,
        };
        let used = match way {
            Strategy::Local => {
                let pid = self.local.launch(&launch)?;
                tracing::info!(agent_id = %start.agent_id, vm_id = %vm.id, pid, "vm-agent started locally");
                Strategy::Local
            }
            Strategy::DialIn => match self.start_dial_in(&vm, &start).await {
                Ok(()) => Strategy::DialIn,
                // The daemon went between the check and the spawn: SSH is the way in.
                Err(err) if vm.strategy == Strategy::SshProxy => {
                    tracing::info!(vm_id = %vm.id, error = %err, "dial-in failed; using ssh");
                    self.start_ssh(&vm, &launch).await?;
                    Strategy::SshProxy
                }
                Err(err) => return Err(err.into()),
            },
            Strategy::SshProxy => {
                self.start_ssh(&vm, &launch).await?;
                Strategy::SshProxy
            }
        };
        self.store.touch(vm.id).await?;
        Ok((vm, used))
    }

    async fn start_dial_in(&self, vm: &Vm, start: &StartAgent) -> Result<(), ApiError> {
        let spawn = pb::Spawn {
            agent_id: start.agent_id.clone(),
            agent_token: start.agent_token.clone(),
            task: start.task.clone(),
            link_url: start.link_url.clone(),
            traceparent: covibe_telemetry::current_traceparent(),
        };
        let result = self.daemons.spawn(vm.id, spawn).await?;
        if !result.ok {
            return Err(ApiError::unavailable(format!(
                "the VM's vm-agent daemon could not start the agent: {}",
                result.message
            )));
        }
        tracing::info!(agent_id = %start.agent_id, vm_id = %vm.id, "vm-agent started by the VM's daemon");
        Ok(())
    }

    async fn start_ssh(&self, vm: &Vm, launch: &Launch<'_>) -> Result<(), Error> {
        let stored = self.store.credential(vm.id).await?.ok_or_else(|| {
            ApiError::invalid("this VM has no SSH credential yet; add one in the VM's settings")
        })?;
        let target = Target {
            vm_id: vm.id,
            host: vm.host.clone(),
            port: vm.port,
            username: vm.username.clone(),
            host_key: vm.host_key.clone(),
        };
        let (team, user, id) = (
            vm.team_id.to_string(),
            vm.user_id.to_string(),
            vm.id.to_string(),
        );
        let secret = || {
            let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
            let plain = keys
                .open(&binding(&stored, &team, &user, &id), &stored.sealed)
                .map_err(|e| vault_error(&e))?;
            secret_of(&plain)
        };
        let mut record = Self::record(vm, "ssh.start", "ok");
        record.agent_id = Some(launch.agent_id.to_owned());
        record.strategy = Some(Strategy::SshProxy.as_str().to_owned());
        match self
            .ssh
            .start(&target, secret, launch, &vm.project_dir)
            .await
        {
            Ok(started) => {
                if let Some(key) = &started.pinned_host_key {
                    self.store.set_host_keys(vm.id, key, "").await?;
                    let mut pinned = Self::record(vm, "ssh.host_key.pin", "ok");
                    pinned.detail = Some(ssh::fingerprint(key));
                    self.note(pinned).await;
                }
                self.store.set_health(vm.id, "", now_ms()).await?;
                if started.installed {
                    self.note(Self::record(vm, "ssh.install", "ok")).await;
                }
                record.command_digest = Some(started.command_digest);
                record.detail = Some(if started.connected {
                    "over a new connection".to_owned()
                } else {
                    "over the open connection".to_owned()
                });
                self.note(record).await;
                tracing::info!(agent_id = %launch.agent_id, vm_id = %vm.id, "vm-agent started over ssh");
                Ok(())
            }
            Err(err) => {
                if let SshError::HostKeyChanged { presented, .. } = &err {
                    self.store
                        .set_host_keys(vm.id, &vm.host_key, presented)
                        .await?;
                }
                self.store
                    .set_health(vm.id, &err.to_string(), now_ms())
                    .await?;
                record.result = "error".to_owned();
                record.detail = Some(err.to_string());
                self.note(record).await;
                tracing::warn!(agent_id = %launch.agent_id, vm_id = %vm.id, error = %err, "ssh start failed");
                Err(ssh_api_error(&err).into())
            }
        }
    }

    pub async fn register(&self, user: UserId, team: TeamId, new: NewVm) -> Result<Vm, Error> {
        let mut vm = Vm::new(
            user,
            team,
            clean_vm_name(&new.name)?,
            requested_strategy(&new.strategy)?,
        );
        let sealed = if vm.strategy == Strategy::SshProxy {
            vm.host = clean_host(&new.host)?;
            vm.port = clean_port(new.port)?;
            vm.username = clean_username(&new.username)?;
            vm.project_dir = clean_project_dir(&new.project_dir)?;
            let credential = new.credential.as_ref().ok_or_else(|| {
                ApiError::invalid("an ssh_proxy VM needs a privateKey or a password")
            })?;
            Some(self.seal(&vm, credential)?)
        } else {
            if !new.host.is_empty() || new.credential.is_some() {
                return Err(
                    ApiError::invalid("host and credentials belong to ssh_proxy VMs only").into(),
                );
            }
            vm.project_dir = clean_project_dir(&new.project_dir)?;
            None
        };
        self.audit(Self::record(&vm, "vm.register", "ok")).await?;
        self.store.insert(&vm).await?;
        if let Some(sealed) = sealed {
            self.store.set_credential(&sealed).await?;
        }
        tracing::info!(vm_id = %vm.id, user_id = %user, strategy = %vm.strategy, "vm registered");
        Ok(vm)
    }

    fn seal(&self, vm: &Vm, credential: &NewCredential) -> Result<StoredCredential, Error> {
        let (kind, plain) = credential_plaintext(credential)?;
        let keys = self.vault.keys().map_err(|e| {
            tracing::error!(error = %e, "the master key is not readable");
            ApiError::unavailable("the server's master key is not readable; tell your operator")
        })?;
        let mut stored = StoredCredential {
            vm_id: vm.id,
            team_id: vm.team_id,
            user_id: vm.user_id,
            kind,
            key_version: keys.current(),
            sealed: Vec::new(),
        };
        let (team, user, id) = (
            vm.team_id.to_string(),
            vm.user_id.to_string(),
            vm.id.to_string(),
        );
        stored.sealed = keys
            .seal(&binding(&stored, &team, &user, &id), &plain)
            .map_err(ApiError::internal)?;
        Ok(stored)
    }

    pub async fn update(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        changes: VmChanges,
    ) -> Result<Vm, Error> {
        let mut vm = self.own_vm(user, team, vm_id).await?;
        let before = (vm.host.clone(), vm.port, vm.username.clone());
        if let Some(name) = &changes.name {
            vm.name = clean_vm_name(name)?;
        }
        let ssh_fields =
            changes.host.is_some() || changes.port.is_some() || changes.username.is_some();
        if ssh_fields && vm.strategy != Strategy::SshProxy {
            return Err(ApiError::invalid(format!(
                "host, port and username belong to ssh_proxy VMs; this one is {}",
                vm.strategy
            ))
            .into());
        }
        if let Some(host) = &changes.host {
            vm.host = clean_host(host)?;
        }
        if let Some(port) = changes.port {
            vm.port = clean_port(port)?;
        }
        if let Some(username) = &changes.username {
            vm.username = clean_username(username)?;
        }
        if let Some(dir) = &changes.project_dir {
            vm.project_dir = clean_project_dir(dir)?;
        }
        if changes.is_default == Some(true) {
            vm.is_default = true;
        }
        let moved = before != (vm.host.clone(), vm.port, vm.username.clone());
        if moved && before.0 != vm.host {
            // Another machine: its key is pinned afresh on first contact.
            vm.host_key.clear();
            vm.pending_host_key.clear();
        }
        self.audit(Self::record(&vm, "vm.update", "ok")).await?;
        if !self.store.update(&vm).await? {
            return Err(ApiError::not_found("no such vm").into());
        }
        if moved {
            self.ssh.disconnect(vm.id).await;
        }
        Ok(vm)
    }

    pub async fn delete(&self, user: UserId, team: TeamId, vm_id: &str) -> Result<(), Error> {
        let vm = self.own_vm(user, team, vm_id).await?;
        self.audit(Self::record(&vm, "vm.delete", "ok")).await?;
        if !self.store.delete(user, vm.id).await? {
            return Err(ApiError::not_found("no such vm").into());
        }
        self.ssh.disconnect(vm.id).await;
        tracing::info!(target: "audit", vm_id = %vm.id, user_id = %user, "vm removed");
        Ok(())
    }

    pub async fn replace_credential(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        credential: NewCredential,
    ) -> Result<Vm, Error> {
        let vm = self.own_vm(user, team, vm_id).await?;
        if vm.strategy != Strategy::SshProxy {
            return Err(ApiError::invalid(format!(
                "only an ssh_proxy VM has a credential; this one is {}",
                vm.strategy
            ))
            .into());
        }
        let sealed = self.seal(&vm, &credential)?;
        drop(credential);
        self.audit(Self::record(&vm, "vm.credential.replace", "ok"))
            .await?;
        self.store.set_credential(&sealed).await?;
        self.ssh.disconnect(vm.id).await;
        Ok(vm)
    }

    /// Pins the key the VM presented when it was refused, if it is the one the owner saw.
    pub async fn accept_host_key(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        fingerprint: &str,
    ) -> Result<Vm, Error> {
        let mut vm = self.own_vm(user, team, vm_id).await?;
        if vm.pending_host_key.is_empty() {
            return Err(ApiError::new(
                Code::Conflict,
                "the VM presented no new host key to accept",
            )
            .into());
        }
        let pending = ssh::fingerprint(&vm.pending_host_key);
        if pending != fingerprint.trim() {
            return Err(ApiError::new(
                Code::Conflict,
                format!("the VM's new host key is {pending}, not the one given; check it again"),
            )
            .into());
        }
        let mut record = Self::record(&vm, "vm.host_key.accept", "ok");
        record.detail = Some(pending);
        self.audit(record).await?;
        vm.host_key = std::mem::take(&mut vm.pending_host_key);
        self.store.set_host_keys(vm.id, &vm.host_key, "").await?;
        self.ssh.disconnect(vm.id).await;
        Ok(vm)
    }

    /// The audit records of one of the caller's VMs, newest first.
    pub async fn audit_page(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, Error> {
        let vm = self.own_vm(user, team, vm_id).await?;
        let limit = match limit {
            0 => 50,
            n => n.min(200),
        };
        Ok(self
            .audit
            .for_vm(
                &vm.id.to_string(),
                (before > 0).then_some(before),
                u64::from(limit),
            )
            .await?)
    }

    /// A grant to run the team's jobs (`purpose`: `preview`) on one of the caller's VMs (their
    /// default when `vm_id` is empty). Returns the grant, shown once, and the VM.
    pub async fn create_job_grant(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        purpose: &str,
    ) -> Result<(String, Vm), Error> {
        if purpose != "preview" {
            return Err(ApiError::invalid("a job grant's purpose is \"preview\"").into());
        }
        let vm = if vm_id.trim().is_empty() {
            let vms = self.vms(user, team).await?;
            let default = vms.iter().position(|vm| vm.is_default).unwrap_or(0);
            vms.into_iter()
                .nth(default)
                .ok_or_else(|| ApiError::not_found("no such vm"))?
        } else {
            self.own_vm(user, team, vm_id).await?
        };
        let mut record = Self::record(&vm, "job.grant", "ok");
        record.detail = Some(purpose.to_owned());
        self.audit(record).await?;
        let grant = dial_in::new_token();
        self.store
            .set_job_grant(&JobGrant {
                grant_hash: dial_in::hash_token(&grant),
                vm_id: vm.id,
                team_id: team,
                user_id: user,
                purpose: purpose.to_owned(),
            })
            .await?;
        Ok((grant, vm))
    }

    /// Runs a job on the VM a grant names, after auditing it. The grant's member must still
    /// own the VM in the grant's team.
    pub async fn run_job(
        &self,
        grant: &str,
        script: &str,
        timeout: std::time::Duration,
        health: Option<&JobHealth>,
        removed: impl Fn(UserId) -> bool,
    ) -> Result<(JobOutcome, bool), Error> {
        let refused = || ApiError::unauthenticated("unknown or revoked job grant");
        if grant.trim().is_empty() {
            return Err(refused().into());
        }
        let found = self
            .store
            .job_grant(&dial_in::hash_token(grant.trim()))
            .await?
            .ok_or_else(refused)?;
        let vm = self
            .store
            .get(found.vm_id)
            .await?
            .filter(|vm| vm.user_id == found.user_id && vm.team_id == found.team_id)
            .filter(|vm| !removed(vm.user_id))
            .ok_or_else(refused)?;
        if script.is_empty() || script.len() > 256 * 1024 {
            return Err(ApiError::invalid("a job's script is 1 byte to 256 KiB").into());
        }
        let mut record = Self::record(&vm, "job.run", "requested");
        record.actor_id = format!("{}-service", found.purpose);
        record.command_digest = Some(crate::ssh::digest(script));
        self.audit(record.clone()).await?;
        let mut healthy = false;
        let outcome = match vm.strategy {
            Strategy::Local => self.local.run_job(script, timeout).await?,
            Strategy::SshProxy => {
                let stored =
                    self.store.credential(vm.id).await?.ok_or_else(|| {
                        ApiError::invalid("the preview's VM has no SSH credential")
                    })?;
                let target = Target {
                    vm_id: vm.id,
                    host: vm.host.clone(),
                    port: vm.port,
                    username: vm.username.clone(),
                    host_key: vm.host_key.clone(),
                };
                let (team, user, id) = (
                    vm.team_id.to_string(),
                    vm.user_id.to_string(),
                    vm.id.to_string(),
                );
                let secret = || {
                    let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
                    let plain = keys
                        .open(&binding(&stored, &team, &user, &id), &stored.sealed)
                        .map_err(|e| vault_error(&e))?;
                    secret_of(&plain)
                };
                match self.ssh.run_job(&target, secret, script, timeout).await {
                    Ok((outcome, pinned)) => {
                        if let Some(key) = pinned {
                            self.store.set_host_keys(vm.id, &key, "").await?;
                        }
                        self.store.set_health(vm.id, "", now_ms()).await?;
                        outcome
                    }
                    Err(err) => {
                        if let SshError::HostKeyChanged { presented, .. } = &err {
                            self.store
                                .set_host_keys(vm.id, &vm.host_key, presented)
                                .await?;
                        }
                        self.store
                            .set_health(vm.id, &err.to_string(), now_ms())
                            .await?;
                        record.result = "error".to_owned();
                        record.detail = Some(err.to_string());
                        self.note(record).await;
                        return Err(ssh_api_error(&err).into());
                    }
                }
            }
            // Its ports are reached from the VM only: its daemon checks the app's health too.
            Strategy::DialIn => {
                let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
                let job = Job {
                    job_id: String::new(),
                    script: script.to_owned(),
                    timeout_secs: secs(timeout),
                    health: health.map(|h| HealthCheck {
                        port: u32::from(h.port),
                        path: h.path.clone(),
                        timeout_secs: secs(h.within),
                    }),
                };
                let result = match self.daemons.run_job(vm.id, job).await {
                    Ok(result) => result,
                    Err(err) => {
                        record.result = "error".to_owned();
                        record.detail = Some(err.message.clone());
                        self.note(record).await;
                        return Err(err.into());
                    }
                };
                healthy = result.healthy;
                JobOutcome {
                    exit_code: result.exit_code,
                    output_tail: result.output_tail,
                }
            }
        };
        if outcome.exit_code == 0
            && vm.strategy != Strategy::DialIn
            && let Some(h) = health
        {
            let host = if vm.strategy == Strategy::SshProxy {
                vm.host.as_str()
            } else {
                "127.0.0.1"
            };
            healthy = covibe_vm_agent::job::http_healthy(host, h.port, &h.path, h.within).await;
        }
        record.result = if outcome.exit_code == 0 {
            "ok"
        } else {
            "error"
        }
        .to_owned();
        record.detail = Some(match health {
            Some(_) if outcome.exit_code == 0 => format!("exit code 0, healthy {healthy}"),
            _ => format!("exit code {}", outcome.exit_code),
        });
        self.note(record).await;
        Ok((outcome, healthy))
    }

    /// A new dial-in token for one of the caller's `dial_in` or `ssh_proxy` VMs (replacing any
    /// before it): a daemon on an SSH VM is used while it is connected.
    pub async fn create_token(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
    ) -> Result<String, Error> {
        let vm = self.own_vm(user, team, vm_id).await?;
        if vm.strategy == Strategy::Local {
            return Err(ApiError::invalid(format!(
                "only a dial_in or ssh_proxy VM has a token; this one is {}",
                vm.strategy
            ))
            .into());
        }
        self.audit(Self::record(&vm, "vm.token.create", "ok"))
            .await?;
        let token = dial_in::new_token();
        self.store
            .set_token_hash(vm.id, &dial_in::hash_token(&token))
            .await?;
        tracing::info!(target: "audit", vm_id = %vm.id, user_id = %user, "vm token minted");
        Ok(token)
    }
}
