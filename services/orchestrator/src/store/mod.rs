//! The agent store: the trait the domain needs and its SeaORM implementation.

mod entities;
mod migration;

use async_trait::async_trait;
use bytes::Bytes;
use covibe_types::{AgentId, AgentStatus, TeamId, UserId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

pub use migration::Migrator;

const ALL_STATUSES: [AgentStatus; 7] = [
    AgentStatus::Pending,
    AgentStatus::Starting,
    AgentStatus::Running,
    AgentStatus::Completed,
    AgentStatus::Failed,
    AgentStatus::Killed,
    AgentStatus::Lost,
];

use crate::agents::Agent;
use crate::stream_json::Outcome;
use entities::{agent, output};

/// What one `append_output` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The agent's `output_seq` afterwards: every chunk below it is stored.
    pub next: u64,
    /// The seqs this call stored for the first time, ascending. Only these are news: a chunk
    /// stored earlier (a resend, or a second link racing the first) was already announced.
    pub inserted: Vec<u64>,
}

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
    /// Remembers that the owner asked to kill the agent, so a vm-agent that reconnects later is
    /// told at once.
    async fn request_kill(&self, id: AgentId, at_ms: i64) -> Result<(), DbErr>;
    async fn kill_requested(&self, id: AgentId) -> Result<bool, DbErr>;
    /// The owner's agents that are pending, starting or running.
    async fn count_active(&self, owner: UserId) -> Result<u64, DbErr>;
    /// The owner's agents created at or after `since_ms`.
    async fn count_created_since(&self, owner: UserId, since_ms: i64) -> Result<u64, DbErr>;
    /// Notes that the agent's vm-agent was heard from at `at_ms`.
    async fn touch(&self, id: AgentId, at_ms: i64) -> Result<(), DbErr>;
    /// Agents still starting or running whose vm-agent was last heard from (or, never heard
    /// from, created) before `before_ms`.
    async fn silent_since(&self, before_ms: i64) -> Result<Vec<AgentId>, DbErr>;
    /// Keeps the cost, turns and duration of the agent's final result.
    async fn record_outcome(&self, id: AgentId, outcome: Outcome) -> Result<(), DbErr>;
    /// Records which VM the agent was started on.
    async fn set_vm(&self, id: AgentId, vm_id: &str) -> Result<(), DbErr>;
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
    async fn append_output(&self, id: AgentId, chunks: &[StoredChunk]) -> Result<Appended, DbErr>;
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
        outcome: m.cost_usd.map(|cost_usd| Outcome {
            cost_usd,
            turns: m.num_turns.unwrap_or(0),
            duration_ms: m.duration_ms.unwrap_or(0),
        }),
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
            kill_requested_ms: Set(None),
            cost_usd: Set(None),
            num_turns: Set(None),
            duration_ms: Set(None),
            last_seen_ms: Set(None),
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

    async fn request_kill(&self, id: AgentId, at_ms: i64) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::KillRequestedMs, Expr::value(at_ms))
            .filter(agent::Column::Id.eq(id.to_string()))
            .filter(agent::Column::KillRequestedMs.is_null())
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn kill_requested(&self, id: AgentId) -> Result<bool, DbErr> {
        let row = agent::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?;
        Ok(row.is_some_and(|r| r.kill_requested_ms.is_some()))
    }

    async fn count_active(&self, owner: UserId) -> Result<u64, DbErr> {
        let active = [
            AgentStatus::Pending,
            AgentStatus::Starting,
            AgentStatus::Running,
        ]
        .map(AgentStatus::as_str);
        agent::Entity::find()
            .filter(agent::Column::OwnerId.eq(owner.to_string()))
            .filter(agent::Column::Status.is_in(active))
            .count(&self.db)
            .await
    }

    async fn count_created_since(&self, owner: UserId, since_ms: i64) -> Result<u64, DbErr> {
        agent::Entity::find()
            .filter(agent::Column::OwnerId.eq(owner.to_string()))
            .filter(agent::Column::CreatedAtMs.gte(since_ms))
            .count(&self.db)
            .await
    }
    async fn touch(&self, id: AgentId, at_ms: i64) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::LastSeenMs, Expr::value(at_ms))
            .filter(agent::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn silent_since(&self, before_ms: i64) -> Result<Vec<AgentId>, DbErr> {
        use sea_orm::Condition;
        let active = [AgentStatus::Starting, AgentStatus::Running].map(AgentStatus::as_str);
        let rows: Vec<String> = agent::Entity::find()
            .select_only()
            .column(agent::Column::Id)
            .filter(agent::Column::Status.is_in(active))
            .filter(
                Condition::any()
                    .add(agent::Column::LastSeenMs.lt(before_ms))
                    .add(
                        Condition::all()
                            .add(agent::Column::LastSeenMs.is_null())
                            .add(agent::Column::CreatedAtMs.lt(before_ms)),
                    ),
            )
            .limit(1000)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn record_outcome(&self, id: AgentId, outcome: Outcome) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::CostUsd, Expr::value(outcome.cost_usd))
            .col_expr(agent::Column::NumTurns, Expr::value(outcome.turns))
            .col_expr(agent::Column::DurationMs, Expr::value(outcome.duration_ms))
            .filter(agent::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn set_vm(&self, id: AgentId, vm_id: &str) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::VmId, Expr::value(vm_id.to_owned()))
            .filter(agent::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn transition(
        &self,
        id: AgentId,
        status: AgentStatus,
        exit_code: Option<i32>,
        at_ms: i64,
    ) -> Result<Option<Agent>, DbErr> {
        // One conditional UPDATE: of two concurrent moves (say completed and killed) only one
        // can find the agent still in a state it may leave.
        let from: Vec<&str> = ALL_STATUSES
            .iter()
            .filter(|s| s.can_become(status))
            .map(|s| s.as_str())
            .collect();
        let mut update = agent::Entity::update_many()
            .col_expr(agent::Column::Status, Expr::value(status.as_str()))
            .filter(agent::Column::Id.eq(id.to_string()))
            .filter(agent::Column::Status.is_in(from));
        if status == AgentStatus::Running {
            update = update.col_expr(agent::Column::StartedAtMs, Expr::value(at_ms));
        }
        if status.is_final() {
            update = update
                .col_expr(agent::Column::FinishedAtMs, Expr::value(at_ms))
                .col_expr(agent::Column::ExitCode, Expr::value(exit_code));
        }
        if update.exec(&self.db).await?.rows_affected != 1 {
            return Ok(None);
        }
        self.get(id).await
    }

    async fn append_output(&self, id: AgentId, chunks: &[StoredChunk]) -> Result<Appended, DbErr> {
        let txn = self.db.begin().await?;
        let mut inserted: Vec<u64> = Vec::new();
        if !chunks.is_empty() {
            let rows = chunks.iter().map(|c| output::ActiveModel {
                agent_id: Set(id.to_string()),
                seq: Set(to_i64(c.seq)),
                stream: Set(c.stream),
                data: Set(c.data.to_vec()),
            });
            // RETURNING lists only the rows this statement inserted, not the ones it skipped.
            let keys = output::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([output::Column::AgentId, output::Column::Seq])
                .exec_with_returning_keys(&txn)
                .await?;
            if let sea_orm::TryInsertResult::Inserted(keys) = keys {
                inserted = keys.into_iter().map(|(_, seq)| to_u64(seq)).collect();
                inserted.sort_unstable();
            }
        }
        let Some(row) = agent::Entity::find_by_id(id.to_string()).one(&txn).await? else {
            return Err(DbErr::RecordNotFound(format!("agent {id}")));
        };
        // Advance over everything now contiguous: this batch (in any order) and anything stored
        // earlier beyond a gap it filled.
        let mut next = to_u64(row.output_seq);
        let mut seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
        seqs.sort_unstable();
        for seq in seqs {
            if seq == next {
                next += 1;
            }
        }
        loop {
            let stored: Vec<i64> = output::Entity::find()
                .select_only()
                .column(output::Column::Seq)
                .filter(output::Column::AgentId.eq(id.to_string()))
                .filter(output::Column::Seq.gte(to_i64(next)))
                .order_by_asc(output::Column::Seq)
                .limit(1000)
                .into_tuple()
                .all(&txn)
                .await?;
            let before = next;
            for seq in &stored {
                if to_u64(*seq) == next {
                    next += 1;
                }
            }
            if next == before || stored.len() < 1000 {
                break;
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
        Ok(Appended { next, inserted })
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
