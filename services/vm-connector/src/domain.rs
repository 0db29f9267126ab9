//! The rules: a member sees, changes and starts agents on their own VMs only (another member's
//! VM, or a made-up id, is "no such vm"); a member with no VM gets a default `local` one, this
//! machine; each strategy starts vm-agents its own way.

use std::sync::Arc;

use covibe_proto::vmconnector::v1 as pb;
use covibe_types::{ApiError, TeamId, UserId, VmId, now_ms};

use crate::Error;
use crate::dial_in::{self, Daemons};
use crate::local::{Launch, LocalLauncher};
use crate::model::{StartAgent, Strategy, Vm};
use crate::store::VmStore;

pub struct VmDomain {
    store: Arc<dyn VmStore>,
    local: Arc<LocalLauncher>,
    daemons: Arc<Daemons>,
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

/// The strategy a VM may be registered with on this connector (`local` when left out).
fn requested_strategy(strategy: &str) -> Result<Strategy, ApiError> {
    match strategy.trim() {
        "" => Ok(Strategy::Local),
        "ssh_proxy" => Err(ApiError::invalid(
            "the ssh_proxy strategy is not available yet; register the VM with strategy \"local\" or \"dial_in\"",
        )),
        other => Strategy::parse(other).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown strategy {other:?}; the available strategies are \"local\" and \"dial_in\""
            ))
        }),
    }
}

impl VmDomain {
    pub fn new(store: Arc<dyn VmStore>, local: Arc<LocalLauncher>, daemons: Arc<Daemons>) -> Self {
        Self {
            store,
            local,
            daemons,
        }
    }

    /// The member's VMs; a member with none gets a default `local` VM, this machine.
    pub async fn vms(&self, user: UserId, team: TeamId) -> Result<Vec<Vm>, Error> {
        let vms = self.store.list(user).await?;
        if !vms.is_empty() {
            return Ok(vms);
        }
        let vm = Vm {
            id: VmId::new(),
            user_id: user,
            team_id: team,
            name: "this machine".to_owned(),
            strategy: Strategy::Local,
            last_seen_ms: now_ms(),
        };
        self.store.insert(&vm).await?;
        // Another request may have raced us: read back and use the first one.
        Ok(self.store.list(user).await?)
    }

    /// One of the caller's own VMs. Another member's VM, or a made-up id, is simply not one
    /// of theirs: both are "no such vm".
    async fn own_vm(&self, user: UserId, team: TeamId, raw_id: &str) -> Result<Vm, Error> {
        let not_found = || ApiError::not_found("no such vm");
        let id: VmId = raw_id.trim().parse().map_err(|_| not_found())?;
        let vms = self.store.list(user).await?;
        Ok(vms
            .into_iter()
            .find(|vm| vm.id == id && vm.team_id == team)
            .ok_or_else(not_found)?)
    }

    /// Starts a vm-agent for an agent of the caller's, on one of their VMs.
    pub async fn start_agent(
        &self,
        user: UserId,
        team: TeamId,
        start: StartAgent,
    ) -> Result<Vm, Error> {
        if start.user_id != user.to_string() || start.team_id != team.to_string() {
            return Err(
                ApiError::forbidden("a member may start agents only on their own VMs").into(),
            );
        }
        let vms = self.vms(user, team).await?;
        let vm = if start.vm_id.is_empty() {
            vms.into_iter().next()
        } else {
            vms.into_iter().find(|vm| vm.id.to_string() == start.vm_id)
        }
        .ok_or_else(|| ApiError::not_found("no such vm"))?;
        match vm.strategy {
            Strategy::Local => {
                let pid = self.local.launch(&Launch {
                    agent_id: &start.agent_id,
                    agent_token: &start.agent_token,
                    task: &start.task,
                    link_url: &start.link_url,
                })?;
                tracing::info!(agent_id = %start.agent_id, vm_id = %vm.id, pid, "vm-agent started locally");
            }
            Strategy::DialIn => {
                let spawn = pb::Spawn {
                    agent_id: start.agent_id.clone(),
                    agent_token: start.agent_token,
                    task: start.task,
                    link_url: start.link_url,
                    traceparent: covibe_telemetry::current_traceparent(),
                };
                let result = self.daemons.spawn(vm.id, spawn).await?;
                if !result.ok {
                    return Err(ApiError::unavailable(format!(
                        "the VM's vm-agent daemon could not start the agent: {}",
                        result.message
                    ))
                    .into());
                }
                tracing::info!(agent_id = %start.agent_id, vm_id = %vm.id, "vm-agent started by the VM's daemon");
            }
        }
        self.store.touch(vm.id).await?;
        Ok(vm)
    }

    pub async fn register(
        &self,
        user: UserId,
        team: TeamId,
        name: &str,
        strategy: &str,
    ) -> Result<Vm, Error> {
        let vm = Vm {
            id: VmId::new(),
            user_id: user,
            team_id: team,
            name: clean_vm_name(name)?,
            strategy: requested_strategy(strategy)?,
            last_seen_ms: 0,
        };
        self.store.insert(&vm).await?;
        tracing::info!(vm_id = %vm.id, user_id = %user, strategy = %vm.strategy, "vm registered");
        Ok(vm)
    }

    pub async fn rename(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
        name: &str,
    ) -> Result<Vm, Error> {
        let name = clean_vm_name(name)?;
        let mut vm = self.own_vm(user, team, vm_id).await?;
        vm.name = name;
        if !self.store.update(&vm).await? {
            return Err(ApiError::not_found("no such vm").into());
        }
        Ok(vm)
    }

    /// A new dial-in token for one of the caller's `dial_in` VMs (replacing any before it).
    pub async fn create_token(
        &self,
        user: UserId,
        team: TeamId,
        vm_id: &str,
    ) -> Result<String, Error> {
        let vm = self.own_vm(user, team, vm_id).await?;
        if vm.strategy != Strategy::DialIn {
            return Err(ApiError::invalid(format!(
                "only a dial_in VM has a token; this one is {}",
                vm.strategy
            ))
            .into());
        }
        let token = dial_in::new_token();
        self.store
            .set_token_hash(vm.id, &dial_in::hash_token(&token))
            .await?;
        tracing::info!(target: "audit", vm_id = %vm.id, user_id = %user, "vm token minted");
        Ok(token)
    }
}
