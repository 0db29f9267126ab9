//! SeaORM entities of the auth service's tables. Ids are stored as text on both backends.

pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// The session (one rotating chain of tokens per signed-in device).
        pub family: String,
        pub user_id: String,
        pub team_id: String,
        pub expires_at_ms: i64,
        pub used: bool,
        pub revoked: bool,
        pub used_at_ms: Option<i64>,
        /// The token that replaced this one, encrypted with this one (hex).
        pub successor: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub team_id: String,
        pub device_name: String,
        pub created_at_ms: i64,
        pub last_used_at_ms: i64,
        pub ended_at_ms: Option<i64>,
        pub end_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sign_in_code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sign_in_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        /// `device` or `recovery`.
        pub kind: String,
        pub user_id: String,
        pub team_id: String,
        /// Who made it; empty when an operator did (`covibe admin recovery-code`).
        pub created_by: String,
        pub created_at_ms: i64,
        pub expires_at_ms: i64,
        pub used_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
