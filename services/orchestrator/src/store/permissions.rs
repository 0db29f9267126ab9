//! The store of tool uses asked of an agent's owner, and of the tools an owner allowed for the
//! rest of an agent's run. Every decision is one conditional update, so of two answers (or an
//! answer and the timeout, on any replica) exactly one wins.

use async_trait::async_trait;
use covibe_types::{AgentId, AgentStatus, TeamId};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Set, TryInsertResult,
};

use super::SeaAgentStore;
use super::entities::{agent, grant, permission};
use crate::model::{Agent, Permission, PermissionState};

/// Waiting requests read at once, at most (per team, or per sweep).
const MAX_READ: u64 = 500;

#[async_trait]
pub trait PermissionStore: Send + Sync + 'static {
    /// Stores a pending request unless one with the same `(agent, request id)` is stored (a
    /// vm-agent resends its open requests after a reconnect): the stored one, and whether it
    /// was stored now.
    async fn insert_permission(&self, p: &Permission) -> Result<(Permission, bool), DbErr>;
    async fn permission(
        &self,
        agent: AgentId,
        request_id: &str,
    ) -> Result<Option<Permission>, DbErr>;
    /// The team's pending requests, oldest first.
    async fn pending_permissions(&self, team: TeamId) -> Result<Vec<Permission>, DbErr>;
    /// Decides a pending request: `None` when it is not pending (any more), which changes
    /// nothing.
    async fn resolve_permission(
        &self,
        agent: AgentId,
        request_id: &str,
        decision: Decided<'_>,
    ) -> Result<Option<Permission>, DbErr>;
    /// Pending requests past their expiry, or of agents that ended (killed, failed or
    /// completed): `(agent, request id)`.
    async fn expired_permissions(&self, now_ms: i64) -> Result<Vec<(AgentId, String)>, DbErr>;
    /// Whether any request of the agent is pending.
    async fn has_pending(&self, agent: AgentId) -> Result<bool, DbErr>;
    /// Remembers that the owner allowed `tool` for the rest of the agent's run.
    async fn grant_tool(
        &self,
        agent: AgentId,
        tool: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<(), DbErr>;
    async fn tool_granted(&self, agent: AgentId, tool: &str) -> Result<bool, DbErr>;
    /// Marks the agent waiting for approval (from starting, running or lost), or, with
    /// `waiting` false, running again (from waiting only): the updated agent, or `None` when
    /// it was in no state to move.
    async fn set_waiting(&self, id: AgentId, waiting: bool) -> Result<Option<Agent>, DbErr>;
}

/// How a pending request was decided.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub state: PermissionState,
    pub by: &'a str,
    pub message: &'a str,
    /// With an allow: the input the tool runs with instead (empty: unchanged).
    pub updated_input_json: &'a str,
    pub at_ms: i64,
}

fn permission_of(m: permission::Model) -> Result<Permission, DbErr> {
    let bad = |what: &str| {
        DbErr::Custom(format!(
            "bad {what} in agent_permissions row {} {}",
            m.agent_id, m.request_id
        ))
    };
    Ok(Permission {
        agent_id: m.agent_id.parse().map_err(|_| bad("agent_id"))?,
        team_id: m.team_id.parse().map_err(|_| bad("team_id"))?,
        owner_id: m.owner_id.parse().map_err(|_| bad("owner_id"))?,
        state: PermissionState::parse(&m.state).ok_or_else(|| bad("state"))?,
        request_id: m.request_id,
        tool: m.tool,
        tool_use_id: m.tool_use_id,
        input_json: m.input_json,
        summary: m.summary,
        project_dir: m.project_dir,
        decided_by: m.decided_by,
        message: m.message,
        updated_input_json: m.updated_input_json,
        created_at_ms: m.created_at_ms,
        expires_at_ms: m.expires_at_ms,
        decided_at_ms: m.decided_at_ms,
    })
}

fn pending() -> &'static str {
    PermissionState::Pending.as_str()
}

#[async_trait]
impl PermissionStore for SeaAgentStore {
    async fn insert_permission(&self, p: &Permission) -> Result<(Permission, bool), DbErr> {
        let row = permission::ActiveModel {
            agent_id: Set(p.agent_id.to_string()),
            request_id: Set(p.request_id.clone()),
            team_id: Set(p.team_id.to_string()),
            owner_id: Set(p.owner_id.to_string()),
            tool: Set(p.tool.clone()),
            tool_use_id: Set(p.tool_use_id.clone()),
            input_json: Set(p.input_json.clone()),
            summary: Set(p.summary.clone()),
            state: Set(p.state.as_str().to_owned()),
            decided_by: Set(p.decided_by.clone()),
            message: Set(p.message.clone()),
            created_at_ms: Set(p.created_at_ms),
            expires_at_ms: Set(p.expires_at_ms),
            decided_at_ms: Set(p.decided_at_ms),
            project_dir: Set(p.project_dir.clone()),
            updated_input_json: Set(p.updated_input_json.clone()),
        };
        // The primary key decides: of a request and its resend racing each other, one inserts.
        let inserted = permission::Entity::insert(row)
            .on_conflict_do_nothing_on([permission::Column::AgentId, permission::Column::RequestId])
            .exec_without_returning(&self.db)
            .await?;
        let inserted = matches!(inserted, TryInsertResult::Inserted(n) if n > 0);
        let stored = self
            .permission(p.agent_id, &p.request_id)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the permission just stored".to_owned()))?;
        Ok((stored, inserted))
    }

