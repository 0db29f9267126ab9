//! The orchestrator's schema, applied at start-up, with its own migration table.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Agents),
            Box::new(M0002KillRequested),
            Box::new(M0003Outcome),
            Box::new(M0004LastSeen),
            Box::new(M0005Positions),
            Box::new(M0006OutputEvents),
            Box::new(M0007Strategy),
            Box::new(M0008Permissions),
            Box::new(M0009PermissionInputs),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("covibe_orchestrator_migrations").into_iden()
    }
}

struct M0001Agents;

impl MigrationName for M0001Agents {
    fn name(&self) -> &str {
        "m0001_agents_and_output"
    }
}

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Agents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("agents"))
                    .if_not_exists()
                    .col(col("id").string_len(40).not_null().primary_key())
                    .col(col("team_id").string_len(40).not_null())
                    .col(col("owner_id").string_len(40).not_null())
                    .col(col("vm_id").string_len(64).not_null())
                    .col(col("task").text().not_null())
                    .col(col("status").string_len(16).not_null())
                    .col(col("exit_code").integer().null())
                    .col(col("created_at_ms").big_integer().not_null())
                    .col(col("started_at_ms").big_integer().null())
                    .col(col("finished_at_ms").big_integer().null())
                    .col(col("output_seq").big_integer().not_null())
                    .col(col("token_hash").string_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agents_team_created")
                    .table(Alias::new("agents"))
                    .col(Alias::new("team_id"))
                    .col(Alias::new("created_at_ms"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("agent_output"))
                    .if_not_exists()
                    .col(col("agent_id").string_len(40).not_null())
                    .col(col("seq").big_integer().not_null())
                    .col(col("stream").integer().not_null())
                    .col(col("data").blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("agent_id"))
                            .col(Alias::new("seq")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["agent_output", "agents"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

struct M0002KillRequested;

impl MigrationName for M0002KillRequested {
    fn name(&self) -> &str {
        "m0002_agents_kill_requested"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002KillRequested {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .add_column(col("kill_requested_ms").big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .drop_column(Alias::new("kill_requested_ms"))
                    .to_owned(),
            )
            .await
    }
}

struct M0003Outcome;

impl MigrationName for M0003Outcome {
    fn name(&self) -> &str {
        "m0003_agents_outcome"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Outcome {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite cannot add several in one ALTER TABLE.
        for column in [
            col("cost_usd").double().null().to_owned(),
            col("num_turns").big_integer().null().to_owned(),
            col("duration_ms").big_integer().null().to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("agents"))
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["cost_usd", "num_turns", "duration_ms"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("agents"))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

struct M0007Strategy;

impl MigrationName for M0007Strategy {
    fn name(&self) -> &str {
        "m0007_agents_strategy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0007Strategy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .add_column(col("strategy").string_len(32).not_null().default(""))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .drop_column(Alias::new("strategy"))
                    .to_owned(),
            )
            .await
    }
}

struct M0004LastSeen;

impl MigrationName for M0004LastSeen {
    fn name(&self) -> &str {
        "m0004_agents_last_seen"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004LastSeen {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .add_column(col("last_seen_ms").big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .drop_column(Alias::new("last_seen_ms"))
                    .to_owned(),
            )
            .await
    }
}

/// `agents.output_seq` moves to `agent_positions` (see `entities::position`).
struct M0005Positions;

impl MigrationName for M0005Positions {
    fn name(&self) -> &str {
        "m0005_agent_positions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005Positions {
    /// In one transaction on SQLite too (PostgreSQL's migrations always are): the new table,
    /// its rows and the dropped column land together or not at all. On PostgreSQL, an
    /// orchestrator replica still running the code from before fails to store output from then
    /// on (its vm-agents are told to resend, and reconnect to a replica that can), rather than
    /// moving a position that is no longer read.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("agent_positions"))
                    .col(col("agent_id").string_len(40).not_null().primary_key())
                    .col(col("output_seq").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO agent_positions (agent_id, output_seq) \
                 SELECT id, output_seq FROM agents",
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .drop_column(Alias::new("output_seq"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agents"))
                    .add_column(col("output_seq").big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE agents SET output_seq = \
                 (SELECT p.output_seq FROM agent_positions p WHERE p.agent_id = agents.id)",
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("agent_positions"))
                    .to_owned(),
            )
            .await
    }
}

/// Each stored line keeps the event it was understood as at ingest, so history never parses it
/// again. Lines stored before stay NULL (they are parsed when read).
struct M0006OutputEvents;

impl MigrationName for M0006OutputEvents {
    fn name(&self) -> &str {
        "m0006_output_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006OutputEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agent_output"))
                    .add_column(col("event").text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("agent_output"))
                    .drop_column(Alias::new("event"))
                    .to_owned(),
            )
            .await
    }
}

/// Tool uses asked of an agent's owner, the tools allowed for the rest of an agent's run, and
/// room in `agents.status` for `waiting_for_approval`.
struct M0008Permissions;

impl MigrationName for M0008Permissions {
    fn name(&self) -> &str {
        "m0008_agent_permissions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0008Permissions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("agent_permissions"))
                    .if_not_exists()
                    .col(col("agent_id").string_len(40).not_null())
                    .col(col("request_id").string_len(200).not_null())
                    .col(col("team_id").string_len(40).not_null())
                    .col(col("owner_id").string_len(40).not_null())
                    .col(col("tool").string_len(200).not_null())
                    .col(col("tool_use_id").string_len(200).not_null())
                    .col(col("input_json").text().not_null())
                    .col(col("summary").text().not_null())
                    .col(col("state").string_len(16).not_null())
                    .col(col("decided_by").text().null())
                    .col(col("message").text().not_null())
                    .col(col("created_at_ms").big_integer().not_null())
                    .col(col("expires_at_ms").big_integer().not_null())
                    .col(col("decided_at_ms").big_integer().null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("agent_id"))
                            .col(Alias::new("request_id")),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("agent_permissions_team_state", ["team_id", "state"]),
            (
                "agent_permissions_state_expires",
                ["state", "expires_at_ms"],
            ),
        ] {
            let mut index = Index::create();
            index
                .name(name)
                .table(Alias::new("agent_permissions"))
                .if_not_exists();
            for column in columns {
                index.col(Alias::new(column));
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("agent_tool_grants"))
                    .if_not_exists()
                    .col(col("agent_id").string_len(40).not_null())
                    .col(col("tool").string_len(200).not_null())
                    .col(col("granted_by").string_len(40).not_null())
                    .col(col("granted_at_ms").big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("agent_id"))
                            .col(Alias::new("tool")),
                    )
                    .to_owned(),
            )
            .await?;
        // `waiting_for_approval` is longer than the 16 characters the status had; SQLite does
        // not enforce a length.
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("agents"))
                        .modify_column(col("status").string_len(32).not_null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["agent_tool_grants", "agent_permissions"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// A request's project directory (to read the policy's path rules against an owner's changed
/// input) and the input an allow changed it to (resent to a vm-agent that asks again).
struct M0009PermissionInputs;

impl MigrationName for M0009PermissionInputs {
    fn name(&self) -> &str {
        "m0009_permission_inputs"
    }
}

const M0009_COLUMNS: [&str; 2] = ["project_dir", "updated_input_json"];

#[async_trait::async_trait]
impl MigrationTrait for M0009PermissionInputs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in M0009_COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("agent_permissions"))
                        .add_column(col(column).text().not_null().default(""))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in M0009_COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("agent_permissions"))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
