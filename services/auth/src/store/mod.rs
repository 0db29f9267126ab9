//! The auth store: sessions, their refresh tokens (by hash) and one-time sign-in codes (by
//! hash); the trait the domain needs and its SeaORM implementation (PostgreSQL or SQLite).

mod entities;
pub mod migration;

use async_trait::async_trait;
use covibe_types::{SessionId, UserId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set, TransactionTrait,
};

use crate::model::{CodeKind, RefreshRecord, Session, SignInCode};
use entities::{refresh_token, session, sign_in_code};

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session with its first refresh token, all or nothing.
    async fn start_session(&self, session: &Session, first: &RefreshRecord) -> Result<(), DbErr>;
    async fn find_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, DbErr>;
    /// Marks `token_hash` used at `now_ms`, keeping the sealed `successor`, stores `next` and
    /// notes the session's use, all or nothing. `false` (nothing written) if the token was
    /// used already: a concurrent refresh won.
    async fn rotate(
        &self,
        token_hash: &str,
        now_ms: i64,
        successor: &str,
        next: &RefreshRecord,
    ) -> Result<bool, DbErr>;
    async fn find_session(&self, id: SessionId) -> Result<Option<Session>, DbErr>;
    /// The member's sessions that have not ended, newest first.
    async fn live_sessions(&self, user: UserId) -> Result<Vec<Session>, DbErr>;
    /// Ends the member's sessions (only `only`, when given) that have not ended yet, and every
    /// refresh token of theirs; returns the ids that ended.
    async fn end_sessions(
        &self,
        user: UserId,
        only: Option<SessionId>,
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<SessionId>, DbErr>;
    /// Sessions that ended at or after `since_ms`.
    async fn ended_since(&self, since_ms: i64) -> Result<Vec<SessionId>, DbErr>;
    async fn add_code(&self, code: &SignInCode) -> Result<(), DbErr>;
    /// Uses a code once: `None` if it is unknown, used, or expired at `now_ms`.
    async fn use_code(&self, code_hash: &str, now_ms: i64) -> Result<Option<SignInCode>, DbErr>;
}

/// `SessionStore` over SeaORM, on PostgreSQL or SQLite.
pub struct SeaSessionStore {
    db: DatabaseConnection,
}

impl SeaSessionStore {
    /// Wraps a connection, applying the service's migrations first.
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<migration::Migrator>(&db).await?;
        Ok(Self { db })
    }
}

use covibe_storage::parse_stored as parse;

fn refresh_of(m: refresh_token::Model) -> Result<RefreshRecord, DbErr> {
    Ok(RefreshRecord {
        session: parse(&m.family)?,
        user_id: parse(&m.user_id)?,
        team_id: parse(&m.team_id)?,
        token_hash: m.token_hash,
        expires_at_ms: m.expires_at_ms,
        used_at_ms: m.used.then_some(m.used_at_ms.unwrap_or(0)),
        revoked: m.revoked,
        successor: m.successor,
    })
}

fn refresh_row(r: &RefreshRecord) -> refresh_token::ActiveModel {
    refresh_token::ActiveModel {
        token_hash: Set(r.token_hash.clone()),
        family: Set(r.session.to_string()),
        user_id: Set(r.user_id.to_string()),
        team_id: Set(r.team_id.to_string()),
        expires_at_ms: Set(r.expires_at_ms),
        used: Set(r.used_at_ms.is_some()),
        revoked: Set(r.revoked),
        used_at_ms: Set(r.used_at_ms),
        successor: Set(r.successor.clone()),
    }
}

fn session_of(m: session::Model) -> Result<Session, DbErr> {
    Ok(Session {
        id: parse(&m.id)?,
        user_id: parse(&m.user_id)?,
        team_id: parse(&m.team_id)?,
        device_name: m.device_name,
        created_at_ms: m.created_at_ms,
        last_used_at_ms: m.last_used_at_ms,
        ended_at_ms: m.ended_at_ms,
    })
}

fn code_of(m: sign_in_code::Model) -> Result<SignInCode, DbErr> {
    Ok(SignInCode {
        kind: CodeKind::parse(&m.kind)
            .ok_or_else(|| DbErr::Custom(format!("bad code kind in database: {}", m.kind)))?,
        user_id: parse(&m.user_id)?,
        team_id: parse(&m.team_id)?,
        created_by: if m.created_by.is_empty() {
            None
        } else {
            Some(parse(&m.created_by)?)
        },
        code_hash: m.code_hash,
        created_at_ms: m.created_at_ms,
        expires_at_ms: m.expires_at_ms,
    })
}

