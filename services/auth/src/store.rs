//! Refresh tokens, stored by hash, over SeaORM.

use async_trait::async_trait;
use covibe_types::{TeamId, UserId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub family: String,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub expires_at_ms: i64,
    pub used: bool,
    pub revoked: bool,
}

#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    async fn insert(&self, record: &RefreshRecord) -> Result<(), DbErr>;
    async fn find(&self, token_hash: &str) -> Result<Option<RefreshRecord>, DbErr>;
    /// Marks the token used; `false` if it already was (a concurrent or repeated use).
    async fn mark_used(&self, token_hash: &str) -> Result<bool, DbErr>;
    async fn revoke_family(&self, family: &str) -> Result<(), DbErr>;
}

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub family: String,
        pub user_id: String,
        pub team_id: String,
        pub expires_at_ms: i64,
        pub used: bool,
        pub revoked: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0001RefreshTokens)]
        }

        fn migration_table_name() -> DynIden {
            Alias::new("covibe_auth_migrations").into_iden()
        }
    }

    struct M0001RefreshTokens;

    impl MigrationName for M0001RefreshTokens {
        fn name(&self) -> &str {
            "m0001_refresh_tokens"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0001RefreshTokens {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("refresh_tokens"))
                        .if_not_exists()
                        .col(text("token_hash", 64).primary_key())
                        .col(text("family", 64))
                        .col(text("user_id", 40))
                        .col(text("team_id", 40))
                        .col(
                            ColumnDef::new(Alias::new("expires_at_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .col(ColumnDef::new(Alias::new("used")).boolean().not_null())
                        .col(ColumnDef::new(Alias::new("revoked")).boolean().not_null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("refresh_tokens_family")
                        .table(Alias::new("refresh_tokens"))
                        .col(Alias::new("family"))
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("refresh_tokens")).to_owned())
                .await
        }
    }
}

pub struct SeaRefreshStore {
    db: DatabaseConnection,
}

impl SeaRefreshStore {
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<migration::Migrator>(&db).await?;
        Ok(Self { db })
    }
}

#[async_trait]
impl RefreshStore for SeaRefreshStore {
    async fn insert(&self, r: &RefreshRecord) -> Result<(), DbErr> {
        entity::ActiveModel {
            token_hash: Set(r.token_hash.clone()),
            family: Set(r.family.clone()),
            user_id: Set(r.user_id.to_string()),
            team_id: Set(r.team_id.to_string()),
            expires_at_ms: Set(r.expires_at_ms),
            used: Set(r.used),
            revoked: Set(r.revoked),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    async fn find(&self, token_hash: &str) -> Result<Option<RefreshRecord>, DbErr> {
        let Some(m) = entity::Entity::find_by_id(token_hash.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let bad = |s: &str| DbErr::Custom(format!("bad id in database: {s}"));
        Ok(Some(RefreshRecord {
            user_id: m.user_id.parse().map_err(|_| bad(&m.user_id))?,
            team_id: m.team_id.parse().map_err(|_| bad(&m.team_id))?,
            token_hash: m.token_hash,
            family: m.family,
            expires_at_ms: m.expires_at_ms,
            used: m.used,
            revoked: m.revoked,
        }))
    }

    async fn mark_used(&self, token_hash: &str) -> Result<bool, DbErr> {
        let result = entity::Entity::update_many()
            .col_expr(entity::Column::Used, Expr::value(true))
            .filter(entity::Column::TokenHash.eq(token_hash))
            .filter(entity::Column::Used.eq(false))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn revoke_family(&self, family: &str) -> Result<(), DbErr> {
        entity::Entity::update_many()
            .col_expr(entity::Column::Revoked, Expr::value(true))
            .filter(entity::Column::Family.eq(family))
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
