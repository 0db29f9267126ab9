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

use crate::model::{Preview, PushDelivery};
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
