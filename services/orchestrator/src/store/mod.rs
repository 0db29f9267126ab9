//! The agent store: the trait the domain needs and its SeaORM implementation.

mod entities;
mod migration;

use async_trait::async_trait;
use bytes::Bytes;
use covibe_types::{AgentId, AgentStatus, TeamId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

pub use migration::Migrator;

use crate::agents::Agent;
use entities::{agent, output};

/// One stored output chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub seq: u64,
    pub stream: i32,
    pub data: Bytes,
}

#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    async fn insert(&self, agent: &Agent, token_hash: &str) -> Result<(), DbErr>;
    async fn get(&self, id: AgentId) -> Result<Option<Agent>, DbErr>;
    /// The hash of the agent's link token.
    async fn token_hash(&self, id: AgentId) -> Result<Option<String>, DbErr>;
    async fn list(&self, team: TeamId) -> Result<Vec<Agent>, DbErr>;
    /// Moves the agent to `status` if that is a step forward; returns the updated agent, or
    /// `None` when the move was not allowed (the agent is unchanged then).
    async fn transition(
        &self,
        id: AgentId,
        status: AgentStatus,
        exit_code: Option<i32>,
        at_ms: i64,
    ) -> Result<Option<Agent>, DbErr>;
    /// Stores chunks (ignoring any already stored) and advances the agent's `output_seq` over
    /// every contiguous chunk now held. Returns the new `output_seq`.
    async fn append_output(&self, id: AgentId, chunks: &[StoredChunk]) -> Result<u64, DbErr>;
    async fn output(&self, id: AgentId, from: u64, limit: u64) -> Result<Vec<StoredChunk>, DbErr>;
}

pub struct SeaAgentStore {
    db: DatabaseConnection,
}

impl SeaAgentStore {
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<Migrator>(&db).await?;
        Ok(Self { db })
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn agent_of(m: agent::Model) -> Result<Agent, DbErr> {
    let bad = |what: &str| DbErr::Custom(format!("bad {what} in agents row {}", m.id));
    Ok(Agent {
        id: m.id.parse().map_err(|_| bad("id"))?,
        team_id: m.team_id.parse().map_err(|_| bad("team_id"))?,
        owner_id: m.owner_id.parse().map_err(|_| bad("owner_id"))?,
        vm_id: m.vm_id.clone(),
        task: m.task.clone(),
        status: m.status.parse().map_err(|()| bad("status"))?,
        exit_code: m.exit_code,
        created_at_ms: m.created_at_ms,
        started_at_ms: m.started_at_ms,
        finished_at_ms: m.finished_at_ms,
        output_seq: to_u64(m.output_seq),
    })
}

#[async_trait]
impl AgentStore for SeaAgentStore {
    async fn insert(&self, a: &Agent, token_hash: &str) -> Result<(), DbErr> {
        agent::ActiveModel {
            id: Set(a.id.to_string()),
            team_id: Set(a.team_id.to_string()),
            owner_id: Set(a.owner_id.to_string()),
            vm_id: Set(a.vm_id.clone()),
            task: Set(a.task.clone()),
            status: Set(a.status.as_str().to_owned()),
            exit_code: Set(a.exit_code),
            created_at_ms: Set(a.created_at_ms),
            started_at_ms: Set(a.started_at_ms),
            finished_at_ms: Set(a.finished_at_ms),
            output_seq: Set(to_i64(a.output_seq)),
            token_hash: Set(token_hash.to_owned()),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    async fn get(&self, id: AgentId) -> Result<Option<Agent>, DbErr> {
        agent::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(agent_of)
            .transpose()
    }

    async fn token_hash(&self, id: AgentId) -> Result<Option<String>, DbErr> {
        Ok(agent::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|m| m.token_hash))
    }

    async fn list(&self, team: TeamId) -> Result<Vec<Agent>, DbErr> {
        agent::Entity::find()
            .filter(agent::Column::TeamId.eq(team.to_string()))
            .order_by_desc(agent::Column::CreatedAtMs)
            .limit(500)
            .all(&self.db)
            .await?
            .into_iter()
            .map(agent_of)
            .collect()
    }

    async fn transition(
        &self,
        id: AgentId,
        status: AgentStatus,
        exit_code: Option<i32>,
        at_ms: i64,
    ) -> Result<Option<Agent>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = agent::Entity::find_by_id(id.to_string()).one(&txn).await? else {
            return Ok(None);
        };
        let current: AgentStatus = row
            .status
            .parse()
            .map_err(|()| DbErr::Custom("bad status".to_owned()))?;
        if !current.can_become(status) {
            return Ok(None);
        }
        let mut update: agent::ActiveModel = row.into();
        update.status = Set(status.as_str().to_owned());
        if status == AgentStatus::Running {
            update.started_at_ms = Set(Some(at_ms));
        }
        if status.is_final() {
            update.finished_at_ms = Set(Some(at_ms));
            update.exit_code = Set(exit_code);
        }
        let updated = update.update(&txn).await?;
        txn.commit().await?;
        agent_of(updated).map(Some)
    }

    async fn append_output(&self, id: AgentId, chunks: &[StoredChunk]) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        if !chunks.is_empty() {
            let rows = chunks.iter().map(|c| output::ActiveModel {
                agent_id: Set(id.to_string()),
                seq: Set(to_i64(c.seq)),
                stream: Set(c.stream),
                data: Set(c.data.to_vec()),
            });
            output::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([output::Column::AgentId, output::Column::Seq])
                .exec_without_returning(&txn)
                .await?;
        }
        let Some(row) = agent::Entity::find_by_id(id.to_string()).one(&txn).await? else {
            return Err(DbErr::RecordNotFound(format!("agent {id}")));
        };
        // Advance over what is now contiguous: chunks arrive in order, so this is the common case.
        let mut next = to_u64(row.output_seq);
        for chunk in chunks {
            if chunk.seq == next {
                next += 1;
            }
        }
        if next != to_u64(row.output_seq) {
            agent::Entity::update_many()
                .col_expr(agent::Column::OutputSeq, Expr::value(to_i64(next)))
                .filter(agent::Column::Id.eq(id.to_string()))
                .filter(agent::Column::OutputSeq.lt(to_i64(next)))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(next)
    }

    async fn output(&self, id: AgentId, from: u64, limit: u64) -> Result<Vec<StoredChunk>, DbErr> {
        Ok(output::Entity::find()
            .filter(output::Column::AgentId.eq(id.to_string()))
            .filter(output::Column::Seq.gte(to_i64(from)))
            .order_by_asc(output::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| StoredChunk {
                seq: to_u64(m.seq),
                stream: m.stream,
                data: Bytes::from(m.data),
            })
            .collect())
    }
}
