//! The agent store: the trait the domain needs and its SeaORM implementation.

mod entities;
mod migration;
mod permissions;

use async_trait::async_trait;
use bytes::Bytes;
use covibe_types::{AgentId, AgentStatus, TeamId, UserId};
use std::collections::HashMap;
use std::sync::LazyLock;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

pub use migration::Migrator;
pub use permissions::{Decided, PermissionStore};

const ALL_STATUSES: [AgentStatus; 8] = [
    AgentStatus::Pending,
    AgentStatus::Starting,
    AgentStatus::Running,
    AgentStatus::Completed,
    AgentStatus::Failed,
    AgentStatus::Killed,
    AgentStatus::Lost,
    AgentStatus::WaitingForApproval,
];

use crate::model::{Agent, OutputBatch, StoredChunk};
use crate::stream_json::Outcome;
use entities::{agent, output, position};

#[async_trait]
pub trait AgentStore: PermissionStore + Send + Sync + 'static {
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
    /// The owner's agents that are pending, starting or running.
    async fn active_of(&self, owner: UserId) -> Result<Vec<AgentId>, DbErr>;
    /// The owner's agents created at or after `since_ms`.
    async fn count_created_since(&self, owner: UserId, since_ms: i64) -> Result<u64, DbErr>;
    /// When the owner's oldest agent created at or after `since_ms` was created.
    async fn oldest_created_since(
        &self,
        owner: UserId,
        since_ms: i64,
    ) -> Result<Option<i64>, DbErr>;
    /// Notes that the agent's vm-agent was heard from at `at_ms`.
    async fn touch(&self, id: AgentId, at_ms: i64) -> Result<(), DbErr>;
    /// Agents still starting or running whose vm-agent was last heard from (or, never heard
    /// from, created) before `before_ms`.
    async fn silent_since(&self, before_ms: i64) -> Result<Vec<AgentId>, DbErr>;
    /// Keeps the cost, turns and duration of the agent's final result.
    async fn record_outcome(&self, id: AgentId, outcome: Outcome) -> Result<(), DbErr>;
    /// Records which VM the agent was started on.
    /// Records where and how the agent's vm-agent was started.
    async fn set_vm(&self, id: AgentId, vm_id: &str, strategy: &str) -> Result<(), DbErr>;
    /// Moves the agent to `status` if that is a step forward; returns the updated agent, or
    /// `None` when the move was not allowed (the agent is unchanged then).
    async fn transition(
        &self,
        id: AgentId,
        status: AgentStatus,
        exit_code: Option<i32>,
        at_ms: i64,
    ) -> Result<Option<Agent>, DbErr>;
    /// Stores the chunks of several agents in one transaction (ignoring any already stored: a
    /// resend, or a second link racing the first). Each batch's chunks are ascending and
    /// gap-free; an agent's `output_seq` moves past its batch when the batch starts at or below
    /// it. Returns, per batch in order, the agent's `output_seq` afterwards (every chunk below
    /// it is stored).
    async fn append_output(&self, batches: &[OutputBatch<'_>]) -> Result<Vec<u64>, DbErr>;
    async fn output(&self, id: AgentId, from: u64, limit: u64) -> Result<Vec<StoredChunk>, DbErr>;
}

/// The owner's agents that are pending, starting, running or waiting for approval.
fn active_query(owner: UserId) -> sea_orm::Select<agent::Entity> {
    let active = [
        AgentStatus::Pending,
        AgentStatus::Starting,
        AgentStatus::Running,
        AgentStatus::WaitingForApproval,
    ]
    .map(AgentStatus::as_str);
    agent::Entity::find()
        .filter(agent::Column::OwnerId.eq(owner.to_string()))
        .filter(agent::Column::Status.is_in(active))
}

pub struct SeaAgentStore {
    db: DatabaseConnection,
}

impl SeaAgentStore {
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<Migrator>(&db).await?;
        Ok(Self { db })
    }

    /// `append_output` on PostgreSQL, the hot path of a multi-process deployment: one statement
    /// taking its rows as arrays (`UNNEST`), so it has a fixed text, is prepared once per
    /// connection, costs eight parameters whatever the batch size, and one round trip.
    async fn append_output_pg(&self, batches: &[OutputBatch<'_>]) -> Result<Vec<u64>, DbErr> {
        let rows = batches.iter().map(|b| b.chunks.len()).sum();
        let (mut agent_ids, mut seqs, mut streams, mut data, mut events) = (
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        );
        for (id, chunk) in rows_of(batches) {
            agent_ids.push(id);
            seqs.push(to_i64(chunk.seq));
            streams.push(chunk.stream);
            data.push(chunk.data.as_ref());
            events.push(
                std::str::from_utf8(&chunk.event)
                    .ok()
                    .filter(|e| !e.is_empty()),
            );
        }
        let (mut ids, mut firsts, mut nexts) = (Vec::new(), Vec::new(), Vec::new());
        for (id, first, next) in moves(batches) {
            ids.push(id);
            firsts.push(first);
            nexts.push(next);
        }
        // One statement, so one round trip and its own transaction: the insert and the move of
        // each agent's position over its batch when the batch starts at or below it (contiguous
        // with what is stored; never backwards). (The insert's data-modifying CTE runs to
        // completion whether or not its rows are read.)
        let rows: Vec<(String, i64)> = sea_orm::sqlx::query_as(
            "WITH stored AS ( \
               INSERT INTO agent_output (agent_id, seq, stream, data, event) \
               SELECT * FROM UNNEST($1::varchar[], $2::bigint[], $3::int[], $4::bytea[], \
                 $8::text[]) \
               ON CONFLICT (agent_id, seq) DO NOTHING \
             ) \
             UPDATE agent_positions AS a SET output_seq = CASE \
               WHEN a.output_seq >= v.first AND a.output_seq < v.next THEN v.next \
               ELSE a.output_seq END \
             FROM UNNEST($5::varchar[], $6::bigint[], $7::bigint[]) AS v(id, first, next) \
             WHERE a.agent_id = v.id RETURNING a.agent_id, a.output_seq",
        )
        .bind(&agent_ids)
        .bind(&seqs)
        .bind(&streams)
        .bind(&data)
        .bind(&ids)
        .bind(&firsts)
        .bind(&nexts)
        .bind(&events)
        .fetch_all(self.db.get_postgres_connection_pool())
        .await
        .map_err(|e| DbErr::Custom(format!("append output: {e}")))?;
        report(batches, &rows.into_iter().collect())
    }

    /// `append_output` on SQLite, the hot path of standalone: in one transaction, statements of
    /// fixed text only (so each is prepared once per connection), each of a fixed number of
    /// rows. SQLite plans a statement in time quadratic in its parameters: one shaped by each
    /// batch (a multi-row insert and a `CASE` arm per agent) was planned again every time, and
    /// that was a third of standalone's CPU under load.
    async fn append_output_sqlite(&self, batches: &[OutputBatch<'_>]) -> Result<Vec<u64>, DbErr> {
        use sea_orm::sqlx::{self, AssertSqlSafe};
        let failed = |e: sqlx::Error| DbErr::Custom(format!("append output: {e}"));
        let mut txn = self
            .db
            .get_sqlite_connection_pool()
            .begin()
            .await
            .map_err(failed)?;
        let rows: Vec<(String, &StoredChunk)> = rows_of(batches).collect();
        for (statement, rows) in sqlite_runs(&rows, &SQLITE_INSERTS) {
            let mut query = sqlx::query(AssertSqlSafe(statement));
            for (id, chunk) in rows {
                query = query
                    .bind(id.as_str())
                    .bind(to_i64(chunk.seq))
                    .bind(chunk.stream)
                    .bind(chunk.data.as_ref())
                    .bind(
                        std::str::from_utf8(&chunk.event)
                            .ok()
                            .filter(|e| !e.is_empty()),
                    );
            }
            query.execute(&mut *txn).await.map_err(failed)?;
        }
        let moves: Vec<(String, i64, i64)> = moves(batches).collect();
        let mut positions = HashMap::with_capacity(moves.len());
        for (statement, moves) in sqlite_runs(&moves, &SQLITE_MOVES) {
            let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(statement));
            for (id, first, next) in moves {
                query = query.bind(id.as_str()).bind(*first).bind(*next);
            }
            positions.extend(query.fetch_all(&mut *txn).await.map_err(failed)?);
        }
        txn.commit().await.map_err(failed)?;
        report(batches, &positions)
    }
}

/// Every chunk of `batches` with its agent's id.
fn rows_of<'a>(
    batches: &'a [OutputBatch<'_>],
) -> impl Iterator<Item = (String, &'a StoredChunk)> + 'a {
    batches.iter().flat_map(|batch| {
        let id = batch.agent.to_string();
        batch.chunks.iter().map(move |chunk| (id.clone(), chunk))
    })
}

/// Per agent, its first batch's range `(id, first seq, next seq)`: what may move the agent's
/// `output_seq` (a later batch of the agent, after a gap, cannot). A batch without chunks only
/// reads the position: its range is empty.
fn moves<'a>(batches: &'a [OutputBatch<'_>]) -> impl Iterator<Item = (String, i64, i64)> + 'a {
    let mut seen = std::collections::HashSet::new();
    batches
        .iter()
        .filter(move |batch| seen.insert(batch.agent))
        .map(|batch| {
            let (first, next) = match (batch.chunks.first(), batch.chunks.last()) {
                (Some(first), Some(last)) => (to_i64(first.seq), to_i64(last.seq + 1)),
                _ => (i64::MAX, i64::MAX),
            };
            (batch.agent.to_string(), first, next)
        })
}

/// Rows per statement of `append_output` on SQLite: as many of the largest as fit, then the
/// next size down.
const SQLITE_ROWS: [usize; 4] = [64, 16, 4, 1];

/// `append_output`'s inserts on SQLite, one per size in [`SQLITE_ROWS`].
static SQLITE_INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    SQLITE_ROWS
        .iter()
        .map(|rows| {
            format!(
                "INSERT INTO agent_output (agent_id, seq, stream, data, event) VALUES {} \
                 ON CONFLICT (agent_id, seq) DO NOTHING",
                sqlite_values(*rows, 5)
            )
        })
        .collect()
});

