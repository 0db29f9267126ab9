//! The preview store: the trait the domain needs and its SeaORM implementation.

mod entities;
mod migration;

use async_trait::async_trait;
use covibe_types::TeamId;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set,
    TransactionTrait, TryInsertResult,
};

use crate::model::{Preview, PreviewConfig, PushDelivery, SealedSecret};
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
    /// Replaces a sealed secret only if it is still `old` (for re-encryption).
    async fn reseal(
        &self,
        team: TeamId,
        old: &[u8],
        sealed: &[u8],
        version: u32,
    ) -> Result<bool, DbErr>;
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
        let url = entity::Entity::find_by_id(d.team_id.to_string())
            .one(&txn)
            .await?
            .map(|m| m.url)
            .unwrap_or_default();
        let preview = Preview {
            team_id: d.team_id,
            url,
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
