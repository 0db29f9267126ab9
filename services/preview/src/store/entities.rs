//! SeaORM entities of the preview service's tables.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "previews")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub team_id: String,
    pub url: String,
    pub upstream: String,
    pub commit: String,
    pub status: String,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub mod config {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "preview_configs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: String,
        pub repository: String,
        pub branch: String,
        pub vm_id: String,
        pub work_dir: String,
        pub build_command: String,
        pub start_command: String,
        pub port: i32,
        pub health_path: String,
        pub public_url: String,
        pub updated_by: String,
        pub updated_at_ms: i64,
        /// The webhook secret, sealed (`covibe_identity::vault`).
        pub secret_sealed: Vec<u8>,
        pub secret_version: i32,
    }

    // Written by hand: the sealed secret stays out of every log line.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PreviewConfig")
                .field("team_id", &self.team_id)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "preview_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: String,
        pub vm_id: String,
        pub host: String,
        /// The job grant, sealed (`covibe_identity::vault`).
        pub sealed: Vec<u8>,
        pub key_version: i32,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PreviewGrant")
                .field("team_id", &self.team_id)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod deployment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "preview_deployments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: String,
        pub commit: String,
        pub trigger: String,
        pub requested_by: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_ms: i64,
        /// A running deploy whose lease passed was abandoned (its process died): it is run again.
        pub lease_until_ms: i64,
        pub created_at_ms: i64,
        pub started_at_ms: i64,
        pub finished_at_ms: i64,
        pub log_tail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "preview_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        pub team_id: String,
        pub commit: String,
        pub received_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
