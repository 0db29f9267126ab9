//! The preview store: the trait the domain needs and its SeaORM implementation.

mod entities;
mod migration;

use async_trait::async_trait;
use covibe_types::TeamId;
use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set, SqlErr,
    TransactionTrait, TryInsertResult,
};

use crate::model::{Deployment, Preview, PreviewConfig, PushDelivery, SealedSecret, StoredGrant};
use entities as entity;

#[async_trait]
pub trait PreviewStore: Send + Sync + 'static {
    async fn get(&self, team: TeamId) -> Result<Option<Preview>, DbErr>;
    async fn put(&self, preview: &Preview) -> Result<(), DbErr>;
    /// Records the delivery and makes the team's preview `pending` at its commit, atomically.
    /// `None` when this delivery id was already recorded (nothing changes).
    async fn record_push(&self, delivery: &PushDelivery) -> Result<Option<Preview>, DbErr>;
    /// How many deliveries were recorded for the team.
    async fn deliveries(&self, team: TeamId) -> Result<u64, DbErr>;
    /// The team's configuration and its sealed webhook secret.
    async fn config(&self, team: TeamId) -> Result<Option<(PreviewConfig, SealedSecret)>, DbErr>;
    /// Writes the team's configuration; `secret` replaces the stored one when given (it must
    /// be given for a team's first configuration).
    async fn put_config(
        &self,
        team: TeamId,
        config: &PreviewConfig,
        secret: Option<&SealedSecret>,
    ) -> Result<(), DbErr>;
    /// Replaces the team's secret; `false` when the team has no configuration.
    async fn set_secret(&self, secret: &SealedSecret) -> Result<bool, DbErr>;
    /// Secrets sealed under a master key version older than `version`.
    async fn secrets_below(&self, version: u32) -> Result<Vec<SealedSecret>, DbErr>;
    /// The team's grant to run deploys on its preview VM.
    async fn grant(&self, team: TeamId) -> Result<Option<StoredGrant>, DbErr>;
    async fn put_grant(&self, grant: &StoredGrant) -> Result<(), DbErr>;
    /// Grants sealed under a master key version older than `version`.
    async fn grants_below(&self, version: u32) -> Result<Vec<StoredGrant>, DbErr>;
    /// Replaces a sealed grant only if it is still `old` (for re-encryption).
    async fn reseal_grant(
        &self,
        team: TeamId,
        old: &[u8],
        sealed: &[u8],
        version: u32,
    ) -> Result<bool, DbErr>;
    /// Queues a deploy of `commit`. A deploy already waiting for the team takes the newer
    /// commit instead (pushes during a deploy make one more deploy, of the newest).
    async fn enqueue(
        &self,
        team: TeamId,
        commit: &str,
        trigger: &str,
        requested_by: &str,
        now_ms: i64,
    ) -> Result<Deployment, DbErr>;
    /// Takes the oldest due deploy of a team with none running, leased until `now + lease`.
    /// A running deploy whose lease passed (its runner died) is due again.
    async fn claim(&self, now_ms: i64, lease_ms: i64) -> Result<Option<Deployment>, DbErr>;
    /// Ends a running deploy: `live` (the team's earlier live deploy becomes `replaced`) or
    /// `failed`. Only the runner of `attempt` may: false when its lease was lost.
    async fn finish(
        &self,
        id: &str,
        attempt: u32,
        status: &str,
        commit: &str,
        log_tail: &str,
        now_ms: i64,
    ) -> Result<bool, DbErr>;
    /// Keeps a running deploy's lease (its runner is alive); false when it was lost.
    async fn extend_lease(&self, id: &str, attempt: u32, until_ms: i64) -> Result<bool, DbErr>;
    /// Puts a running deploy back in the queue, due at `at_ms`; false when its lease was lost.
    async fn retry_at(
        &self,
        id: &str,
        attempt: u32,
        at_ms: i64,
        log_tail: &str,
    ) -> Result<bool, DbErr>;
    /// The team's deploys, newest first.
    async fn deployments(&self, team: TeamId, limit: u64) -> Result<Vec<Deployment>, DbErr>;
    /// Replaces a sealed secret only if it is still `old` (for re-encryption).
    async fn reseal(
        &self,
        team: TeamId,
        old: &[u8],
        sealed: &[u8],
        version: u32,
    ) -> Result<bool, DbErr>;
}

