//! The preview service: which commit of the team's repository the shared preview runs, and
//! where. GitHub push webhooks reach it through the gateway, which forwards them unchanged: this
//! service verifies the signature itself (HMAC-SHA256 over the raw body, constant-time), drops
//! redeliveries by delivery id, records the push and publishes `preview_updated` on the team's
//! fan-out. Members read their own team's preview. Deploying to the preview VM comes with later
//! work.
//!
//! One webhook secret serves the whole deployment (`preview.webhook_secret`); per-team secrets
//! (so a delivery signed for one team cannot be replayed to another team's URL) are future work.

mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use covibe_identity::Verifier;
use covibe_proto::preview::v1 as pb;
use covibe_proto::preview::v1::preview_service_server::{PreviewService, PreviewServiceServer};
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_storage::HotStore;
use covibe_types::{ApiError, TeamId, now_ms};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set,
    TransactionTrait, TryInsertResult,
};

pub use webhook::{PushEvent, SignatureError, verify_signature};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub team_id: TeamId,
    pub url: String,
    pub commit: String,
    pub status: String,
    pub updated_at_ms: i64,
}

/// One verified push delivery, to record once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDelivery {
    pub delivery_id: String,
    pub team_id: TeamId,
    pub commit: String,
    pub received_at_ms: i64,
}

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

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "previews")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: String,
        pub url: String,
        pub commit: String,
        pub status: String,
        pub updated_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    pub mod delivery {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "preview_deliveries")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub delivery_id: String,
            pub team_id: String,
            pub commit: String,
            pub received_at_ms: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

