//! The agent domain: spawning through the vm-connector, the lifecycle, output ingest and
//! history. Every member-facing call checks the caller's team itself.

use std::sync::Arc;

use bytes::Bytes;
use covibe_bootstrap::{Client, bearer};
use covibe_proto::events::v1::{AgentCommand, ControlMessage, control_message};
use covibe_proto::prost::Message;
use covibe_proto::vmagent::v1::{Command, command};
use covibe_proto::vmconnector::v1 as vmc;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::{AuditLog, AuditRecord, HotStore};
use covibe_types::{AgentId, AgentStatus, ApiError, Code, TeamId, UserId, now_ms};

use crate::Error;
use crate::events;
use crate::model::{Agent, Limits, OutputPage, StoredChunk};
use crate::page::{FIRST_READ, Page};
use crate::policy::{NoPolicy, PolicySource};
use crate::store::AgentStore;

mod approvals;

pub struct Agents {
    store: Arc<dyn AgentStore>,
    hot: Arc<dyn HotStore>,
    connector: VmConnectorServiceClient<Client>,
    /// Where vm-agents dial back to.
    link_url: String,
    limits: Limits,
    audit: AuditLog,
    /// The team's tool-use rules (none by default: every tool request goes to the owner).
    policy: Arc<dyn PolicySource>,
}

pub(crate) use covibe_identity::code::hash_token;

impl Agents {
    pub fn new(
        store: Arc<dyn AgentStore>,
        hot: Arc<dyn HotStore>,
        connector: VmConnectorServiceClient<Client>,
        link_url: String,
        limits: Limits,
        audit: AuditLog,
    ) -> Self {
        Self {
            store,
            hot,
            connector,
            link_url,
            limits,
            audit,
            policy: Arc::new(NoPolicy),
        }
    }

    /// Decides agents' tool requests by the rules `policy` reads.
    #[must_use]
    pub fn with_policy(mut self, policy: Arc<dyn PolicySource>) -> Self {
        self.policy = policy;
        self
    }

    /// An audit record of a control of `agent` by `actor`.
    fn record(agent: &Agent, actor: &str, action: &str, result: &str) -> AuditRecord {
        AuditRecord {
            team_id: agent.team_id.to_string(),
            actor_id: actor.to_owned(),
            owner_id: agent.owner_id.to_string(),
            vm_id: (!agent.vm_id.is_empty()).then(|| agent.vm_id.clone()),
            agent_id: Some(agent.id.to_string()),
            action: action.to_owned(),
            strategy: (!agent.strategy.is_empty()).then(|| agent.strategy.clone()),
            result: result.to_owned(),
            ..Default::default()
        }
    }

    /// Writes an audit record before acting; when it cannot be written, nothing is done.
    async fn audit(&self, record: AuditRecord) -> Result<(), Error> {
        self.audit.record(&record).await.map_err(|err| {
            tracing::error!(error = %err, action = %record.action, "the audit log could not be written");
            Error::Api(ApiError::unavailable(
                "the audit log could not be written, so nothing was done; try again later",
            ))
        })
    }

    pub(crate) fn store(&self) -> &dyn AgentStore {
        self.store.as_ref()
    }

    pub(crate) fn hot(&self) -> &Arc<dyn HotStore> {
        &self.hot
    }

    pub(crate) fn kill_grace_ms(&self) -> u32 {
        self.limits.kill_grace_ms
    }