/// The deploy is still running under this attempt's lease.
fn held(id: &str, attempt: u32) -> sea_orm::Condition {
    use entity::deployment::Column;
    sea_orm::Condition::all()
        .add(Column::Id.eq(id))
        .add(Column::Status.eq("running"))
        .add(Column::Attempts.eq(i32::try_from(attempt).unwrap_or(i32::MAX)))
}

pub struct SeaPreviewStore {
    db: DatabaseConnection,
}

impl SeaPreviewStore {
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<migration::Migrator>(&db).await?;
        Ok(Self { db })
    }
}

#[async_trait]
impl PreviewStore for SeaPreviewStore {
    async fn get(&self, team: TeamId) -> Result<Option<Preview>, DbErr> {
        let Some(m) = entity::Entity::find_by_id(team.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Preview {
            team_id: team,
            url: m.url,
            upstream: m.upstream,
            commit: m.commit,
            status: m.status,
            updated_at_ms: m.updated_at_ms,
        }))
    }

    async fn put(&self, p: &Preview) -> Result<(), DbErr> {
        upsert(&self.db, p).await
    }

    async fn record_push(&self, d: &PushDelivery) -> Result<Option<Preview>, DbErr> {
        use entity::delivery;
        let txn = self.db.begin().await?;
        let row = delivery::ActiveModel {
            delivery_id: Set(d.delivery_id.clone()),
            team_id: Set(d.team_id.to_string()),
            commit: Set(d.commit.clone()),
            received_at_ms: Set(d.received_at_ms),
        };
        // The primary key decides: of two deliveries racing each other, one inserts.
        let inserted = delivery::Entity::insert(row)
            .on_conflict_do_nothing_on([delivery::Column::DeliveryId])
            .exec_without_returning(&txn)
            .await?;
        if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            txn.rollback().await?;
            return Ok(None);
        }
        let (url, upstream) = entity::Entity::find_by_id(d.team_id.to_string())
            .one(&txn)
            .await?
            .map(|m| (m.url, m.upstream))
            .unwrap_or_default();
        let preview = Preview {
            team_id: d.team_id,
            url,
            upstream,
            commit: d.commit.clone(),
            status: "pending".to_owned(),
            updated_at_ms: d.received_at_ms,
        };
        upsert(&txn, &preview).await?;
        txn.commit().await?;
        Ok(Some(preview))
    }

    async fn deliveries(&self, team: TeamId) -> Result<u64, DbErr> {
        entity::delivery::Entity::find()
            .filter(entity::delivery::Column::TeamId.eq(team.to_string()))
            .count(&self.db)
            .await
    }

    async fn config(&self, team: TeamId) -> Result<Option<(PreviewConfig, SealedSecret)>, DbErr> {
        entity::config::Entity::find_by_id(team.to_string())
            .one(&self.db)
            .await?
            .map(config_of)
            .transpose()
    }

    async fn put_config(
        &self,
        team: TeamId,
        c: &PreviewConfig,
        secret: Option<&SealedSecret>,
    ) -> Result<(), DbErr> {
        use entity::config::{ActiveModel, Column, Entity};
        use sea_orm::sea_query::Expr;
        let Some(secret) = secret else {
            // A change to a configured team: its secret stays.
            let result = Entity::update_many()
                .col_expr(Column::Repository, Expr::value(c.repository.clone()))
                .col_expr(Column::Branch, Expr::value(c.branch.clone()))
                .col_expr(Column::VmId, Expr::value(c.vm_id.clone()))
                .col_expr(Column::WorkDir, Expr::value(c.work_dir.clone()))
                .col_expr(Column::BuildCommand, Expr::value(c.build_command.clone()))
                .col_expr(Column::StartCommand, Expr::value(c.start_command.clone()))
                .col_expr(Column::Port, Expr::value(i32::from(c.port)))
                .col_expr(Column::HealthPath, Expr::value(c.health_path.clone()))
                .col_expr(Column::PublicUrl, Expr::value(c.public_url.clone()))
                .col_expr(Column::UpdatedBy, Expr::value(c.updated_by.clone()))
                .col_expr(Column::UpdatedAtMs, Expr::value(c.updated_at_ms))
                .filter(Column::TeamId.eq(team.to_string()))
                .exec(&self.db)
                .await?;
            if result.rows_affected != 1 {
                return Err(DbErr::RecordNotFound(format!(
                    "team {team} has no preview configuration to change"
                )));
            }
            return Ok(());
        };
        let row = ActiveModel {
            team_id: Set(team.to_string()),
            repository: Set(c.repository.clone()),
            branch: Set(c.branch.clone()),
            vm_id: Set(c.vm_id.clone()),
            work_dir: Set(c.work_dir.clone()),
            build_command: Set(c.build_command.clone()),
            start_command: Set(c.start_command.clone()),
            port: Set(i32::from(c.port)),
            health_path: Set(c.health_path.clone()),
            public_url: Set(c.public_url.clone()),
            updated_by: Set(c.updated_by.clone()),
            updated_at_ms: Set(c.updated_at_ms),
            secret_sealed: Set(secret.sealed.clone()),
            secret_version: Set(i32::try_from(secret.key_version).unwrap_or(i32::MAX)),
        };
        let columns = [
            Column::Repository,
            Column::Branch,
            Column::VmId,
            Column::WorkDir,
            Column::BuildCommand,
            Column::StartCommand,
            Column::Port,
            Column::HealthPath,
            Column::PublicUrl,
            Column::UpdatedBy,
            Column::UpdatedAtMs,
            Column::SecretSealed,
            Column::SecretVersion,
        ];
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::TeamId)
                    .update_columns(columns)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map(|_| ())
    }

    async fn set_secret(&self, secret: &SealedSecret) -> Result<bool, DbErr> {
        use entity::config::{Column, Entity};
        use sea_orm::sea_query::Expr;
        let result = Entity::update_many()
            .col_expr(Column::SecretSealed, Expr::value(secret.sealed.clone()))
            .col_expr(
                Column::SecretVersion,
                Expr::value(i64::from(secret.key_version)),
            )
            .filter(Column::TeamId.eq(secret.team_id.to_string()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn grant(&self, team: TeamId) -> Result<Option<StoredGrant>, DbErr> {
        entity::grant::Entity::find_by_id(team.to_string())
            .one(&self.db)
            .await?
            .map(grant_of)
            .transpose()
    }

    async fn put_grant(&self, g: &StoredGrant) -> Result<(), DbErr> {
        use entity::grant::{ActiveModel, Column, Entity};
        let row = ActiveModel {
            team_id: Set(g.team_id.to_string()),
            vm_id: Set(g.vm_id.clone()),
            host: Set(g.host.clone()),
            sealed: Set(g.sealed.clone()),
            key_version: Set(i32::try_from(g.key_version).unwrap_or(i32::MAX)),
        };
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::TeamId)
                    .update_columns([
                        Column::VmId,
                        Column::Host,
                        Column::Sealed,
                        Column::KeyVersion,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map(|_| ())
    }

    async fn grants_below(&self, version: u32) -> Result<Vec<StoredGrant>, DbErr> {
        use entity::grant::{Column, Entity};
        Entity::find()
            .filter(Column::KeyVersion.lt(i64::from(version)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(grant_of)
            .collect()
    }

    async fn reseal_grant(
        &self,
        team: TeamId,
        old: &[u8],
        sealed: &[u8],
        version: u32,
    ) -> Result<bool, DbErr> {
        use entity::grant::{Column, Entity};
        use sea_orm::sea_query::Expr;
        let result = Entity::update_many()
            .col_expr(Column::Sealed, Expr::value(sealed.to_vec()))
            .col_expr(Column::KeyVersion, Expr::value(i64::from(version)))
            .filter(Column::TeamId.eq(team.to_string()))
            .filter(Column::Sealed.eq(old.to_vec()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn enqueue(
        &self,
        team: TeamId,
        commit: &str,
        trigger: &str,
        requested_by: &str,
        now_ms: i64,
    ) -> Result<Deployment, DbErr> {
        use entity::deployment::{ActiveModel, Column, Entity};
        use sea_orm::sea_query::Expr;
        use sea_orm::{ActiveModelTrait, QueryOrder};
        // Written before anything is read: on SQLite a transaction that reads first and then
        // writes cannot wait for a concurrent writer (its lock upgrade fails at once as busy).
        let txn = self.db.begin().await?;
        let coalesced = Entity::update_many()
            .col_expr(Column::Commit, Expr::value(commit))
            .col_expr(Column::Trigger, Expr::value(trigger))
            .col_expr(Column::RequestedBy, Expr::value(requested_by))
            .filter(Column::TeamId.eq(team.to_string()))
            .filter(Column::Status.eq("queued"))
            .exec(&txn)
            .await?;
        let existing = if coalesced.rows_affected > 0 {
            Entity::find()
                .filter(Column::TeamId.eq(team.to_string()))
                .filter(Column::Status.eq("queued"))
                .order_by_asc(Column::CreatedAtMs)
                .one(&txn)
                .await?
        } else {
            None
        };
        let row = match existing {
            Some(row) => row,
            None => {
                ActiveModel {
                    id: Set(uuid::Uuid::now_v7().to_string()),
                    team_id: Set(team.to_string()),
                    commit: Set(commit.to_owned()),
                    trigger: Set(trigger.to_owned()),
                    requested_by: Set(requested_by.to_owned()),
                    status: Set("queued".to_owned()),
                    attempts: Set(0),
                    next_attempt_ms: Set(now_ms),
                    lease_until_ms: Set(0),
                    created_at_ms: Set(now_ms),
                    started_at_ms: Set(0),
                    finished_at_ms: Set(0),
                    log_tail: Set(String::new()),
                }
                .insert(&txn)
                .await?
            }
        };
        txn.commit().await?;
        deployment_of(row)
    }

    async fn claim(&self, now_ms: i64, lease_ms: i64) -> Result<Option<Deployment>, DbErr> {
        use entity::deployment::{Column, Entity};
        use sea_orm::QueryOrder;
        use sea_orm::sea_query::Expr;
        // An abandoned deploy (its runner died with it) goes back in the queue.
        Entity::update_many()
            .col_expr(Column::Status, Expr::value("queued"))
            .filter(Column::Status.eq("running"))
            .filter(Column::LeaseUntilMs.lt(now_ms))
            .exec(&self.db)
            .await?;
        let due = Entity::find()
            .filter(Column::Status.eq("queued"))
            .filter(Column::NextAttemptMs.lte(now_ms))
            .order_by_asc(Column::CreatedAtMs)
            .all(&self.db)
            .await?;
        for candidate in due {
            let busy = Entity::find()
                .filter(Column::TeamId.eq(candidate.team_id.clone()))
                .filter(Column::Status.eq("running"))
                .count(&self.db)
                .await?;
            if busy > 0 {
                continue;
            }
            let taken = Entity::update_many()
                .col_expr(Column::Status, Expr::value("running"))
                .col_expr(Column::StartedAtMs, Expr::value(now_ms))
                .col_expr(Column::LeaseUntilMs, Expr::value(now_ms + lease_ms))
                .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
                .filter(Column::Id.eq(candidate.id.clone()))
                .filter(Column::Status.eq("queued"))
                .exec(&self.db)
                .await;
            let taken = match taken {
                Ok(taken) => taken,
                // Another replica started one of this team's deploys meanwhile: the unique
                // index on running deploys refused this one.
                Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    continue;
                }
                Err(err) => return Err(err),
            };
            if taken.rows_affected == 1 {
                return Entity::find_by_id(candidate.id)
                    .one(&self.db)
                    .await?
                    .map(deployment_of)
                    .transpose();
            }
        }
        Ok(None)
    }

    async fn finish(
        &self,
        id: &str,
        attempt: u32,
        status: &str,
        commit: &str,
        log_tail: &str,
        now_ms: i64,
    ) -> Result<bool, DbErr> {
        use entity::deployment::{Column, Entity};
        use sea_orm::sea_query::Expr;
        let txn = self.db.begin().await?;
        let ended = Entity::update_many()
            .col_expr(Column::Status, Expr::value(status))
            .col_expr(Column::Commit, Expr::value(commit))
            .col_expr(Column::LogTail, Expr::value(log_tail))
            .col_expr(Column::FinishedAtMs, Expr::value(now_ms))
            .filter(held(id, attempt))
            .exec(&txn)
            .await?;
        if ended.rows_affected == 0 {
            return Ok(false);
        }
        if status == "live"
            && let Some(this) = Entity::find_by_id(id.to_owned()).one(&txn).await?
        {
            Entity::update_many()
                .col_expr(Column::Status, Expr::value("replaced"))
                .filter(Column::TeamId.eq(this.team_id))
                .filter(Column::Status.eq("live"))
                .filter(Column::Id.ne(id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await.map(|()| true)
    }

    async fn extend_lease(&self, id: &str, attempt: u32, until_ms: i64) -> Result<bool, DbErr> {
        use entity::deployment::{Column, Entity};
        use sea_orm::sea_query::Expr;
        Entity::update_many()
            .col_expr(Column::LeaseUntilMs, Expr::value(until_ms))
            .filter(held(id, attempt))
            .exec(&self.db)
            .await
            .map(|r| r.rows_affected == 1)
    }

    async fn retry_at(
        &self,
        id: &str,
        attempt: u32,
        at_ms: i64,
        log_tail: &str,
    ) -> Result<bool, DbErr> {
        use entity::deployment::{Column, Entity};
        use sea_orm::sea_query::Expr;
        Entity::update_many()
            .col_expr(Column::Status, Expr::value("queued"))
            .col_expr(Column::NextAttemptMs, Expr::value(at_ms))
            .col_expr(Column::LogTail, Expr::value(log_tail))
            .filter(held(id, attempt))
            .exec(&self.db)
            .await
            .map(|r| r.rows_affected == 1)
    }

    async fn deployments(&self, team: TeamId, limit: u64) -> Result<Vec<Deployment>, DbErr> {
        use entity::deployment::{Column, Entity};
        use sea_orm::{QueryOrder, QuerySelect};
        Entity::find()
            .filter(Column::TeamId.eq(team.to_string()))
            .order_by_desc(Column::CreatedAtMs)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(deployment_of)
            .collect()
    }

    async fn secrets_below(&self, version: u32) -> Result<Vec<SealedSecret>, DbErr> {
        use entity::config::{Column, Entity};
        Entity::find()
            .filter(Column::SecretVersion.lt(i64::from(version)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| config_of(m).map(|(_, secret)| secret))
            .collect()
    }

    async fn reseal(
        &self,
        team: TeamId,
        old: &[u8],
        sealed: &[u8],
        version: u32,
    ) -> Result<bool, DbErr> {
        use entity::config::{Column, Entity};
        use sea_orm::sea_query::Expr;
        let result = Entity::update_many()
            .col_expr(Column::SecretSealed, Expr::value(sealed.to_vec()))
            .col_expr(Column::SecretVersion, Expr::value(i64::from(version)))
            .filter(Column::TeamId.eq(team.to_string()))
            .filter(Column::SecretSealed.eq(old.to_vec()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }
}

fn deployment_of(m: entity::deployment::Model) -> Result<Deployment, DbErr> {
    Ok(Deployment {
        team_id: covibe_storage::parse_stored(&m.team_id)?,
        id: m.id,
        commit: m.commit,
        trigger: m.trigger,
        requested_by: m.requested_by,
        status: m.status,
        attempts: u32::try_from(m.attempts).unwrap_or(0),
        next_attempt_ms: m.next_attempt_ms,
        created_at_ms: m.created_at_ms,
        started_at_ms: m.started_at_ms,
        finished_at_ms: m.finished_at_ms,
        log_tail: m.log_tail,
    })
}

fn grant_of(m: entity::grant::Model) -> Result<StoredGrant, DbErr> {
    Ok(StoredGrant {
        team_id: covibe_storage::parse_stored(&m.team_id)?,
        vm_id: m.vm_id,
        host: m.host,
        key_version: u32::try_from(m.key_version).unwrap_or(0),
        sealed: m.sealed,
    })
}

fn config_of(m: entity::config::Model) -> Result<(PreviewConfig, SealedSecret), DbErr> {
    let team_id = covibe_storage::parse_stored(&m.team_id)?;
    let config = PreviewConfig {
        repository: m.repository,
        branch: m.branch,
        vm_id: m.vm_id,
        work_dir: m.work_dir,
        build_command: m.build_command,
        start_command: m.start_command,
        port: u16::try_from(m.port).unwrap_or(0),
        health_path: m.health_path,
        public_url: m.public_url,
        updated_by: m.updated_by,
        updated_at_ms: m.updated_at_ms,
    };
    let secret = SealedSecret {
        team_id,
        key_version: u32::try_from(m.secret_version).unwrap_or(0),
        sealed: m.secret_sealed,
    };
    Ok((config, secret))
}

async fn upsert(db: &impl sea_orm::ConnectionTrait, p: &Preview) -> Result<(), DbErr> {
    let row = entity::ActiveModel {
        team_id: Set(p.team_id.to_string()),
        url: Set(p.url.clone()),
        upstream: Set(p.upstream.clone()),
        commit: Set(p.commit.clone()),
        status: Set(p.status.clone()),
        updated_at_ms: Set(p.updated_at_ms),
    };
    // One upsert: two first pushes for a team racing each other both succeed.
    entity::Entity::insert(row)
        .on_conflict(
            OnConflict::column(entity::Column::TeamId)
                .update_columns([
                    entity::Column::Url,
                    entity::Column::Upstream,
                    entity::Column::Commit,
                    entity::Column::Status,
                    entity::Column::UpdatedAtMs,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await
        .map(|_| ())
}
