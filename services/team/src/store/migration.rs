//! The team service's schema, applied at start-up. Its own migration table keeps it apart from
//! the other services sharing the database.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Teams),
            Box::new(M0002ChatMessages),
            Box::new(M0003Roles),
            Box::new(M0004ChatClientIds),
            Box::new(M0005Policies),
            Box::new(M0006JoinKeys),
        ]
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

/// Roles (the creator of each existing team, its first member, becomes its owner), removed
/// members (kept, so their messages keep their names, but no longer members; their email may
/// join again), and invites with an id of their own for listing and revoking.
struct M0003Roles;

impl MigrationName for M0003Roles {
    fn name(&self) -> &str {
        "m0003_roles_removals_invite_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Roles {
    /// All or nothing on SQLite too (PostgreSQL's migrations always are).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let add = |table: &str, column: ColumnDef| {
            Table::alter()
                .table(Alias::new(table))
                .add_column(column)
                .to_owned()
        };
        manager
            .alter_table(add(
                "members",
                ColumnDef::new(Alias::new("role"))
                    .string_len(16)
                    .not_null()
                    .default("member")
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                "members",
                ColumnDef::new(Alias::new("removed_at_ms"))
                    .big_integer()
                    .null()
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                "invites",
                ColumnDef::new(Alias::new("id"))
                    .string_len(40)
                    .not_null()
                    .default("")
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                "invites",
                ColumnDef::new(Alias::new("created_at_ms"))
                    .big_integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
            ))
            .await?;
        let db = manager.get_connection();
        for statement in [
            // Each team's first member (by join time, then id) created it.
            "UPDATE members SET role = 'owner' WHERE id IN (SELECT m.id FROM members m \
             WHERE NOT EXISTS (SELECT 1 FROM members o WHERE o.team_id = m.team_id \
             AND (o.created_at_ms < m.created_at_ms \
             OR (o.created_at_ms = m.created_at_ms AND o.id < m.id))))",
            // Existing invites: an id from their hash (which says nothing of the code).
            "UPDATE invites SET id = substr(code_hash, 1, 32) WHERE id = ''",
            "CREATE UNIQUE INDEX invites_id ON invites (id)",
            "CREATE INDEX invites_team ON invites (team_id)",
            // One present member per email and team; a removed member's email may join again.
            "DROP INDEX members_team_email",
            "CREATE UNIQUE INDEX members_team_email_present ON members (team_id, email) \
             WHERE removed_at_ms IS NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX members_team_email_present",
            "DELETE FROM members WHERE removed_at_ms IS NOT NULL",
            "CREATE UNIQUE INDEX members_team_email ON members (team_id, email)",
            "DROP INDEX invites_team",
            "DROP INDEX invites_id",
        ] {
            db.execute_unprepared(statement).await?;
        }
        for (table, column) in [
            ("members", "role"),
            ("members", "removed_at_ms"),
            ("invites", "id"),
            ("invites", "created_at_ms"),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Chat messages carry the id their client chose, unique per author and team: a retried send
/// is stored once. Messages without one are not constrained.
struct M0004ChatClientIds;

impl MigrationName for M0004ChatClientIds {
    fn name(&self) -> &str {
        "m0004_chat_client_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004ChatClientIds {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("chat_messages"))
                    .add_column(
                        ColumnDef::new(Alias::new("client_id"))
                            .string_len(64)
                            .null()
                            .to_owned(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX chat_messages_client ON chat_messages \
                 (team_id, user_id, client_id) WHERE client_id IS NOT NULL",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX chat_messages_client")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("chat_messages"))
                    .drop_column(Alias::new("client_id"))
                    .to_owned(),
            )
            .await
    }
}

/// The tool-use policy: the team's rules (one row per team, with who set them last) and each
/// member's own (one row per member). Each list is its rules joined by newlines.
struct M0005Policies;

impl MigrationName for M0005Policies {
    fn name(&self) -> &str {
        "m0005_policies"
    }
}

fn rules(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0005Policies {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let at = || {
            ColumnDef::new(Alias::new("updated_at_ms"))
                .big_integer()
                .not_null()
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("team_policies"))
                    .if_not_exists()
                    .col(id("team_id").primary_key())
                    .col(rules("allow_rules"))
                    .col(rules("deny_rules"))
                    .col(at())
                    .col(id("updated_by"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("member_policies"))
                    .if_not_exists()
                    .col(id("user_id").primary_key())
                    .col(id("team_id"))
                    .col(rules("allow_rules"))
                    .col(rules("deny_rules"))
                    .col(at())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["member_policies", "team_policies"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The hash of the retry key a member joined with, so that a join retried after its answer was
/// lost signs in the member the first try made.
struct M0006JoinKeys;

impl MigrationName for M0006JoinKeys {
    fn name(&self) -> &str {
        "m0006_join_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006JoinKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("members"))
                    .add_column(
                        ColumnDef::new(Alias::new("join_key_hash"))
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("members"))
                    .drop_column(Alias::new("join_key_hash"))
                    .to_owned(),
            )
            .await
    }
}
