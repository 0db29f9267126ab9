//! The preview service's schema, with its own migration table.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Previews),
            Box::new(M0002Deliveries),
            Box::new(M0003Configs),
            Box::new(M0004Deploys),
            Box::new(M0005Upstream),
            Box::new(M0006OneRunning),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("covibe_preview_migrations").into_iden()
    }
}

struct M0001Previews;

struct M0003Configs;

struct M0004Deploys;

struct M0005Upstream;

/// At most one running deploy per team, whichever replica claims it.
struct M0006OneRunning;

impl MigrationName for M0006OneRunning {
    fn name(&self) -> &str {
        "m0006_preview_one_running"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006OneRunning {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A partial unique index: PostgreSQL and SQLite both have them; sea-query's builder does
        // not cover both, so the statement is written out.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS preview_deployments_one_running \
                 ON preview_deployments (team_id) WHERE status = 'running'",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS preview_deployments_one_running")
            .await
            .map(|_| ())
    }
}

impl MigrationName for M0005Upstream {
    fn name(&self) -> &str {
        "m0005_preview_upstream"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005Upstream {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let column = |name: &str, len: u32| {
            ColumnDef::new(Alias::new(name))
                .string_len(len)
                .not_null()
                .default("")
                .to_owned()
        };
        for (table, mut col) in [
            ("previews", column("upstream", 300)),
            ("preview_configs", column("public_url", 1024)),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(&mut col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [("previews", "upstream"), ("preview_configs", "public_url")] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new(name))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

impl MigrationName for M0004Deploys {
    fn name(&self) -> &str {
        "m0004_preview_deploys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Deploys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = covibe_storage::text_column;
        let big = |name: &str| {
            ColumnDef::new(Alias::new(name))
                .big_integer()
                .not_null()
                .to_owned()
        };
        let int = |name: &str| {
            ColumnDef::new(Alias::new(name))
                .integer()
                .not_null()
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("preview_grants"))
                    .if_not_exists()
                    .col(text("team_id", 40).primary_key())
                    .col(text("vm_id", 40))
                    .col(text("host", 255))
                    .col(ColumnDef::new(Alias::new("sealed")).binary().not_null())
                    .col(int("key_version"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("preview_deployments"))
                    .if_not_exists()
                    .col(text("id", 40).primary_key())
                    .col(text("team_id", 40))
                    .col(text("commit", 64))
                    .col(text("trigger", 16))
                    .col(text("requested_by", 255))
                    .col(text("status", 16))
                    .col(int("attempts"))
                    .col(big("next_attempt_ms"))
                    .col(big("lease_until_ms"))
                    .col(big("created_at_ms"))
                    .col(big("started_at_ms"))
                    .col(big("finished_at_ms"))
                    .col(ColumnDef::new(Alias::new("log_tail")).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("preview_deployments_team")
                    .table(Alias::new("preview_deployments"))
                    .col(Alias::new("team_id"))
                    .col(Alias::new("status"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["preview_deployments", "preview_grants"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

impl MigrationName for M0003Configs {
    fn name(&self) -> &str {
        "m0003_preview_configs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Configs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = covibe_storage::text_column;
        let int = |name: &str| {
            ColumnDef::new(Alias::new(name))
                .integer()
                .not_null()
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("preview_configs"))
                    .if_not_exists()
                    .col(text("team_id", 40).primary_key())
                    .col(text("repository", 1024))
                    .col(text("branch", 255))
                    .col(text("vm_id", 40))
                    .col(text("work_dir", 1024))
                    .col(text("build_command", 4096))
                    .col(text("start_command", 4096))
                    .col(int("port"))
                    .col(text("health_path", 1024))
                    .col(text("updated_by", 40))
                    .col(
                        ColumnDef::new(Alias::new("updated_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("secret_sealed"))
                            .binary()
                            .not_null(),
                    )
                    .col(int("secret_version"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("preview_configs"))
                    .to_owned(),
            )
            .await
    }
}

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
