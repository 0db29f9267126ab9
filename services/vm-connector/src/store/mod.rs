//! Members' VMs, over SeaORM.

use async_trait::async_trait;
use covibe_types::{UserId, VmId, now_ms};

use crate::model::{CredentialKind, JobGrant, StoredCredential, Strategy, Vm};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set, TransactionTrait,
};

#[async_trait]
pub trait VmStore: Send + Sync + 'static {
    async fn list(&self, user: UserId) -> Result<Vec<Vm>, DbErr>;
    async fn insert(&self, vm: &Vm) -> Result<(), DbErr>;
    async fn touch(&self, id: VmId) -> Result<(), DbErr>;
    /// Writes `vm`'s settings (name, strategy, SSH target, project dir, default) over the stored
    /// VM with its id, only if that VM belongs to `vm.user_id` in `vm.team_id`; `false` when
    /// there is no such VM of theirs. A VM made the default unmarks the owner's others.
    async fn update(&self, vm: &Vm) -> Result<bool, DbErr>;
    /// Removes a VM of `user`'s with its token and credential; `false` when there is none.
    async fn delete(&self, user: UserId, id: VmId) -> Result<bool, DbErr>;
    /// Records the host keys: the pinned one and a changed one waiting for the owner.
    async fn set_host_keys(&self, id: VmId, pinned: &str, pending: &str) -> Result<(), DbErr>;
    /// Records the outcome of the last attempt to reach the VM (empty error: it worked).
    async fn set_health(&self, id: VmId, error: &str, at_ms: i64) -> Result<(), DbErr>;
    /// The VM's sealed credential.
    async fn credential(&self, id: VmId) -> Result<Option<StoredCredential>, DbErr>;
    async fn set_credential(&self, credential: &StoredCredential) -> Result<(), DbErr>;
    /// Credentials sealed under a master key version older than `version`.
    async fn credentials_below(&self, version: u32) -> Result<Vec<StoredCredential>, DbErr>;
    /// Stores a job grant, replacing the VM's previous grant for the same purpose.
    async fn set_job_grant(&self, grant: &JobGrant) -> Result<(), DbErr>;
    /// The grant with this hash.
    async fn job_grant(&self, grant_hash: &str) -> Result<Option<JobGrant>, DbErr>;
    /// Replaces a sealed credential only if it is still `old` (a compare-and-swap, so that a
    /// re-encryption racing a member's replacement never overwrites the newer secret).
    async fn reseal(
        &self,
        id: VmId,
        old: &[u8],
        sealed: &[u8],
        key_version: u32,
    ) -> Result<bool, DbErr>;
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
        pub is_default: bool,
        pub host: String,
        pub port: i32,
        pub username: String,
        pub project_dir: String,
        pub host_key: String,
        pub pending_host_key: String,
        pub last_error: String,
        pub last_error_ms: i64,
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

