//! The team's tool-use policy: allow and deny rules in Claude Code's permission syntax, checked
//! by `covibe_policy` before they are stored. Every member reads the team's rules and keeps
//! rules of their own (which `covibe_policy::decide` only lets make things stricter); owners
//! and admins set the team's, and every change of those is logged with who made it and what
//! changed, and published to the team (`PolicyUpdated`) so open editors reload.
//!
//! The team service has no audit log of its own (the shared one records VM access and agent
//! controls): a change of the team's rules is logged at `info`.

use std::sync::Arc;

use covibe_storage::HotStore;
use covibe_types::{ApiError, Code, TeamId, UserId, now_ms};

use crate::Error;
use crate::events;
use crate::model::{Member, PolicyRules, PolicyScope, PolicyView, TeamPolicy};
use crate::store::TeamStore;

/// Checks rules as `covibe_policy` reads them: the first refused one is named with its list and
/// position (`deny rule 2: missing `)` at the end`). Answers each rule as the policy writes it
/// back (whitespace around it dropped).
pub fn check_rules<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Result<PolicyRules, ApiError> {
    let policy = covibe_policy::Policy::parse(allow, deny)
        .map_err(|error| ApiError::invalid(error.to_string()))?;
    let texts = |rules: &[covibe_policy::Rule]| rules.iter().map(ToString::to_string).collect();
    Ok(PolicyRules {
        allow: texts(&policy.allow),
        deny: texts(&policy.deny),
    })
}

// The largest policy the rules allow, each character escaped (`\"`), fits the gateway's body limit.
const _: () = assert!(
    2 * covibe_policy::MAX_RULES * (2 * covibe_policy::MAX_RULE_BYTES + 8)
        <= covibe_proto::limits::MAX_POLICY_BODY_BYTES
);

pub struct Policies {
    store: Arc<dyn TeamStore>,
    hot: Arc<dyn HotStore>,
}

impl Policies {
    pub fn new(store: Arc<dyn TeamStore>, hot: Arc<dyn HotStore>) -> Self {
        Self { store, hot }
    }

    /// The present member `user` of `team`, or `denied()`.
    async fn member(
        &self,
        user: UserId,
        team: TeamId,
        denied: fn() -> ApiError,
    ) -> Result<Member, Error> {
        match self.store.find_member(user).await? {
            Some(member) if member.team_id == team => Ok(member),
            _ => Err(denied().into()),
        }
    }

    async fn view(&self, member: &Member) -> Result<PolicyView, Error> {
        let team = self
            .store
            .team_policy(member.team_id)
            .await?
            .unwrap_or_default();
        let mine = self
            .store
            .member_policy(member.team_id, member.id)
            .await?
            .unwrap_or_default();
        Ok(PolicyView {
            team,
            mine,
            can_edit_team: member.role.manages(),
        })
    }

    /// The team's rules and the caller's own (any member).
    pub async fn get(&self, user: UserId, team: TeamId) -> Result<PolicyView, Error> {
        let member = self.member(user, team, not_a_member).await?;
        self.view(&member).await
    }

    /// Replaces the team's rules (owners and admins) or the caller's own. The rules are checked
    /// first: one refused, and nothing changes. With `read_at` (the team's rules' `updated_at_ms`
    /// as the caller read them, 0 when never set), the team's rules are replaced only if nobody
    /// changed them since: else `conflict`, so one admin's save never silently undoes another's.
    pub async fn put(
        &self,
        user: UserId,
        team: TeamId,
        scope: PolicyScope,
        allow: &[String],
        deny: &[String],
        read_at: Option<i64>,
    ) -> Result<PolicyView, Error> {
        let member = self.member(user, team, not_a_member).await?;
        if scope == PolicyScope::Team && !member.role.manages() {
            return Err(ApiError::forbidden(
                "only the team's owners and admins may change the team's policy",
            )
            .into());
        }
        let rules = check_rules(allow, deny)?;
        let now = now_ms();
        match scope {
            PolicyScope::Team => {
                let before = self.store.team_policy(team).await?.unwrap_or_default();
                // Strictly later than the rules replaced, so that a read names one version.
                let policy = TeamPolicy {
                    rules,
                    updated_at_ms: now.max(before.updated_at_ms.saturating_add(1)),
                    updated_by: Some(user),
                };
                let stale = read_at.is_some_and(|read_at| read_at != before.updated_at_ms);
                if stale || !self.store.set_team_policy(team, &policy, read_at).await? {
                    return Err(ApiError::new(
                        Code::Conflict,
                        "the team's rules were changed by someone else since you read them: \
                         read them again, then save",
                    )
                    .into());
                }
                log_change(team, user, &before.rules, &policy.rules);
                if let Err(err) = self
                    .hot
                    .publish(
                        team,
                        events::policy_updated(team, user, policy.updated_at_ms),
                    )
                    .await
                {
                    // Stored: an editor opened later reads it.
                    tracing::warn!(team_id = %team, error = %err, "could not publish a policy change");
                }
            }
            PolicyScope::Mine => {
                self.store
                    .set_member_policy(team, user, &rules, now)
                    .await?;
                tracing::info!(
                    team_id = %team,
                    user_id = %user,
                    allow = rules.allow.len(),
                    deny = rules.deny.len(),
                    "member's own tool-use rules set"
                );
            }
        }
        self.view(&member).await
    }

    /// The rules for an agent of `user` in `team` (the orchestrator asks, for every tool
    /// request): `not_found` when `user` is not a present member of `team`.
    pub async fn for_agent(&self, team: TeamId, user: UserId) -> Result<PolicyView, Error> {
        let member = self
            .member(user, team, || {
                ApiError::not_found("no such member in this team")
            })
            .await?;
        self.view(&member).await
    }
}

fn not_a_member() -> ApiError {
    ApiError::forbidden("not a member of this team")
}

/// Who changed the team's rules, and which rules came and went.
fn log_change(team: TeamId, user: UserId, before: &PolicyRules, after: &PolicyRules) {
    let diff = |old: &[String], new: &[String]| -> (Vec<String>, Vec<String>) {
        let added = new.iter().filter(|r| !old.contains(r)).cloned().collect();
        let removed = old.iter().filter(|r| !new.contains(r)).cloned().collect();
        (added, removed)
    };
    let (allow_added, allow_removed) = diff(&before.allow, &after.allow);
    let (deny_added, deny_removed) = diff(&before.deny, &after.deny);
    tracing::info!(
        team_id = %team,
        user_id = %user,
        allow = after.allow.len(),
        deny = after.deny.len(),
        ?allow_added,
        ?allow_removed,
        ?deny_added,
        ?deny_removed,
        "team tool-use policy changed"
    );
}