    async fn permission(
        &self,
        agent: AgentId,
        request_id: &str,
    ) -> Result<Option<Permission>, DbErr> {
        permission::Entity::find_by_id((agent.to_string(), request_id.to_owned()))
            .one(&self.db)
            .await?
            .map(permission_of)
            .transpose()
    }

    async fn pending_permissions(&self, team: TeamId) -> Result<Vec<Permission>, DbErr> {
        permission::Entity::find()
            .filter(permission::Column::TeamId.eq(team.to_string()))
            .filter(permission::Column::State.eq(pending()))
            .order_by_asc(permission::Column::CreatedAtMs)
            .limit(MAX_READ)
            .all(&self.db)
            .await?
            .into_iter()
            .map(permission_of)
            .collect()
    }

    async fn resolve_permission(
        &self,
        agent: AgentId,
        request_id: &str,
        d: Decided<'_>,
    ) -> Result<Option<Permission>, DbErr> {
        let updated = permission::Entity::update_many()
            .col_expr(permission::Column::State, Expr::value(d.state.as_str()))
            .col_expr(permission::Column::DecidedBy, Expr::value(d.by.to_owned()))
            .col_expr(
                permission::Column::Message,
                Expr::value(d.message.to_owned()),
            )
            .col_expr(
                permission::Column::UpdatedInputJson,
                Expr::value(d.updated_input_json.to_owned()),
            )
            .col_expr(permission::Column::DecidedAtMs, Expr::value(d.at_ms))
            .filter(permission::Column::AgentId.eq(agent.to_string()))
            .filter(permission::Column::RequestId.eq(request_id))
            .filter(permission::Column::State.eq(pending()))
            .exec(&self.db)
            .await?;
        if updated.rows_affected != 1 {
            return Ok(None);
        }
        self.permission(agent, request_id).await
    }

    async fn expired_permissions(&self, now_ms: i64) -> Result<Vec<(AgentId, String)>, DbErr> {
        let ended = [
            AgentStatus::Completed,
            AgentStatus::Failed,
            AgentStatus::Killed,
        ]
        .map(AgentStatus::as_str);
        let ended_agents = agent::Entity::find()
            .select_only()
            .column(agent::Column::Id)
            .filter(agent::Column::Status.is_in(ended))
            .as_query()
            .to_owned();
        let rows: Vec<(String, String)> = permission::Entity::find()
            .select_only()
            .column(permission::Column::AgentId)
            .column(permission::Column::RequestId)
            .filter(permission::Column::State.eq(pending()))
            .filter(
                sea_orm::Condition::any()
                    .add(permission::Column::ExpiresAtMs.lte(now_ms))
                    .add(permission::Column::AgentId.in_subquery(ended_agents)),
            )
            .limit(MAX_READ)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(agent, request)| Some((agent.parse().ok()?, request)))
            .collect())
    }

    async fn has_pending(&self, agent: AgentId) -> Result<bool, DbErr> {
        let count = permission::Entity::find()
            .filter(permission::Column::AgentId.eq(agent.to_string()))
            .filter(permission::Column::State.eq(pending()))
            .count(&self.db)
            .await?;
        Ok(count > 0)
    }

    async fn grant_tool(
        &self,
        agent: AgentId,
        tool: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<(), DbErr> {
        let row = grant::ActiveModel {
            agent_id: Set(agent.to_string()),
            tool: Set(tool.to_owned()),
            granted_by: Set(by.to_owned()),
            granted_at_ms: Set(at_ms),
        };
        grant::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([grant::Column::AgentId, grant::Column::Tool])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map(|_| ())
    }

    async fn tool_granted(&self, agent: AgentId, tool: &str) -> Result<bool, DbErr> {
        Ok(
            grant::Entity::find_by_id((agent.to_string(), tool.to_owned()))
                .one(&self.db)
                .await?
                .is_some(),
        )
    }

    async fn set_waiting(&self, id: AgentId, waiting: bool) -> Result<Option<Agent>, DbErr> {
        use super::AgentStore;
        let (from, to) = if waiting {
            (
                vec![
                    AgentStatus::Starting.as_str(),
                    AgentStatus::Running.as_str(),
                    AgentStatus::Lost.as_str(),
                ],
                AgentStatus::WaitingForApproval,
            )
        } else {
            (
                vec![AgentStatus::WaitingForApproval.as_str()],
                AgentStatus::Running,
            )
        };
        let updated = agent::Entity::update_many()
            .col_expr(agent::Column::Status, Expr::value(to.as_str()))
            // Set when the agent first ran; an agent asking before it said so runs now.
            .col_expr(
                agent::Column::StartedAtMs,
                Expr::col(agent::Column::StartedAtMs).if_null(covibe_types::now_ms()),
            )
            .filter(agent::Column::Id.eq(id.to_string()))
            .filter(agent::Column::Status.is_in(from))
            .exec(&self.db)
            .await?;
        if updated.rows_affected != 1 {
            return Ok(None);
        }
        self.get(id).await
    }
}