mod grant_entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vm_job_grants")]
    pub struct Model {
        /// Hex SHA-256 of the grant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub grant_hash: String,
        pub vm_id: String,
        pub team_id: String,
        pub user_id: String,
        pub purpose: String,
        pub created_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod credential_entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vm_credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub vm_id: String,
        pub team_id: String,
        pub user_id: String,
        pub kind: String,
        pub key_version: i32,
        /// `version || nonce || ciphertext`, see `covibe_identity::vault`.
        pub sealed: Vec<u8>,
        pub updated_ms: i64,
    }

    // Written by hand: the sealed bytes stay out of every log line.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("VmCredential")
                .field("vm_id", &self.vm_id)
                .finish_non_exhaustive()
        }
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
            vec![
                Box::new(M0001Vms),
                Box::new(M0002VmTokens),
                Box::new(M0003SshProxy),
                Box::new(M0004JobGrants),
            ]
        }

        fn migration_table_name() -> DynIden {
            Alias::new("covibe_vm_connector_migrations").into_iden()
        }
    }

    struct M0001Vms;
    struct M0002VmTokens;
    struct M0003SshProxy;
    struct M0004JobGrants;

    impl MigrationName for M0004JobGrants {
        fn name(&self) -> &str {
            "m0004_job_grants"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0004JobGrants {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("vm_job_grants"))
                        .if_not_exists()
                        .col(text("grant_hash", 64).primary_key())
                        .col(text("vm_id", 40))
                        .col(text("team_id", 40))
                        .col(text("user_id", 40))
                        .col(text("purpose", 32))
                        .col(
                            ColumnDef::new(Alias::new("created_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("vm_job_grants_vm")
                        .table(Alias::new("vm_job_grants"))
                        .col(Alias::new("vm_id"))
                        .col(Alias::new("purpose"))
                        .unique()
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("vm_job_grants")).to_owned())
                .await
        }
    }

    impl MigrationName for M0003SshProxy {
        fn name(&self) -> &str {
            "m0003_ssh_proxy"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0003SshProxy {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let vms = || Alias::new("vms");
            let text = |name: &str, len: u32| {
                ColumnDef::new(Alias::new(name))
                    .string_len(len)
                    .not_null()
                    .default("")
                    .to_owned()
            };
            // One column per statement: SQLite alters one at a time.
            let columns = [
                ColumnDef::new(Alias::new("is_default"))
                    .boolean()
                    .not_null()
                    .default(false)
                    .to_owned(),
                text("host", 255),
                ColumnDef::new(Alias::new("port"))
                    .integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
                text("username", 64),
                text("project_dir", 1024),
                text("host_key", 2048),
                text("pending_host_key", 2048),
                text("last_error", 512),
                ColumnDef::new(Alias::new("last_error_ms"))
                    .big_integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
            ];
            for mut column in columns {
                manager
                    .alter_table(
                        Table::alter()
                            .table(vms())
                            .add_column(&mut column)
                            .to_owned(),
                    )
                    .await?;
            }
            let text = covibe_storage::text_column;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("vm_credentials"))
                        .if_not_exists()
                        .col(text("vm_id", 40).primary_key())
                        .col(text("team_id", 40))
                        .col(text("user_id", 40))
                        .col(text("kind", 16))
                        .col(
                            ColumnDef::new(Alias::new("key_version"))
                                .integer()
                                .not_null(),
                        )
                        .col(ColumnDef::new(Alias::new("sealed")).binary().not_null())
                        .col(
                            ColumnDef::new(Alias::new("updated_ms"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("vm_credentials")).to_owned())
                .await
        }
    }

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
        name: m.name,
        strategy: Strategy::parse(&m.strategy)
            .ok_or_else(|| DbErr::Custom(format!("bad strategy in database: {}", m.strategy)))?,
        last_seen_ms: m.last_seen_ms,
        is_default: m.is_default,
        host: m.host,
        port: u16::try_from(m.port).unwrap_or(0),
        username: m.username,
        project_dir: m.project_dir,
        host_key: m.host_key,
        pending_host_key: m.pending_host_key,
        last_error: m.last_error,
        last_error_ms: m.last_error_ms,
    })
}

