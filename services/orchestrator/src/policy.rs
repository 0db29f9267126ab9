//! Where the orchestrator reads the team's tool-use rules and the agent owner's own: the team
//! service's `GetAgentPolicy`, called with the orchestrator's own service token.

use std::time::Duration;

use async_trait::async_trait;
use covibe_bootstrap::{Client, bearer};
use covibe_identity::Signer;
use covibe_proto::team::v1 as team;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_types::{TeamId, UserId};

use crate::model::Rules;

/// The rules an agent's tool use is decided by. An error means they cannot be had now: the
/// request is then asked of the agent's owner, never allowed.
#[async_trait]
pub trait PolicySource: Send + Sync + 'static {
    async fn rules(&self, team: TeamId, owner: UserId) -> Result<Rules, String>;
}

/// No policy can be read: every request is asked of its owner.
pub struct NoPolicy;

#[async_trait]
impl PolicySource for NoPolicy {
    async fn rules(&self, _: TeamId, _: UserId) -> Result<Rules, String> {
        Err("no team service to read the policy from".to_owned())
    }
}

/// How long one policy read may take before the request is asked of the owner instead.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The team service, called with a short-lived service token of the orchestrator's.
pub struct TeamPolicies {
    client: TeamServiceClient<Client>,
    signer: Signer,
}

impl TeamPolicies {
    pub fn new(client: TeamServiceClient<Client>, signer: Signer) -> Self {
        Self { client, signer }
    }
}

#[async_trait]
impl PolicySource for TeamPolicies {
    async fn rules(&self, team_id: TeamId, owner: UserId) -> Result<Rules, String> {
        let token = self
            .signer
            .service_token("orchestrator", Duration::from_secs(60))
            .map_err(|err| format!("could not sign a service token: {err}"))?;
        let request = bearer(
            team::GetAgentPolicyRequest {
                team_id: team_id.to_string(),
                user_id: owner.to_string(),
            },
            &token,
        );
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(READ_TIMEOUT, client.get_agent_policy(request))
            .await
            .map_err(|_| "the team service did not answer in time".to_owned())?
            .map_err(|status| format!("the team service refused: {status}"))?
            .into_inner();
        let (team, mine) = (
            answer.team.unwrap_or_default(),
            answer.mine.unwrap_or_default(),
        );
        Ok(Rules {
            team_allow: team.allow,
            team_deny: team.deny,
            mine_allow: mine.allow,
            mine_deny: mine.deny,
        })
    }
}