mod migration {
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0001Previews), Box::new(M0002Deliveries)]
        }

        fn migration_table_name() -> DynIden {
            Alias::new("covibe_preview_migrations").into_iden()
        }
    }

    struct M0001Previews;

    impl MigrationName for M0001Previews {
        fn name(&self) -> &str {
            "m0001_previews"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0001Previews {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("previews"))
                        .if_not_exists()
                        .col(text("team_id", 40).primary_key())
                        .col(text("url", 512))
                        .col(text("commit", 64))
                        .col(text("status", 32))
                        .col(
                            ColumnDef::new(Alias::new("updated_at_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("previews")).to_owned())
                .await
        }
    }

    /// Webhook deliveries already received, by GitHub's delivery id.
    struct M0002Deliveries;

    impl MigrationName for M0002Deliveries {
        fn name(&self) -> &str {
            "m0002_preview_deliveries"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0002Deliveries {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("preview_deliveries"))
                        .if_not_exists()
                        .col(text("delivery_id", 128).primary_key())
                        .col(text("team_id", 40))
                        .col(text("commit", 64))
                        .col(
                            ColumnDef::new(Alias::new("received_at_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("preview_deliveries_team")
                        .table(Alias::new("preview_deliveries"))
                        .col(Alias::new("team_id"))
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new("preview_deliveries"))
                        .to_owned(),
                )
                .await
        }
    }
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

pub struct PreviewGrpc {
    store: Arc<dyn PreviewStore>,
    verifier: Verifier,
    hot: Arc<dyn HotStore>,
    /// The deployment's webhook secret; `None` refuses every webhook.
    webhook_secret: Option<Vec<u8>>,
}

impl PreviewGrpc {
    pub fn new(
        store: Arc<dyn PreviewStore>,
        verifier: Verifier,
        hot: Arc<dyn HotStore>,
        webhook_secret: Option<String>,
    ) -> Self {
        Self {
            store,
            verifier,
            hot,
            webhook_secret: webhook_secret
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
        }
    }

    pub fn into_server(self) -> PreviewServiceServer<Self> {
        PreviewServiceServer::new(self)
    }
}

fn preview_pb(p: Preview) -> pb::Preview {
    pb::Preview {
        team_id: p.team_id.to_string(),
        url: p.url,
        commit: p.commit,
        status: p.status,
        updated_at_ms: p.updated_at_ms,
    }
}

fn internal(e: DbErr) -> Status {
    ApiError::internal(e).into()
}

#[tonic::async_trait]
impl PreviewService for PreviewGrpc {
    async fn get_preview(
        &self,
        request: Request<pb::GetPreviewRequest>,
    ) -> Result<Response<pb::Preview>, Status> {
        let (_, team) = self
            .verifier
            .verify_metadata(request.metadata())?
            .member()?;
        let preview = self
            .store
            .get(team)
            .await
            .map_err(internal)?
            .unwrap_or(Preview {
                team_id: team,
                url: String::new(),
                commit: String::new(),
                status: "none".to_owned(),
                updated_at_ms: 0,
            });
        Ok(Response::new(preview_pb(preview)))
    }

    async fn receive_push(
        &self,
        request: Request<pb::ReceivePushRequest>,
    ) -> Result<Response<pb::ReceivePushResponse>, Status> {
        let r = request.into_inner();
        let Some(secret) = &self.webhook_secret else {
            tracing::warn!(target: "audit", action = "webhook.push", outcome = "refused",
                reason = "not_configured", team = %r.team_id, delivery_id = %r.delivery_id,
                "webhook refused: no webhook secret is configured");
            return Err(ApiError::new(
                covibe_types::Code::Unavailable,
                "webhooks are not configured (set preview.webhook_secret)",
            )
            .into());
        };
        // The signature first: nothing from an unsigned request is looked at further.
        if let Err(reason) = verify_signature(secret, &r.signature_256, &r.body) {
            tracing::warn!(target: "audit", action = "webhook.push", outcome = "refused",
                reason = reason.as_str(), team = %r.team_id, delivery_id = %r.delivery_id,
                event = %r.event, body_bytes = r.body.len(), "webhook signature refused");
            return Err(ApiError::unauthenticated(reason.message()).into());
        }
        let team: TeamId = r.team_id.parse().map_err(|_| {
            ApiError::invalid("invalid team id (the webhook url needs ?team=TEAM_ID)")
        })?;
        if r.event != "push" {
            tracing::info!(team_id = %team, event = %r.event, delivery_id = %r.delivery_id,
                "webhook event ignored");
            return Ok(Response::new(pb::ReceivePushResponse::default()));
        }
        if r.delivery_id.is_empty()
            || r.delivery_id.len() > 128
            || !r.delivery_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ApiError::invalid("missing or invalid X-GitHub-Delivery header").into());
        }
        let push = PushEvent::parse(&r.body).map_err(ApiError::invalid)?;
        if push.deleted {
            tracing::info!(team_id = %team, git_ref = %push.git_ref, "branch deletion ignored");
            return Ok(Response::new(pb::ReceivePushResponse::default()));
        }
        let delivery = PushDelivery {
            delivery_id: r.delivery_id,
            team_id: team,
            commit: push.after.clone(),
            received_at_ms: now_ms(),
        };
        let Some(preview) = self.store.record_push(&delivery).await.map_err(internal)? else {
            tracing::info!(team_id = %team, delivery_id = %delivery.delivery_id,
                "webhook redelivery: already recorded");
            let current = self.store.get(team).await.map_err(internal)?;
            return Ok(Response::new(pb::ReceivePushResponse {
                accepted: true,
                duplicate: true,
                preview: current.map(preview_pb),
            }));
        };
        tracing::info!(target: "audit", action = "webhook.push", outcome = "accepted",
            team_id = %team, delivery_id = %delivery.delivery_id, commit = %preview.commit,
            repository = %push.repository, git_ref = %push.git_ref, "push recorded");
        let event = webhook::preview_updated(&preview, &push);
        // Recorded is what counts: a fan-out outage only delays what viewers see until they
        // read the preview again.
        if let Err(err) = self.hot.publish(team, event).await {
            tracing::warn!(team_id = %team, error = %err, "could not publish preview_updated");
        }
        Ok(Response::new(pb::ReceivePushResponse {
            accepted: true,
            duplicate: false,
            preview: Some(preview_pb(preview)),
        }))
    }
}