fn credential_of(m: credential_entity::Model) -> Result<StoredCredential, DbErr> {
    use covibe_storage::parse_stored;
    Ok(StoredCredential {
        vm_id: parse_stored(&m.vm_id)?,
        team_id: parse_stored(&m.team_id)?,
        user_id: parse_stored(&m.user_id)?,
        kind: CredentialKind::parse(&m.kind)
            .ok_or_else(|| DbErr::Custom(format!("bad credential kind: {}", m.kind)))?,
        key_version: u32::try_from(m.key_version)
            .map_err(|_| DbErr::Custom("bad key version".to_owned()))?,
        sealed: m.sealed,
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
            is_default: Set(vm.is_default),
            host: Set(vm.host.clone()),
            port: Set(i32::from(vm.port)),
            username: Set(vm.username.clone()),
            project_dir: Set(vm.project_dir.clone()),
            host_key: Set(vm.host_key.clone()),
            pending_host_key: Set(vm.pending_host_key.clone()),
            last_error: Set(vm.last_error.clone()),
            last_error_ms: Set(vm.last_error_ms),
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
        use sea_orm::sea_query::Expr;
        let txn = self.db.begin().await?;
        if vm.is_default {
            entity::Entity::update_many()
                .col_expr(entity::Column::IsDefault, Expr::value(false))
                .filter(entity::Column::UserId.eq(vm.user_id.to_string()))
                .filter(entity::Column::Id.ne(vm.id.to_string()))
                .exec(&txn)
                .await?;
        }
        let result = entity::Entity::update_many()
            .col_expr(entity::Column::Name, Expr::value(vm.name.clone()))
            .col_expr(entity::Column::Strategy, Expr::value(vm.strategy.as_str()))
            .col_expr(entity::Column::IsDefault, Expr::value(vm.is_default))
            .col_expr(entity::Column::Host, Expr::value(vm.host.clone()))
            .col_expr(entity::Column::Port, Expr::value(i32::from(vm.port)))
            .col_expr(entity::Column::Username, Expr::value(vm.username.clone()))
            .col_expr(
                entity::Column::ProjectDir,
                Expr::value(vm.project_dir.clone()),
            )
            .col_expr(entity::Column::HostKey, Expr::value(vm.host_key.clone()))
            .col_expr(
                entity::Column::PendingHostKey,
                Expr::value(vm.pending_host_key.clone()),
            )
            .filter(entity::Column::Id.eq(vm.id.to_string()))
            .filter(entity::Column::UserId.eq(vm.user_id.to_string()))
            .filter(entity::Column::TeamId.eq(vm.team_id.to_string()))
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.commit().await?;
        Ok(true)
    }

    async fn delete(&self, user: UserId, id: VmId) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let removed = entity::Entity::delete_many()
            .filter(entity::Column::Id.eq(id.to_string()))
            .filter(entity::Column::UserId.eq(user.to_string()))
            .exec(&txn)
            .await?;
        if removed.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        token_entity::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await?;
        credential_entity::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await?;
        grant_entity::Entity::delete_many()
            .filter(grant_entity::Column::VmId.eq(id.to_string()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn set_host_keys(&self, id: VmId, pinned: &str, pending: &str) -> Result<(), DbErr> {
        use sea_orm::sea_query::Expr;
        entity::Entity::update_many()
            .col_expr(entity::Column::HostKey, Expr::value(pinned))
            .col_expr(entity::Column::PendingHostKey, Expr::value(pending))
            .filter(entity::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn set_health(&self, id: VmId, error: &str, at_ms: i64) -> Result<(), DbErr> {
        use sea_orm::sea_query::Expr;
        let mut update = entity::Entity::update_many()
            .col_expr(entity::Column::LastError, Expr::value(error))
            .col_expr(entity::Column::LastErrorMs, Expr::value(at_ms));
        if error.is_empty() {
            update = update.col_expr(entity::Column::LastSeenMs, Expr::value(at_ms));
        }
        update
            .filter(entity::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn credential(&self, id: VmId) -> Result<Option<StoredCredential>, DbErr> {
        credential_entity::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(credential_of)
            .transpose()
    }

    async fn set_credential(&self, c: &StoredCredential) -> Result<(), DbErr> {
        use credential_entity::Column as C;
        let row = credential_entity::ActiveModel {
            vm_id: Set(c.vm_id.to_string()),
            team_id: Set(c.team_id.to_string()),
            user_id: Set(c.user_id.to_string()),
            kind: Set(c.kind.as_str().to_owned()),
            key_version: Set(i32::try_from(c.key_version).unwrap_or(i32::MAX)),
            sealed: Set(c.sealed.clone()),
            updated_ms: Set(now_ms()),
        };
        credential_entity::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(C::VmId)
                    .update_columns([C::Kind, C::KeyVersion, C::Sealed, C::UpdatedMs])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn set_job_grant(&self, g: &JobGrant) -> Result<(), DbErr> {
        use grant_entity::{ActiveModel, Column, Entity};
        let txn = self.db.begin().await?;
        Entity::delete_many()
            .filter(Column::VmId.eq(g.vm_id.to_string()))
            .filter(Column::Purpose.eq(g.purpose.clone()))
            .exec(&txn)
            .await?;
        ActiveModel {
            grant_hash: Set(g.grant_hash.clone()),
            vm_id: Set(g.vm_id.to_string()),
            team_id: Set(g.team_id.to_string()),
            user_id: Set(g.user_id.to_string()),
            purpose: Set(g.purpose.clone()),
            created_ms: Set(now_ms()),
        }
        .insert(&txn)
        .await?;
        txn.commit().await
    }

    async fn job_grant(&self, grant_hash: &str) -> Result<Option<JobGrant>, DbErr> {
        use covibe_storage::parse_stored;
        let Some(m) = grant_entity::Entity::find_by_id(grant_hash.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(JobGrant {
            grant_hash: m.grant_hash,
            vm_id: parse_stored(&m.vm_id)?,
            team_id: parse_stored(&m.team_id)?,
            user_id: parse_stored(&m.user_id)?,
            purpose: m.purpose,
        }))
    }

    async fn credentials_below(&self, version: u32) -> Result<Vec<StoredCredential>, DbErr> {
        credential_entity::Entity::find()
            .filter(credential_entity::Column::KeyVersion.lt(i64::from(version)))
            .order_by_asc(credential_entity::Column::VmId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(credential_of)
            .collect()
    }

    async fn reseal(
        &self,
        id: VmId,
        old: &[u8],
        sealed: &[u8],
        key_version: u32,
    ) -> Result<bool, DbErr> {
        use sea_orm::sea_query::Expr;
        let result = credential_entity::Entity::update_many()
            .col_expr(
                credential_entity::Column::Sealed,
                Expr::value(sealed.to_vec()),
            )
            .col_expr(
                credential_entity::Column::KeyVersion,
                Expr::value(i64::from(key_version)),
            )
            .col_expr(credential_entity::Column::UpdatedMs, Expr::value(now_ms()))
            .filter(credential_entity::Column::VmId.eq(id.to_string()))
            .filter(credential_entity::Column::Sealed.eq(old.to_vec()))
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