/// `append_output`'s moves of `output_seq` on SQLite (over the batch when it starts at or
/// below it; never backwards), one per size in [`SQLITE_ROWS`].
static SQLITE_MOVES: LazyLock<Vec<String>> = LazyLock::new(|| {
    SQLITE_ROWS
        .iter()
        .map(|rows| {
            format!(
                "WITH v(id, first, next) AS (VALUES {}) \
                 UPDATE agent_positions SET output_seq = CASE \
                   WHEN output_seq >= v.first AND output_seq < v.next THEN v.next \
                   ELSE output_seq END \
                 FROM v WHERE agent_positions.agent_id = v.id \
                 RETURNING agent_positions.agent_id, agent_positions.output_seq",
                sqlite_values(*rows, 3)
            )
        })
        .collect()
});

/// `(?, ?), (?, ?)` for `rows` rows of `columns` columns.
fn sqlite_values(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `items` cut into runs of the sizes in [`SQLITE_ROWS`], largest first, each with the
/// statement (of `statements`, one per size) for its size.
fn sqlite_runs<'a, T>(
    mut items: &'a [T],
    statements: &'static [String],
) -> impl Iterator<Item = (&'static str, &'a [T])> {
    std::iter::from_fn(move || {
        let (size, statement) = SQLITE_ROWS
            .iter()
            .zip(statements)
            .find(|(size, _)| **size <= items.len())?;
        let (run, rest) = items.split_at(*size);
        items = rest;
        Some((statement.as_str(), run))
    })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The agent of a row and its position (its row in `agent_positions`, read with it).
fn agent_of((m, position): (agent::Model, Option<position::Model>)) -> Result<Agent, DbErr> {
    let output_seq = position.map_or(0, |p| p.output_seq);
    let bad = |what: &str| DbErr::Custom(format!("bad {what} in agents row {}", m.id));
    Ok(Agent {
        id: m.id.parse().map_err(|_| bad("id"))?,
        team_id: m.team_id.parse().map_err(|_| bad("team_id"))?,
        owner_id: m.owner_id.parse().map_err(|_| bad("owner_id"))?,
        vm_id: m.vm_id.clone(),
        strategy: m.strategy.clone(),
        task: m.task.clone(),
        status: m.status.parse().map_err(|()| bad("status"))?,
        exit_code: m.exit_code,
        created_at_ms: m.created_at_ms,
        started_at_ms: m.started_at_ms,
        finished_at_ms: m.finished_at_ms,
        output_seq: to_u64(output_seq),
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
        let txn = self.db.begin().await?;
        agent::ActiveModel {
            id: Set(a.id.to_string()),
            team_id: Set(a.team_id.to_string()),
            owner_id: Set(a.owner_id.to_string()),
            vm_id: Set(a.vm_id.clone()),
            strategy: Set(a.strategy.clone()),
            task: Set(a.task.clone()),
            status: Set(a.status.as_str().to_owned()),
            exit_code: Set(a.exit_code),
            created_at_ms: Set(a.created_at_ms),
            started_at_ms: Set(a.started_at_ms),
            finished_at_ms: Set(a.finished_at_ms),
            token_hash: Set(token_hash.to_owned()),
            kill_requested_ms: Set(None),
            cost_usd: Set(None),
            num_turns: Set(None),
            duration_ms: Set(None),
            last_seen_ms: Set(None),
        }
        .insert(&txn)
        .await?;
        position::ActiveModel {
            agent_id: Set(a.id.to_string()),
            output_seq: Set(to_i64(a.output_seq)),
        }
        .insert(&txn)
        .await?;
        txn.commit().await
    }

    async fn get(&self, id: AgentId) -> Result<Option<Agent>, DbErr> {
        agent::Entity::find_by_id(id.to_string())
            .find_also_related(position::Entity)
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
            .find_also_related(position::Entity)
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
        active_query(owner).count(&self.db).await
    }

    async fn active_of(&self, owner: UserId) -> Result<Vec<AgentId>, DbErr> {
        active_query(owner)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| covibe_storage::parse_stored(&row.id))
            .collect()
    }

    async fn count_created_since(&self, owner: UserId, since_ms: i64) -> Result<u64, DbErr> {
        agent::Entity::find()
            .filter(agent::Column::OwnerId.eq(owner.to_string()))
            .filter(agent::Column::CreatedAtMs.gte(since_ms))
            .count(&self.db)
            .await
    }
    async fn oldest_created_since(
        &self,
        owner: UserId,
        since_ms: i64,
    ) -> Result<Option<i64>, DbErr> {
        Ok(agent::Entity::find()
            .filter(agent::Column::OwnerId.eq(owner.to_string()))
            .filter(agent::Column::CreatedAtMs.gte(since_ms))
            .order_by_asc(agent::Column::CreatedAtMs)
            .one(&self.db)
            .await?
            .map(|a| a.created_at_ms))
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
        let active = [
            AgentStatus::Starting,
            AgentStatus::Running,
            AgentStatus::WaitingForApproval,
        ]
        .map(AgentStatus::as_str);
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

    async fn set_vm(&self, id: AgentId, vm_id: &str, strategy: &str) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::VmId, Expr::value(vm_id.to_owned()))
            .col_expr(agent::Column::Strategy, Expr::value(strategy.to_owned()))
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

    async fn append_output(&self, batches: &[OutputBatch<'_>]) -> Result<Vec<u64>, DbErr> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            self.append_output_pg(batches).await
        } else {
            self.append_output_sqlite(batches).await
        }
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
                event: m.event.map(Bytes::from).unwrap_or_default(),
            })
            .collect())
    }
}

/// Per batch, the agent's position afterwards.
fn report(
    batches: &[OutputBatch<'_>],
    positions: &HashMap<String, i64>,
) -> Result<Vec<u64>, DbErr> {
    batches
        .iter()
        .map(|batch| {
            let id = batch.agent.to_string();
            positions
                .get(&id)
                .map(|next| to_u64(*next))
                .ok_or_else(|| DbErr::RecordNotFound(format!("agent {id}")))
        })
        .collect()
}
