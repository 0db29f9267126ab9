//! Proto <-> domain.

use covibe_proto::vmconnector::v1 as pb;
use covibe_storage::AuditEntry;
use zeroize::Zeroizing;

use crate::domain::{NewCredential, VmView};
use crate::model::StartAgent;
use crate::ssh::fingerprint;

impl From<&VmView> for pb::Vm {
    fn from(view: &VmView) -> Self {
        let vm = &view.vm;
        Self {
            id: vm.id.to_string(),
            user_id: vm.user_id.to_string(),
            name: vm.name.clone(),
            strategy: vm.strategy.as_str().to_owned(),
            last_seen_ms: vm.last_seen_ms,
            is_default: vm.is_default,
            host: vm.host.clone(),
            port: u32::from(vm.port),
            username: vm.username.clone(),
            project_dir: vm.project_dir.clone(),
            credential: view
                .credential
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            host_key_fingerprint: fingerprint(&vm.host_key),
            pending_host_key_fingerprint: fingerprint(&vm.pending_host_key),
            last_error: vm.last_error.clone(),
            last_error_ms: vm.last_error_ms,
            connected: view.connected,
        }
    }
}

impl From<pb::SshCredential> for NewCredential {
    fn from(c: pb::SshCredential) -> Self {
        Self {
            private_key: Zeroizing::new(c.private_key),
            passphrase: Zeroizing::new(c.passphrase),
            password: Zeroizing::new(c.password),
        }
    }
}

pub(crate) fn audit_entry(e: AuditEntry) -> pb::AuditEntry {
    let r = e.record;
    pb::AuditEntry {
        id: e.id,
        at_ms: e.at_ms,
        actor_id: r.actor_id,
        action: r.action,
        vm_id: r.vm_id.unwrap_or_default(),
        agent_id: r.agent_id.unwrap_or_default(),
        strategy: r.strategy.unwrap_or_default(),
        command_digest: r.command_digest.unwrap_or_default(),
        result: r.result,
        detail: r.detail.unwrap_or_default(),
    }
}

impl From<pb::StartAgentRequest> for StartAgent {
    fn from(r: pb::StartAgentRequest) -> Self {
        Self {
            agent_id: r.agent_id,
            user_id: r.user_id,
            team_id: r.team_id,
            vm_id: r.vm_id,
            task: r.task,
            agent_token: r.agent_token,
            link_url: r.link_url,
        }
    }
}