#[async_trait]
impl SessionStore for SeaSessionStore {
    async fn start_session(&self, s: &Session, first: &RefreshRecord) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        session::ActiveModel {
            id: Set(s.id.to_string()),
            user_id: Set(s.user_id.to_string()),
            team_id: Set(s.team_id.to_string()),
            device_name: Set(s.device_name.clone()),
            created_at_ms: Set(s.created_at_ms),
            last_used_at_ms: Set(s.last_used_at_ms),
            ended_at_ms: Set(None),
            end_reason: Set(None),
        }
        .insert(&txn)
        .await?;
        refresh_row(first).insert(&txn).await?;
        txn.commit().await
    }

    async fn find_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, DbErr> {
        refresh_token::Entity::find_by_id(token_hash.to_owned())
            .one(&self.db)
            .await?
            .map(refresh_of)
            .transpose()
    }

    async fn rotate(
        &self,
        token_hash: &str,
        now_ms: i64,
        successor: &str,
        next: &RefreshRecord,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        // The guard in the WHERE clause lets exactly one of concurrent refreshes win; on
        // PostgreSQL the others wait for its commit, then find the token used.
        let used = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::Used, Expr::value(true))
            .col_expr(refresh_token::Column::UsedAtMs, Expr::value(now_ms))
            .col_expr(refresh_token::Column::Successor, Expr::value(successor))
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .filter(refresh_token::Column::Used.eq(false))
            .exec(&txn)
            .await?;
        if used.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        refresh_row(next).insert(&txn).await?;
        session::Entity::update_many()
            .col_expr(session::Column::LastUsedAtMs, Expr::value(now_ms))
            .filter(session::Column::Id.eq(next.session.to_string()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn find_session(&self, id: SessionId) -> Result<Option<Session>, DbErr> {
        session::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(session_of)
            .transpose()
    }

    async fn live_sessions(&self, user: UserId) -> Result<Vec<Session>, DbErr> {
        session::Entity::find()
            .filter(session::Column::UserId.eq(user.to_string()))
            .filter(session::Column::EndedAtMs.is_null())
            .order_by_desc(session::Column::CreatedAtMs)
            .order_by_desc(session::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(session_of)
            .collect()
    }

    async fn end_sessions(
        &self,
        user: UserId,
        only: Option<SessionId>,
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<SessionId>, DbErr> {
        let txn = self.db.begin().await?;
        let mut live = session::Entity::find()
            .filter(session::Column::UserId.eq(user.to_string()))
            .filter(session::Column::EndedAtMs.is_null());
        if let Some(id) = only {
            live = live.filter(session::Column::Id.eq(id.to_string()));
        }
        let ids: Vec<String> = live.all(&txn).await?.into_iter().map(|m| m.id).collect();
        if !ids.is_empty() {
            session::Entity::update_many()
                .col_expr(session::Column::EndedAtMs, Expr::value(now_ms))
                .col_expr(session::Column::EndReason, Expr::value(reason))
                .filter(session::Column::Id.is_in(ids.clone()))
                .filter(session::Column::EndedAtMs.is_null())
                .exec(&txn)
                .await?;
            refresh_token::Entity::update_many()
                .col_expr(refresh_token::Column::Revoked, Expr::value(true))
                .filter(refresh_token::Column::Family.is_in(ids.clone()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        ids.iter().map(|id| parse(id)).collect()
    }

    async fn ended_since(&self, since_ms: i64) -> Result<Vec<SessionId>, DbErr> {
        session::Entity::find()
            .filter(session::Column::EndedAtMs.gte(since_ms))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| parse(&m.id))
            .collect()
    }

    async fn add_code(&self, c: &SignInCode) -> Result<(), DbErr> {
        sign_in_code::ActiveModel {
            code_hash: Set(c.code_hash.clone()),
            kind: Set(c.kind.as_str().to_owned()),
            user_id: Set(c.user_id.to_string()),
            team_id: Set(c.team_id.to_string()),
            created_by: Set(c.created_by.map(|u| u.to_string()).unwrap_or_default()),
            created_at_ms: Set(c.created_at_ms),
            expires_at_ms: Set(c.expires_at_ms),
            used_at_ms: Set(None),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    async fn use_code(&self, code_hash: &str, now_ms: i64) -> Result<Option<SignInCode>, DbErr> {
        let used = sign_in_code::Entity::update_many()
            .col_expr(sign_in_code::Column::UsedAtMs, Expr::value(now_ms))
            .filter(sign_in_code::Column::CodeHash.eq(code_hash))
            .filter(sign_in_code::Column::UsedAtMs.is_null())
            .filter(sign_in_code::Column::ExpiresAtMs.gt(now_ms))
            .exec(&self.db)
            .await?;
        if used.rows_affected != 1 {
            return Ok(None);
        }
        sign_in_code::Entity::find_by_id(code_hash.to_owned())
            .one(&self.db)
            .await?
            .map(code_of)
            .transpose()
    }
}
