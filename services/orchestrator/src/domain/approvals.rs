//! Tool uses an agent asks permission for: decided by the team's policy (and the owner's own
//! rules) when it can, else stored and asked of the agent's owner, who answers once (the first
//! answer wins, on any replica); unanswered, denied after the approval timeout. Every decision
//! is in the audit log (the tool and who or which rule decided, never the input).

use std::path::Path;

use covibe_policy::{Decision, Policy};
use covibe_proto::vmagent::v1::{self as link, Command, command};
use covibe_storage::AuditRecord;
use covibe_types::{AgentId, ApiError, Code, TeamId, UserId, now_ms};
use serde_json::Value;

use super::Agents;
use crate::Error;
use crate::events;
use crate::model::{Agent, Answer, MAX_INPUT_JSON, Permission, PermissionState, Reply};
use crate::store::Decided;
use crate::summary::{cut, summary};

/// Request ids and tool names longer than this are refused (they are keys, not text).
const MAX_KEY_BYTES: usize = 200;
/// `decided_by` of a request whose agent ended before it was answered.
const ENDED: &str = "ended";
/// `decided_by` of a request not answered in time.
const TIMEOUT: &str = "timeout";

/// A decision to pass to the vm-agent at once.
fn answer(request_id: &str, allow: bool, message: &str) -> link::PermissionAnswer {
    link::PermissionAnswer {
        request_id: request_id.to_owned(),
        allow,
        updated_input_json: String::new(),
        message: message.to_owned(),
    }
}

/// The answer a decided request gets (again, for a vm-agent that asks again), with the input
/// its owner's allow changed.
fn stored_answer(p: &Permission) -> link::PermissionAnswer {
    let allow = p.state == PermissionState::Allowed;
    link::PermissionAnswer {
        updated_input_json: match allow {
            true => p.updated_input_json.clone(),
            false => String::new(),
        },
        ..answer(&p.request_id, allow, &p.message)
    }
}

impl Agents {
    /// An audit record of a decision on one of `agent`'s tool uses.
    fn permission_record(agent: &Agent, actor: &str, allowed: bool, detail: String) -> AuditRecord {
        AuditRecord {
            detail: Some(detail),
            ..Self::record(
                agent,
                actor,
                "agent.permission",
                if allowed { "allowed" } else { "denied" },
            )
        }
    }

    /// Writes a decision to the audit log; a failure is logged (the decision stands: it was
    /// already made, and the agent must not wait forever).
    async fn audit_decision(&self, record: AuditRecord) {
        if let Err(err) = self.audit.record(&record).await {
            tracing::error!(error = %err, agent_id = ?record.agent_id, detail = ?record.detail, "a tool-use decision could not be written to the audit log");
        }
    }

