//! The audit log: every access to a member's VM and every control of an agent, in one
//! append-only table shared by the services that act (the vm-connector and the orchestrator).
//! The database itself refuses to change or delete a row (triggers), so a compromised service
//! can add to the record but not rewrite it. A caller writes the record *before* it acts and
//! refuses the action when the write fails.

use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, DbErr, QueryOrder, QuerySelect, Set};

/// What happened, by whom, to what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    pub team_id: String,
    /// The member who acted, or `system` for the services' own work.
    pub actor_id: String,
    /// Whose VM or agent it was: the owner reads their log.
    pub owner_id: String,
    pub vm_id: Option<String>,
    pub agent_id: Option<String>,
    /// `vm.register`, `ssh.start`, `agent.kill`, ...
    pub action: String,
    pub strategy: Option<String>,
    /// Hex SHA-256 of the command run on the VM; never the command itself, which may hold a
    /// task's text.
    pub command_digest: Option<String>,
    /// `ok`, `error` or `refused`.
    pub result: String,
    /// A short, secret-free reason.
    pub detail: Option<String>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub record: AuditRecord,
}

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at_ms: i64,
        pub team_id: String,
        pub actor_id: String,
        pub owner_id: String,
        pub vm_id: Option<String>,
        pub agent_id: Option<String>,
        pub action: String,
        pub strategy: Option<String>,
        pub command_digest: Option<String>,
        pub result: String,
        pub detail: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    use sea_orm::{ConnectionTrait, DbBackend};
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0001AuditLog)]
        }

        fn migration_table_name() -> DynIden {
            Alias::new("covibe_audit_migrations").into_iden()
        }
    }

    struct M0001AuditLog;

    impl MigrationName for M0001AuditLog {
        fn name(&self) -> &str {
            "m0001_audit_log"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0001AuditLog {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = crate::text_column;
            let optional = |name: &str, len: u32| {
                ColumnDef::new(Alias::new(name))
                    .string_len(len)
                    .null()
                    .to_owned()
            };
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("audit_log"))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(Alias::new("id"))
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(Alias::new("at_ms")).big_integer().not_null())
                        .col(text("team_id", 40))
                        .col(text("actor_id", 40))
                        .col(text("owner_id", 40))
                        .col(optional("vm_id", 40))
                        .col(optional("agent_id", 40))
                        .col(text("action", 64))
                        .col(optional("strategy", 32))
                        .col(optional("command_digest", 64))
                        .col(text("result", 16))
                        .col(optional("detail", 512))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("audit_log_vm")
                        .table(Alias::new("audit_log"))
                        .col(Alias::new("vm_id"))
                        .col(Alias::new("id"))
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            let db = manager.get_connection();
            let statements: &[&str] = match db.get_database_backend() {
                DbBackend::Postgres => &[
                    "CREATE OR REPLACE FUNCTION covibe_audit_append_only() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ BEGIN \
                     RAISE EXCEPTION 'audit_log is append-only'; END $$",
                    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION covibe_audit_append_only()",
                    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log \
                     FOR EACH STATEMENT EXECUTE FUNCTION covibe_audit_append_only()",
                ],
                _ => &[
                    "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                    "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                ],
            };
            for sql in statements {
                db.execute_unprepared(sql).await?;
            }
            Ok(())
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "the audit log is never rolled back".to_owned(),
            ))
        }
    }
}

/// The audit table, over SeaORM.
#[derive(Clone)]
pub struct AuditLog {
    db: DatabaseConnection,
}

/// Shortens what is stored to the column's width, on a character boundary.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_owned(),
        None => s.to_owned(),
    }
}

impl AuditLog {
    /// Opens the audit table, creating it on first use.
    pub async fn new(db: DatabaseConnection) -> Result<Self, crate::Error> {
        crate::migrate::<migration::Migrator>(&db).await?;
        Ok(Self { db })
    }

    /// Appends one record. An error means nothing was recorded: the caller must not act.
    pub async fn record(&self, record: &AuditRecord) -> Result<(), DbErr> {
        entity::ActiveModel {
            at_ms: Set(covibe_types::now_ms()),
            team_id: Set(record.team_id.clone()),
            actor_id: Set(record.actor_id.clone()),
            owner_id: Set(record.owner_id.clone()),
            vm_id: Set(record.vm_id.clone()),
            agent_id: Set(record.agent_id.clone()),
            action: Set(clip(&record.action, 64)),
            strategy: Set(record.strategy.clone()),
            command_digest: Set(record.command_digest.clone()),
            result: Set(clip(&record.result, 16)),
            detail: Set(record.detail.as_deref().map(|d| clip(d, 500))),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    /// A VM's records, newest first, older than `before` (an entry id) when given.
    pub async fn for_vm(
        &self,
        vm_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, DbErr> {
        let mut query = entity::Entity::find().filter(entity::Column::VmId.eq(vm_id));
        if let Some(before) = before {
            query = query.filter(entity::Column::Id.lt(before));
        }
        Ok(query
            .order_by_desc(entity::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| AuditEntry {
                id: m.id,
                at_ms: m.at_ms,
                record: AuditRecord {
                    team_id: m.team_id,
                    actor_id: m.actor_id,
                    owner_id: m.owner_id,
                    vm_id: m.vm_id,
                    agent_id: m.agent_id,
                    action: m.action,
                    strategy: m.strategy,
                    command_digest: m.command_digest,
                    result: m.result,
                    detail: m.detail,
                },
            })
            .collect())
    }
}
