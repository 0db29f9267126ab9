//! The preview service: which commit of the team's repository the shared preview runs, and
//! where. Pushes are recorded by the gateway's webhook route (with a service token); members
//! read their own team's preview. Deploying to the preview VM comes with later work.

use std::sync::Arc;

use async_trait::async_trait;
use covibe_identity::Verifier;
use covibe_proto::preview::v1 as pb;
use covibe_proto::preview::v1::preview_service_server::{PreviewService, PreviewServiceServer};
use covibe_proto::tonic::{self, Request, Response, Status};
use covibe_types::{ApiError, TeamId, now_ms};
use sea_orm::sea_query::OnConflict;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait, Set};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub team_id: TeamId,
    pub url: String,
    pub commit: String,
    pub status: String,
    pub updated_at_ms: i64,
}

#[async_trait]
pub trait PreviewStore: Send + Sync + 'static {
    async fn get(&self, team: TeamId) -> Result<Option<Preview>, DbErr>;
    async fn put(&self, preview: &Preview) -> Result<(), DbErr>;
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
}

mod migration {
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0001Previews)]
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
            let text = |name: &str, len: u32| {
                ColumnDef::new(Alias::new(name))
                    .string_len(len)
                    .not_null()
                    .to_owned()
            };
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
            .exec_without_returning(&self.db)
            .await
            .map(|_| ())
    }
}

pub struct PreviewGrpc {
    store: Arc<dyn PreviewStore>,
    verifier: Verifier,
}

impl PreviewGrpc {
    pub fn new(store: Arc<dyn PreviewStore>, verifier: Verifier) -> Self {
        Self { store, verifier }
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

    async fn record_push(
        &self,
        request: Request<pb::RecordPushRequest>,
    ) -> Result<Response<pb::Preview>, Status> {
        self.verifier
            .verify_metadata(request.metadata())?
            .require_service()?;
        let r = request.into_inner();
        let team: TeamId = r
            .team_id
            .parse()
            .map_err(|_| ApiError::invalid("invalid team id"))?;
        if r.commit.is_empty()
            || r.commit.len() > 64
            || !r.commit.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(ApiError::invalid("commit must be a hex sha").into());
        }
        let current = self.store.get(team).await.map_err(internal)?;
        let preview = Preview {
            team_id: team,
            url: current.map(|p| p.url).unwrap_or_default(),
            commit: r.commit,
            status: "pending".to_owned(),
            updated_at_ms: now_ms(),
        };
        self.store.put(&preview).await.map_err(internal)?;
        tracing::info!(team_id = %team, commit = %preview.commit, "push recorded");
        Ok(Response::new(preview_pb(preview)))
    }
}