    /// The agent asks whether it may use a tool. Decided by the rules when they decide (or by an
    /// earlier "always" of the owner), answered at once; else stored, announced to the team and
    /// the agent marked waiting: `None`, the owner answers later. A request asked again (a
    /// vm-agent resends what is open after a reconnect) is stored once; one already decided
    /// gets the same answer again.
    pub(crate) async fn ask_permission(
        &self,
        agent: &Agent,
        request: link::PermissionRequest,
    ) -> Result<Option<link::PermissionAnswer>, Error> {
        let id = &request.request_id;
        if id.is_empty() || id.len() > MAX_KEY_BYTES || request.tool.is_empty() {
            return Ok(Some(answer(id, false, "malformed tool request")));
        }
        if request.tool.len() > MAX_KEY_BYTES {
            return Ok(Some(answer(id, false, "the tool's name is too long")));
        }
        if let Some(stored) = self.store.permission(agent.id, id).await? {
            return self.asked_again(agent, &stored).await;
        }
        let input: Value = serde_json::from_str(&request.input_json).unwrap_or(Value::Null);
        let tool = request.tool.as_str();
        let (decision, whose) = self.decide(agent, tool, &input, &request.project_dir).await;
        match decision {
            Decision::Deny { rule } => {
                let message = format!("denied by {whose}: {rule}");
                self.audit_decision(Self::permission_record(
                    agent,
                    "policy",
                    false,
                    format!("{tool}: {message} (request {id})"),
                ))
                .await;
                tracing::info!(agent_id = %agent.id, request_id = %id, tool, %rule, "tool use denied by the policy");
                return Ok(Some(answer(id, false, &message)));
            }
            Decision::Allow { rule } => {
                self.audit_decision(Self::permission_record(
                    agent,
                    "policy",
                    true,
                    format!("{tool}: allowed by the team's policy: {rule} (request {id})"),
                ))
                .await;
                tracing::info!(agent_id = %agent.id, request_id = %id, tool, %rule, "tool use allowed by the policy");
                return Ok(Some(answer(id, true, "")));
            }
            Decision::Ask => {}
        }
        if self.store.tool_granted(agent.id, tool).await? {
            self.audit_decision(Self::permission_record(
                agent,
                &agent.owner_id.to_string(),
                true,
                format!(
                    "{tool}: allowed, its owner allowed {tool} always for this agent (request {id})"
                ),
            ))
            .await;
            return Ok(Some(answer(id, true, "")));
        }
        let now = now_ms();
        let input_json = if request.input_json.len() > MAX_INPUT_JSON {
            "{}".to_owned()
        } else {
            request.input_json.clone()
        };
        let pending = Permission {
            agent_id: agent.id,
            team_id: agent.team_id,
            owner_id: agent.owner_id,
            request_id: id.clone(),
            tool: request.tool.clone(),
            tool_use_id: cut(&request.tool_use_id, MAX_KEY_BYTES),
            input_json,
            summary: summary(tool, &input),
            project_dir: request.project_dir.clone(),
            state: PermissionState::Pending,
            decided_by: None,
            message: String::new(),
            updated_input_json: String::new(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(self.limits.approval_timeout_ms),
            decided_at_ms: None,
        };
        let (stored, inserted) = self.store.insert_permission(&pending).await?;
        if !inserted {
            return self.asked_again(agent, &stored).await;
        }
        tracing::info!(agent_id = %agent.id, request_id = %id, tool, "tool use waits for the owner");
        if let Err(err) = self
            .hot
            .publish(agent.team_id, events::permission(&stored))
            .await
        {
            // Stored: clients see it when they join (or list) again.
            tracing::warn!(agent_id = %agent.id, error = %err, "could not publish a tool request");
        }
        self.mark_waiting(agent.id, true).await?;
        Ok(None)
    }

    /// A request already stored, asked again: still waiting (the agent is marked so again), or
    /// the answer it got.
    async fn asked_again(
        &self,
        agent: &Agent,
        stored: &Permission,
    ) -> Result<Option<link::PermissionAnswer>, Error> {
        if stored.state == PermissionState::Pending {
            self.mark_waiting(agent.id, true).await?;
            return Ok(None);
        }
        Ok(Some(stored_answer(stored)))
    }

    /// What the rules say, and whose rules a deny was (the team's, or the owner's own); `Ask`
    /// when they cannot be read or the input is not understood.
    async fn decide(
        &self,
        agent: &Agent,
        tool: &str,
        input: &Value,
        project_dir: &str,
    ) -> (Decision, &'static str) {
        const ASK: (Decision, &str) = (Decision::Ask, "");
        let rules = match self.policy.rules(agent.team_id, agent.owner_id).await {
            Ok(rules) => rules,
            Err(err) => {
                tracing::warn!(agent_id = %agent.id, error = %err, "the tool-use policy could not be read; asking the owner");
                return ASK;
            }
        };
        let parsed = Policy::parse(&rules.team_allow, &rules.team_deny)
            .and_then(|team| Ok((team, Policy::parse(&rules.mine_allow, &rules.mine_deny)?)));
        let (team, mine) = match parsed {
            Ok(policies) => policies,
            Err(err) => {
                tracing::warn!(agent_id = %agent.id, error = %err, "a stored tool-use rule does not parse; asking the owner");
                return ASK;
            }
        };
        if !input.is_object() {
            return ASK;
        }
        // The rules' relative paths are read from the directory the agent works in, as its
        // vm-agent says (`.` when it did not: then only relative inputs match them).
        let project_dir = Path::new(match project_dir {
            "" => ".",
            dir => dir,
        });
        let decision = covibe_policy::decide(&team, &mine, tool, input, project_dir);
        let whose = match &decision {
            Decision::Deny { rule } if !team.deny.contains(rule) => "the owner's own policy",
            _ => "the team's policy",
        };
        (decision, whose)
    }

    /// Marks the agent waiting for approval, or running again when nothing of it waits any
    /// more, and tells the team when that changed its status.
    async fn mark_waiting(&self, id: AgentId, waiting: bool) -> Result<(), Error> {
        if !waiting && self.store.has_pending(id).await? {
            return Ok(());
        }
        if let Some(agent) = self.store.set_waiting(id, waiting).await? {
            tracing::info!(agent_id = %id, status = %agent.status, "agent status");
            self.publish_status(&agent).await;
        }
        Ok(())
    }

    /// The team's tool requests waiting for an answer, oldest first.
    pub async fn pending_permissions(&self, team: TeamId) -> Result<Vec<Permission>, Error> {
        Ok(self.store.pending_permissions(team).await?)
    }

    /// The owner's answer to one of their agent's waiting requests. Anyone else is refused (and
    /// the attempt audited); a request already decided is answered `conflict` saying how. An
    /// allow may change the tool's input (an answered question), but never past the rules: an
    /// input they deny is refused and the request still waits.
    pub async fn answer_permission(
        &self,
        caller: UserId,
        team: TeamId,
        agent_id: AgentId,
        request_id: &str,
        reply: &Reply,
    ) -> Result<Permission, Error> {
        let (answer, message) = (reply.answer, reply.message.as_str());
        let agent = self.get(team, agent_id).await?;
        if agent.owner_id != caller {
            tracing::warn!(target: "audit", agent_id = %agent_id, owner_id = %agent.owner_id, caller = %caller, "tool request answer refused: not the owner");
            let refused = AuditRecord {
                detail: Some(format!(
                    "an answer to request {} refused: not the agent's owner",
                    cut(request_id, MAX_KEY_BYTES)
                )),
                ..Self::record(&agent, &caller.to_string(), "agent.permission", "refused")
            };
            if let Err(err) = self.audit.record(&refused).await {
                tracing::error!(error = %err, "the audit log could not be written");
            }
            return Err(
                ApiError::forbidden("only the agent's owner can answer its tool requests").into(),
            );
        }
        let Some(stored) = self.store.permission(agent_id, request_id).await? else {
            return Err(ApiError::not_found("no such tool request").into());
        };
        let updated_input = match answer {
            Answer::Deny => "",
            Answer::Allow | Answer::AllowAlways => reply.updated_input_json.as_str(),
        };
        if !updated_input.is_empty() && stored.state == PermissionState::Pending {
            self.check_updated_input(&agent, &stored, updated_input)
                .await?;
        }
        let (state, message) = match answer {
            Answer::Allow | Answer::AllowAlways => (PermissionState::Allowed, String::new()),
            Answer::Deny if message.trim().is_empty() => (
                PermissionState::Denied,
                "denied by the agent's owner".to_owned(),
            ),
            Answer::Deny => (PermissionState::Denied, message.trim().to_owned()),
        };
        let by = caller.to_string();
        let decided = Decided {
            state,
            by: &by,
            message: &message,
            updated_input_json: updated_input,
            at_ms: now_ms(),
        };
        let Some(decided) = self
            .store
            .resolve_permission(agent_id, request_id, decided)
            .await?
        else {
            let now = self
                .store
                .permission(agent_id, request_id)
                .await?
                .unwrap_or(stored);
            return Err(late(&now, agent.owner_id).into());
        };
        let always = answer == Answer::AllowAlways;
        if always {
            self.store
                .grant_tool(agent_id, &decided.tool, &by, now_ms())
                .await?;
        }
        let what = match (state, always) {
            (PermissionState::Allowed, true) => "allowed by its owner, always for this agent",
            (PermissionState::Allowed, false) => "allowed by its owner",
            _ => "denied by its owner",
        };
        let changed = match updated_input.is_empty() {
            true => "",
            false => ", with the input changed",
        };
        self.audit_decision(Self::permission_record(
            &agent,
            &by,
            state == PermissionState::Allowed,
            format!(
                "{}: {what}{changed} (request {})",
                decided.tool, decided.request_id
            ),
        ))
        .await;
        tracing::info!(agent_id = %agent_id, request_id, tool = %decided.tool, state = state.as_str(), "tool request answered");
        self.resolved(&decided, true).await?;
        Ok(decided)
    }

    /// An owner's changed input is held to the same rules as the agent's own: one they deny is
    /// refused (`forbidden`, naming the rule), so an allow can never smuggle past a deny.
    async fn check_updated_input(
        &self,
        agent: &Agent,
        stored: &Permission,
        updated_input: &str,
    ) -> Result<(), Error> {
        let input: Value = serde_json::from_str(updated_input)
            .map_err(|_| ApiError::invalid("updated input is not valid JSON"))?;
        let (decision, whose) = self
            .decide(agent, &stored.tool, &input, &stored.project_dir)
            .await;
        match decision {
            Decision::Deny { rule } => {
                tracing::info!(agent_id = %agent.id, request_id = %stored.request_id, tool = %stored.tool, %rule, "an owner's changed input refused by the policy");
                Err(
                    ApiError::forbidden(format!("the changed input is denied by {whose}: {rule}"))
                        .into(),
                )
            }
            Decision::Allow { .. } | Decision::Ask => Ok(()),
        }
    }

    /// After a request was decided: the answer to the vm-agent (unless its agent ended), the
    /// team told, and the agent running again when nothing else of it waits.
    async fn resolved(&self, p: &Permission, tell_agent: bool) -> Result<(), Error> {
        if tell_agent {
            let command = Command {
                command: Some(command::Command::PermissionAnswer(stored_answer(p))),
            };
            if let Err(err) = self.send(p.agent_id, command).await {
                // The vm-agent asks again after it reconnects, and gets the stored answer.
                tracing::warn!(agent_id = %p.agent_id, error = %err, "could not pass a tool answer on");
            }
        }
        if let Err(err) = self
            .hot
            .publish(p.team_id, events::permission_resolved(p))
            .await
        {
            tracing::warn!(agent_id = %p.agent_id, error = %err, "could not publish a tool answer");
        }
        self.mark_waiting(p.agent_id, false).await
    }

    /// Denies every request that waited past the approval timeout, and closes those of agents
    /// that ended. Every replica may run this: each request is decided once.
    pub async fn expire_permissions(&self) -> Result<usize, Error> {
        let mut expired = 0;
        for (agent_id, request_id) in self.store.expired_permissions(now_ms()).await? {
            let Some(agent) = self.store.get(agent_id).await? else {
                continue;
            };
            let ended = agent.status.is_final() && agent.status != covibe_types::AgentStatus::Lost;
            let (state, by, message) = if ended {
                (PermissionState::Denied, ENDED, "the agent ended".to_owned())
            } else {
                let secs = (self.limits.approval_timeout_ms.max(1) + 999) / 1000;
                let unit = if secs == 1 { "second" } else { "seconds" };
                (
                    PermissionState::TimedOut,
                    TIMEOUT,
                    format!("no answer within {secs} {unit}"),
                )
            };
            let decided = Decided {
                state,
                by,
                message: &message,
                updated_input_json: "",
                at_ms: now_ms(),
            };
            let Some(decided) = self
                .store
                .resolve_permission(agent_id, &request_id, decided)
                .await?
            else {
                continue; // answered meanwhile, or by another replica
            };
            self.audit_decision(Self::permission_record(
                &agent,
                by,
                false,
                format!("{}: denied, {message} (request {request_id})", decided.tool),
            ))
            .await;
            tracing::info!(agent_id = %agent_id, request_id, tool = %decided.tool, by, "tool request closed unanswered");
            self.resolved(&decided, !ended).await?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Runs `expire_permissions` several times per timeout (at least every 5 s), for as long as
    /// the process lives.
    pub fn spawn_approval_sweeper(self: &std::sync::Arc<Self>) {
        let agents = self.clone();
        let period_ms = u64::try_from(self.limits.approval_timeout_ms / 4)
            .unwrap_or(5_000)
            .clamp(100, 5_000);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(period_ms));
            loop {
                tick.tick().await;
                if let Err(err) = agents.expire_permissions().await {
                    tracing::warn!(error = %ApiError::from(err), "tool request sweep failed");
                }
            }
        });
    }
}

/// The `conflict` a late answer gets: what was decided, and by whom.
fn late(p: &Permission, owner: UserId) -> ApiError {
    let by = match p.decided_by.as_deref() {
        Some(TIMEOUT) => "the timeout".to_owned(),
        Some(ENDED) => "the agent ending".to_owned(),
        Some(by) if by == owner.to_string() => "the agent's owner".to_owned(),
        Some(by) => by.to_owned(),
        None => "someone else".to_owned(),
    };
    let what = match p.state {
        PermissionState::Allowed => "allowed",
        PermissionState::TimedOut | PermissionState::Denied | PermissionState::Pending => "denied",
    };
    ApiError::new(
        Code::Conflict,
        format!("this request was already answered: {what} by {by}"),
    )
}
