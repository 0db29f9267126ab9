//! The auth service's schema, applied at start-up, with its own migration table.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001RefreshTokens), Box::new(M0002Sessions)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("covibe_auth_migrations").into_iden()
    }
}

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
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
                    .col(col("expires_at_ms").big_integer().not_null())
                    .col(col("used").boolean().not_null())
                    .col(col("revoked").boolean().not_null())
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

/// Sessions (one per signed-in device; a refresh family is a session), what a refresh grace
/// needs on each token, and one-time sign-in codes. Every live refresh family becomes a
/// session, so nobody is signed out by the upgrade.
struct M0002Sessions;

impl MigrationName for M0002Sessions {
    fn name(&self) -> &str {
        "m0002_sessions_sign_in_codes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Sessions {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = covibe_storage::text_column;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("sessions"))
                    .col(text("id", 40).primary_key())
                    .col(text("user_id", 40))
                    .col(text("team_id", 40))
                    .col(text("device_name", 64))
                    .col(col("created_at_ms").big_integer().not_null())
                    .col(col("last_used_at_ms").big_integer().not_null())
                    .col(col("ended_at_ms").big_integer().null())
                    .col(col("end_reason").string_len(32).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("sign_in_codes"))
                    .col(text("code_hash", 64).primary_key())
                    .col(text("kind", 16))
                    .col(text("user_id", 40))
                    .col(text("team_id", 40))
                    .col(text("created_by", 40))
                    .col(col("created_at_ms").big_integer().not_null())
                    .col(col("expires_at_ms").big_integer().not_null())
                    .col(col("used_at_ms").big_integer().null())
                    .to_owned(),
            )
            .await?;
        for column in [
            col("used_at_ms").big_integer().null().to_owned(),
            col("successor").string_len(128).null().to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("refresh_tokens"))
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX sessions_user ON sessions (user_id)",
            // Old families were 32 hex digits: written as UUIDs, they are session ids.
            "UPDATE refresh_tokens SET family = substr(family, 1, 8) || '-' || \
             substr(family, 9, 4) || '-' || substr(family, 13, 4) || '-' || \
             substr(family, 17, 4) || '-' || substr(family, 21, 12) \
             WHERE length(family) = 32",
            "INSERT INTO sessions (id, user_id, team_id, device_name, created_at_ms, \
             last_used_at_ms) SELECT family, MIN(user_id), MIN(team_id), 'a device', 0, 0 \
             FROM refresh_tokens WHERE revoked = FALSE GROUP BY family",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["sessions", "sign_in_codes"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        for column in ["used_at_ms", "successor"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("refresh_tokens"))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
