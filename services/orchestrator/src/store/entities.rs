//! SeaORM entities of the orchestrator's tables.

pub mod agent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: String,
        pub owner_id: String,
        pub vm_id: String,
        pub task: String,
        pub status: String,
        pub exit_code: Option<i32>,
        pub created_at_ms: i64,
        pub started_at_ms: Option<i64>,
        pub finished_at_ms: Option<i64>,
        pub token_hash: String,
        pub kill_requested_ms: Option<i64>,
        pub cost_usd: Option<f64>,
        pub num_turns: Option<i64>,
        pub duration_ms: Option<i64>,
        pub last_seen_ms: Option<i64>,
        pub strategy: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// Read with the agent in one query (`find_also_related`).
        #[sea_orm(has_one = "super::position::Entity")]
        Position,
    }

    impl Related<super::position::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Position.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod output {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_output")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub stream: i32,
        pub data: Vec<u8>,
        /// The line understood, parsed at ingest; NULL for lines stored before it was kept.
        pub event: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Each agent's `output_seq`, in a narrow table of its own: every stored group of output moves
/// it, and PostgreSQL writes a whole new row version at each update (an agents row is some
/// 300 bytes; this one some 60).
pub mod position {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_positions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        pub output_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::agent::Entity",
            from = "Column::AgentId",
            to = "super::agent::Column::Id"
        )]
        Agent,
    }

    impl Related<super::agent::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Agent.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tool uses waiting for (or decided by) an agent's owner, one row per `(agent, request)`.
pub mod permission {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_permissions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub team_id: String,
        pub owner_id: String,
        pub tool: String,
        pub tool_use_id: String,
        pub input_json: String,
        pub summary: String,
        /// `pending`, `allowed`, `denied` or `timed_out`.
        pub state: String,
        pub decided_by: Option<String>,
        pub message: String,
        pub created_at_ms: i64,
        pub expires_at_ms: i64,
        pub decided_at_ms: Option<i64>,
        pub project_dir: String,
        pub updated_input_json: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tools an agent's owner allowed for the rest of the agent's run ("always for this agent").
pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_tool_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tool: String,
        pub granted_by: String,
        pub granted_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