    /// Passes a kill, interrupt or input to the agent's vm-agent. Only the owner may; everyone
    /// else in the team is refused (and the attempt is logged for audit).
    pub async fn control(
        &self,
        caller: UserId,
        team: TeamId,
        id: AgentId,
        command: Command,
    ) -> Result<(), Error> {
        let agent = self.get(team, id).await?;
        let kind = match &command.command {
            Some(command::Command::Kill(_)) => "kill",
            Some(command::Command::Interrupt(_)) => "interrupt",
            Some(command::Command::Input(_)) => "input",
            Some(command::Command::PermissionAnswer(_)) | None => {
                return Err(ApiError::invalid("command must be kill, interrupt or input").into());
            }
        };
        if agent.owner_id != caller {
            tracing::warn!(target: "audit", agent_id = %id, owner_id = %agent.owner_id, caller = %caller, kind, "agent control refused: not the owner");
            let refused = Self::record(
                &agent,
                &caller.to_string(),
                &format!("agent.{kind}"),
                "refused",
            );
            if let Err(err) = self.audit.record(&refused).await {
                tracing::error!(error = %err, "the audit log could not be written");
            }
            return Err(ApiError::forbidden("only the agent's owner can control it").into());
        }
        if agent.status.is_final() {
            return Err(ApiError::new(
                Code::Conflict,
                format!("the agent has already ended ({})", agent.status),
            )
            .into());
        }
        self.audit(Self::record(
            &agent,
            &caller.to_string(),
            &format!("agent.{kind}"),
            "ok",
        ))
        .await?;
        tracing::info!(target: "audit", agent_id = %id, caller = %caller, kind, "agent control");
        self.send(id, command).await
    }

    /// Passes a command down to the agent's vm-agent (a kill is also remembered, for a
    /// vm-agent that reconnects later).
    async fn send(&self, id: AgentId, command: Command) -> Result<(), Error> {
        let mut command = command;
        if let Some(command::Command::Kill(kill)) = &mut command.command {
            if kill.grace_ms == 0 {
                kill.grace_ms = self.limits.kill_grace_ms;
            }
            self.store.request_kill(id, now_ms()).await?;
        }
        let envelope = ControlMessage {
            message: Some(control_message::Message::Agent(AgentCommand {
                agent_id: id.to_string(),
                command: Some(command),
            })),
        };
        self.hot
            .publish_control(Bytes::from(envelope.encode_to_vec()))
            .await?;
        Ok(())
    }

    /// Stops every agent of a member removed from their team (pending, starting or running).
    pub async fn stop_agents_of(&self, owner: UserId) -> Result<usize, Error> {
        let ids = self.store.active_of(owner).await?;
        for id in &ids {
            let kill = Command {
                command: Some(command::Command::Kill(covibe_proto::vmagent::v1::Kill {
                    grace_ms: 0,
                })),
            };
            self.send(*id, kill).await?;
        }
        if !ids.is_empty() {
            tracing::info!(target: "audit", user_id = %owner, agents = ids.len(), "stopped a removed member's agents");
        }
        Ok(ids.len())
    }

