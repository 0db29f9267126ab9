//! The team service's schema, applied at start-up. Its own migration table keeps it apart from
//! the other services sharing the database.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Teams), Box::new(M0002ChatMessages)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("covibe_team_migrations").into_iden()
    }
}

struct M0001Teams;

impl MigrationName for M0001Teams {
    fn name(&self) -> &str {
        "m0001_teams_members_invites"
    }
}

fn id(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .string_len(40)
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Teams {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("teams"))
                    .if_not_exists()
                    .col(id("id").primary_key())
                    .col(
                        ColumnDef::new(Alias::new("name"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("created_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("members"))
                    .if_not_exists()
                    .col(id("id").primary_key())
                    .col(id("team_id"))
                    .col(
                        ColumnDef::new(Alias::new("email"))
                            .string_len(254)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("display_name"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("created_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("members_team_email")
                    .table(Alias::new("members"))
                    .col(Alias::new("team_id"))
                    .col(Alias::new("email"))
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("invites"))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("code_hash"))
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(id("team_id"))
                    .col(id("created_by"))
                    .col(
                        ColumnDef::new(Alias::new("expires_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("max_uses"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("uses")).big_integer().not_null())
                    .col(ColumnDef::new(Alias::new("revoked")).boolean().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["invites", "members", "teams"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

struct M0002ChatMessages;

impl MigrationName for M0002ChatMessages {
    fn name(&self) -> &str {
        "m0002_chat_messages"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002ChatMessages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("chat_messages"))
                    .if_not_exists()
                    .col(id("id").primary_key())
                    .col(id("team_id"))
                    .col(id("user_id"))
                    .col(
                        ColumnDef::new(Alias::new("display_name"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("text")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("created_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // History pages walk one team's messages by (time, id).
        manager
            .create_index(
                Index::create()
                    .name("chat_messages_team_time")
                    .table(Alias::new("chat_messages"))
                    .col(Alias::new("team_id"))
                    .col(Alias::new("created_at_ms"))
                    .col(Alias::new("id"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("chat_messages")).to_owned())
            .await
    }
}
