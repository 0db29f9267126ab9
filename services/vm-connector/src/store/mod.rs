//! Members' VMs, over SeaORM.

use async_trait::async_trait;
use covibe_types::{UserId, VmId, now_ms};

use crate::model::{Strategy, Vm};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};

#[async_trait]
pub trait VmStore: Send + Sync + 'static {
    async fn list(&self, user: UserId) -> Result<Vec<Vm>, DbErr>;
    async fn insert(&self, vm: &Vm) -> Result<(), DbErr>;
    async fn touch(&self, id: VmId) -> Result<(), DbErr>;
    /// Writes `vm`'s name and strategy over the stored VM with its id, only if that VM belongs
    /// to `vm.user_id` in `vm.team_id`; `false` when there is no such VM of theirs.
    async fn update(&self, vm: &Vm) -> Result<bool, DbErr>;
    /// The VM with this id, whoever owns it.
    async fn get(&self, id: VmId) -> Result<Option<Vm>, DbErr>;
    /// Stores the hash of the VM's dial-in token, replacing any previous one.
    async fn set_token_hash(&self, id: VmId, hash: &str) -> Result<(), DbErr>;
    /// The hash of the VM's dial-in token, if one was minted.
    async fn token_hash(&self, id: VmId) -> Result<Option<String>, DbErr>;
}

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vms")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub team_id: String,
        pub name: String,
        pub strategy: String,
        pub last_seen_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod token_entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vm_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub vm_id: String,
        /// Hex SHA-256 of the token.
        pub token_hash: String,
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
            vec![Box::new(M0001Vms), Box::new(M0002VmTokens)]
        }

        fn migration_table_name() -> DynIden {
            Alias::new("covibe_vm_connector_migrations").into_iden()
        }
    }

    struct M0001Vms;
    struct M0002VmTokens;

    impl MigrationName for M0002VmTokens {
        fn name(&self) -> &str {
            "m0002_vm_tokens"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0002VmTokens {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("vm_tokens"))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(Alias::new("vm_id"))
                                .string_len(40)
                                .not_null()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(Alias::new("token_hash"))
                                .string_len(64)
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("vm_tokens")).to_owned())
                .await
        }
    }

    impl MigrationName for M0001Vms {
        fn name(&self) -> &str {
            "m0001_vms"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0001Vms {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("vms"))
                        .if_not_exists()
                        .col(text("id", 40).primary_key())
                        .col(text("user_id", 40))
                        .col(text("team_id", 40))
                        .col(text("name", 128))
                        .col(text("strategy", 32))
                        .col(
                            ColumnDef::new(Alias::new("last_seen_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("vms_user")
                        .table(Alias::new("vms"))
                        .col(Alias::new("user_id"))
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("vms")).to_owned())
                .await
        }
    }
}

pub struct SeaVmStore {
    db: DatabaseConnection,
}

impl SeaVmStore {
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<migration::Migrator>(&db).await?;
        Ok(Self { db })
    }
}

fn vm_of(m: entity::Model) -> Result<Vm, DbErr> {
    let bad = || DbErr::Custom(format!("bad id in vms row {}", m.id));
    Ok(Vm {
        id: m.id.parse().map_err(|_| bad())?,
        user_id: m.user_id.parse().map_err(|_| bad())?,
        team_id: m.team_id.parse().map_err(|_| bad())?,
        name: m.name.clone(),
        strategy: Strategy::parse(&m.strategy)
            .ok_or_else(|| DbErr::Custom(format!("bad strategy in database: {}", m.strategy)))?,
        last_seen_ms: m.last_seen_ms,
    })
}

#[async_trait]
impl VmStore for SeaVmStore {
    async fn list(&self, user: UserId) -> Result<Vec<Vm>, DbErr> {
        entity::Entity::find()
            .filter(entity::Column::UserId.eq(user.to_string()))
            .order_by_asc(entity::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(vm_of)
            .collect()
    }

    async fn insert(&self, vm: &Vm) -> Result<(), DbErr> {
        entity::ActiveModel {
            id: Set(vm.id.to_string()),
            user_id: Set(vm.user_id.to_string()),
            team_id: Set(vm.team_id.to_string()),
            name: Set(vm.name.clone()),
            strategy: Set(vm.strategy.as_str().to_owned()),
            last_seen_ms: Set(vm.last_seen_ms),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    async fn touch(&self, id: VmId) -> Result<(), DbErr> {
        entity::Entity::update_many()
            .col_expr(
                entity::Column::LastSeenMs,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(entity::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn update(&self, vm: &Vm) -> Result<bool, DbErr> {
        let result = entity::Entity::update_many()
            .col_expr(
                entity::Column::Name,
                sea_orm::sea_query::Expr::value(vm.name.clone()),
            )
            .col_expr(
                entity::Column::Strategy,
                sea_orm::sea_query::Expr::value(vm.strategy.as_str()),
            )
            .filter(entity::Column::Id.eq(vm.id.to_string()))
            .filter(entity::Column::UserId.eq(vm.user_id.to_string()))
            .filter(entity::Column::TeamId.eq(vm.team_id.to_string()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn get(&self, id: VmId) -> Result<Option<Vm>, DbErr> {
        entity::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(vm_of)
            .transpose()
    }

    async fn set_token_hash(&self, id: VmId, hash: &str) -> Result<(), DbErr> {
        let row = token_entity::ActiveModel {
            vm_id: Set(id.to_string()),
            token_hash: Set(hash.to_owned()),
        };
        token_entity::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(token_entity::Column::VmId)
                    .update_column(token_entity::Column::TokenHash)
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn token_hash(&self, id: VmId) -> Result<Option<String>, DbErr> {
        Ok(token_entity::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| row.token_hash))
    }
}