    /// Stops the agents of members removed from their team: those already removed (the
    /// orchestrator may have been down when it happened), then each as it is announced.
    pub fn spawn_removal_watcher(self: &Arc<Self>, revocations: covibe_identity::Revocations) {
        let agents = self.clone();
        let mut ended = revocations.subscribe();
        tokio::spawn(async move {
            for user in revocations.removed_users() {
                if let Err(err) = agents.stop_agents_of(user).await {
                    tracing::warn!(error = %ApiError::from(err), "could not stop a removed member's agents");
                }
            }
            loop {
                let users = match ended.recv().await {
                    Ok(ended) => ended.users.clone(),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        revocations.removed_users()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                for user in users {
                    if let Err(err) = agents.stop_agents_of(user).await {
                        tracing::warn!(error = %ApiError::from(err), "could not stop a removed member's agents");
                    }
                }
            }
        });
    }

    /// Creates the agent and asks the vm-connector to start a vm-agent for it on the owner's VM.
    /// `member_token` is forwarded so the connector checks the caller itself.
    pub async fn spawn(
        &self,
        owner: UserId,
        team: TeamId,
        member_token: &str,
        task: &str,
        vm_id: &str,
    ) -> Result<Agent, Error> {
        let task = task.trim();
        if task.is_empty() {
            return Err(ApiError::invalid("task must not be empty").into());
        }
        if task.len() > self.limits.max_task_bytes {
            return Err(ApiError::invalid(format!(
                "task is longer than {} bytes",
                self.limits.max_task_bytes
            ))
            .into());
        }
        // Limits are counted in the database, so they hold across orchestrator replicas.
        let running = self.store.count_active(owner).await?;
        if running >= u64::from(self.limits.max_running_agents) {
            return Err(ApiError::new(
                Code::Conflict,
                format!(
                    "you already have {running} agents running (the limit is {}); wait for one to end or kill one",
                    self.limits.max_running_agents
                ),
            )
            .into());
        }
        let window_start = now_ms() - 60_000;
        let recent = self.store.count_created_since(owner, window_start).await?;
        if recent >= u64::from(self.limits.spawns_per_minute) {
            // A place frees when the oldest spawn of the minute leaves it.
            let oldest = self
                .store
                .oldest_created_since(owner, window_start)
                .await?
                .unwrap_or(window_start);
            let wait_ms = oldest.saturating_sub(window_start).max(0);
            let wait_secs = u64::try_from(wait_ms).map_or(60, |ms| ms.div_ceil(1000));
            return Err(ApiError::rate_limited(
                format!(
                    "at most {} spawns a minute; try again in {wait_secs} s",
                    self.limits.spawns_per_minute
                ),
                wait_secs,
            )
            .into());
        }
        let agent_token = covibe_identity::code::new_token();
        let agent = Agent {
            id: AgentId::new(),
            team_id: team,
            owner_id: owner,
            vm_id: vm_id.to_owned(),
            strategy: String::new(),
            task: task.to_owned(),
            status: AgentStatus::Pending,
            exit_code: None,
            created_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
            output_seq: 0,
            outcome: None,
        };
        self.store.insert(&agent, &hash_token(&agent_token)).await?;
        tracing::info!(agent_id = %agent.id, team_id = %team, owner_id = %owner, "agent created");
        self.publish_status(&agent).await;
        // Starting before the connector answers: the vm-agent may report running before it does.
        let agent = self
            .transition(agent.id, AgentStatus::Starting, None)
            .await?
            .unwrap_or(agent);
        let request = bearer(
            vmc::StartAgentRequest {
                agent_id: agent.id.to_string(),
                user_id: owner.to_string(),
                team_id: team.to_string(),
                vm_id: vm_id.to_owned(),
                task: agent.task.clone(),
                agent_token,
                link_url: self.link_url.clone(),
            },
            member_token,
        );
        match self.connector.clone().start_agent(request).await {
            Ok(started) => {
                let started = started.into_inner();
                self.store
                    .set_vm(agent.id, &started.vm_id, &started.strategy)
                    .await?;
                Ok(self.store.get(agent.id).await?.unwrap_or(agent))
            }
            Err(status) => {
                tracing::warn!(agent_id = %agent.id, error = %status, "vm-connector could not start the agent");
                self.transition(agent.id, AgentStatus::Failed, None).await?;
                Err(ApiError::from_status(&status).into())
            }
        }
    }

    /// Moves an agent forward in its lifecycle and tells the team. `None` when the move was not
    /// a step forward (a repeated or stale report), which changes nothing.
    pub async fn transition(
        &self,
        id: AgentId,
        status: AgentStatus,
        exit_code: Option<i32>,
    ) -> Result<Option<Agent>, Error> {
        let updated = self
            .store
            .transition(id, status, exit_code, now_ms())
            .await?;
        if let Some(agent) = &updated {
            tracing::info!(agent_id = %id, status = %status, exit_code, "agent status");
            self.publish_status(agent).await;
        }
        Ok(updated)
    }

    async fn publish_status(&self, agent: &Agent) {
        if let Err(err) = self.hot.publish(agent.team_id, events::status(agent)).await {
            // Durable state is already written; viewers resync from it.
            tracing::warn!(agent_id = %agent.id, error = %err, "could not publish a status change");
        }
    }

    /// Marks `lost` every agent whose vm-agent has been silent past the limit. Every replica may
    /// run this: the transition is conditional, so an agent is marked once.
    pub async fn mark_lost(&self) -> Result<usize, Error> {
        let silent = self
            .store
            .silent_since(now_ms() - self.limits.lost_after_ms)
            .await?;
        let mut marked = 0;
        for id in silent {
            if self
                .transition(id, AgentStatus::Lost, None)
                .await?
                .is_some()
            {
                tracing::warn!(agent_id = %id, "vm-agent silent too long, agent marked lost");
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// Runs `mark_lost` a few times per timeout, for as long as the process lives.
    pub fn spawn_lost_sweeper(self: &Arc<Self>) {
        let agents = self.clone();
        let period_ms = u64::try_from(self.limits.lost_after_ms / 4)
            .unwrap_or(30_000)
            .clamp(500, 30_000);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(period_ms));
            loop {
                tick.tick().await;
                if let Err(err) = agents.mark_lost().await {
                    tracing::warn!(error = %err, "lost-agent sweep failed");
                }
            }
        });
    }

    pub async fn list(&self, team: TeamId) -> Result<Vec<Agent>, Error> {
        Ok(self.store.list(team).await?)
    }

    /// The agent, if it belongs to `team` (another team's agent is reported as not found).
    pub async fn get(&self, team: TeamId, id: AgentId) -> Result<Agent, Error> {
        match self.store.get(id).await? {
            Some(agent) if agent.team_id == team => Ok(agent),
            _ => Err(ApiError::not_found("no such agent").into()),
        }
    }

    /// Output from `from` on, from the hot buffer when it holds the range (or a full page of
    /// it), else the database: at most `limit` chunks and [`Limits::max_page_bytes`] bytes,
    /// always at least one chunk, saying whether more is stored past the page.
    pub async fn output(
        &self,
        team: TeamId,
        id: AgentId,
        from: u64,
        limit: u64,
    ) -> Result<OutputPage, Error> {
        let agent = self.get(team, id).await?;
        let limit = limit.clamp(1, self.limits.max_page);
        let end = agent.output_seq;
        if from >= end {
            return Ok(OutputPage {
                chunks: Vec::new(),
                next_seq: from.max(end),
                more: false,
            });
        }
        let wanted = limit.min(end - from);
        let mut page = Page::new(from, wanted, self.limits.max_page_bytes);
        let hot = match self
            .hot
            .range(id, from, usize::try_from(wanted).unwrap_or(usize::MAX))
            .await
        {
            Ok(chunks) => chunks,
            Err(err) => {
                tracing::warn!(agent_id = %id, error = %err, "hot buffer unavailable; reading the database");
                Vec::new()
            }
        };
        let held = hot.len();
        for c in hot {
            let chunk = StoredChunk {
                seq: c.seq,
                stream: c.stream,
                data: c.data,
                event: c.event,
            };
            if !page.push(chunk) {
                break;
            }
        }
        if !page.is_done() {
            tracing::debug!(agent_id = %id, from, wanted, held, "history: the hot buffer does not hold the page; reading the database");
            page = Page::new(from, wanted, self.limits.max_page_bytes);
            // Read in steps sized by the room left, so that long lines are not read only to be
            // left out of the page.
            let mut step = FIRST_READ.min(wanted);
            while !page.is_done() {
                let read = self.store.output(id, page.next_seq(), step).await?;
                let got = read.len() as u64;
                for chunk in read {
                    if !page.push(chunk) {
                        break;
                    }
                }
                if got < step {
                    break; // the database holds no more (or has a gap)
                }
                step = page.next_step();
            }
        }
        Ok(page.finish(end))
    }
}
