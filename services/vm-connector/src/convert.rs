//! Proto <-> domain.

use covibe_proto::vmconnector::v1 as pb;

use crate::model::{StartAgent, Vm};

impl From<&Vm> for pb::Vm {
    fn from(vm: &Vm) -> Self {
        Self {
            id: vm.id.to_string(),
            user_id: vm.user_id.to_string(),
            name: vm.name.clone(),
            strategy: vm.strategy.as_str().to_owned(),
            last_seen_ms: vm.last_seen_ms,
        }
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
