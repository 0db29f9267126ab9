//! The team store: the trait the domain needs, and its SeaORM implementation.

mod entities;
mod migration;

use async_trait::async_trait;
use covibe_types::{TeamId, UserId};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait, TryInsertResult,
};

pub use migration::Migrator;

use crate::model::{Before, ChatMessage, Invite, Member, PolicyRules, Role, Team, TeamPolicy};
use entities::{chat_message, invite, member, member_policy, team, team_policy};

#[async_trait]
pub trait TeamStore: Send + Sync + 'static {
    /// Stores a team, its first member and its first invite, all or nothing.
    async fn create_team(&self, team: &Team, owner: &Member, invite: &Invite) -> Result<(), DbErr>;
    async fn find_team(&self, id: TeamId) -> Result<Option<Team>, DbErr>;
    /// A present member (not one removed).
    async fn find_member(&self, id: UserId) -> Result<Option<Member>, DbErr>;
    /// A member, present or removed (`true`).
    async fn find_member_any(&self, id: UserId) -> Result<Option<(Member, bool)>, DbErr>;
    /// The present member of `team` with this email.
    async fn find_member_by_email(
        &self,
        team: TeamId,
        email: &str,
    ) -> Result<Option<Member>, DbErr>;
    /// The team's present members, in the order they joined.
    async fn members(&self, team: TeamId) -> Result<Vec<Member>, DbErr>;
    async fn add_invite(&self, invite: &Invite) -> Result<(), DbErr>;
    async fn find_invite(&self, code_hash: &str) -> Result<Option<Invite>, DbErr>;
    /// The team's invites, newest first.
    async fn invites(&self, team: TeamId) -> Result<Vec<Invite>, DbErr>;
    /// Revokes the team's invite `id`; `None` if the team has no such invite.
    async fn revoke_invite(&self, team: TeamId, id: &str) -> Result<Option<Invite>, DbErr>;
    /// Uses one use of the invite and adds `member`, atomically. `false` when the invite was
    /// used up, revoked or expired in the meantime, or the email joined meanwhile (nothing is
    /// written then).
    async fn redeem(
        &self,
        code_hash: &str,
        now_ms: i64,
        member: &Member,
        join_key_hash: Option<&str>,
    ) -> Result<bool, DbErr>;
    /// The present member of `team` with `email` who joined with the retry key hashed as
    /// `join_key_hash`.
    async fn joined_with_key(
        &self,
        team: TeamId,
        email: &str,
        join_key_hash: &str,
    ) -> Result<Option<Member>, DbErr>;
    /// Marks a present member of `team` removed.
    async fn remove_member(&self, team: TeamId, user: UserId, now_ms: i64) -> Result<(), DbErr>;
    /// Every member ever removed, of every team.
    async fn removed_members(&self) -> Result<Vec<UserId>, DbErr>;
    /// Sets a present member's role.
    async fn set_role(&self, team: TeamId, user: UserId, role: Role) -> Result<(), DbErr>;
    /// Makes `to` the owner and `from` (the owner now) an admin, atomically; `false` if `from`
    /// was no longer the owner or `to` no longer present.
    async fn transfer_ownership(
        &self,
        team: TeamId,
        from: UserId,
        to: UserId,
    ) -> Result<bool, DbErr>;
    /// Stores a message. When it has a client id its author already used in the team, nothing
    /// is stored and the message stored with it first is returned (so a retry, or two copies
    /// sent at once, make one message).
    async fn add_message(&self, message: &ChatMessage) -> Result<Option<ChatMessage>, DbErr>;
    /// The team's newest `limit` messages before `before` (all of them when `None`), NEWEST
    /// first, ordered by `(created_at_ms, id)`.
    async fn messages(
        &self,
        team: TeamId,
        before: Option<Before>,
        limit: u64,
    ) -> Result<Vec<ChatMessage>, DbErr>;
    /// The team's tool-use rules; `None` when never set.
    async fn team_policy(&self, team: TeamId) -> Result<Option<TeamPolicy>, DbErr>;
    /// Replaces the team's tool-use rules; with `read_at`, only if they are still those last
    /// changed at that time (0: never set). `false`: they changed meanwhile, nothing stored.
    async fn set_team_policy(
        &self,
        team: TeamId,
        policy: &TeamPolicy,
        read_at: Option<i64>,
    ) -> Result<bool, DbErr>;
    /// A member's own rules; `None` when never set.
    async fn member_policy(&self, team: TeamId, user: UserId)
    -> Result<Option<PolicyRules>, DbErr>;
    /// Replaces a member's own rules.
    async fn set_member_policy(
        &self,
        team: TeamId,
        user: UserId,
        rules: &PolicyRules,
        now_ms: i64,
    ) -> Result<(), DbErr>;
}

/// `TeamStore` over SeaORM, on PostgreSQL or SQLite.
pub struct SeaTeamStore {
    db: DatabaseConnection,
}

impl SeaTeamStore {
    /// Wraps a connection, applying the service's migrations first.
    pub async fn new(db: DatabaseConnection) -> Result<Self, covibe_storage::Error> {
        covibe_storage::migrate::<Migrator>(&db).await?;
        Ok(Self { db })
    }
}

use covibe_storage::parse_stored as parse;

fn team_of(m: team::Model) -> Result<Team, DbErr> {
    Ok(Team {
        id: parse(&m.id)?,
        name: m.name,
        created_at_ms: m.created_at_ms,
    })
}

fn member_of(m: member::Model) -> Result<Member, DbErr> {
    Ok(Member {
        id: parse(&m.id)?,
        team_id: parse(&m.team_id)?,
        email: m.email,
        display_name: m.display_name,
        created_at_ms: m.created_at_ms,
        role: Role::parse(&m.role)
            .ok_or_else(|| DbErr::Custom(format!("bad role in database: {}", m.role)))?,
    })
}

fn invite_of(m: invite::Model) -> Result<Invite, DbErr> {
    Ok(Invite {
        id: m.id,
        created_at_ms: m.created_at_ms,
        code_hash: m.code_hash,
        team_id: parse(&m.team_id)?,
        created_by: parse(&m.created_by)?,
        expires_at_ms: m.expires_at_ms,
        max_uses: u32::try_from(m.max_uses).unwrap_or(0),
        uses: u32::try_from(m.uses).unwrap_or(u32::MAX),
        revoked: m.revoked,
    })
}

fn message_of(m: chat_message::Model) -> Result<ChatMessage, DbErr> {
    Ok(ChatMessage {
        id: parse(&m.id)?,
        team_id: parse(&m.team_id)?,
        user_id: parse(&m.user_id)?,
        display_name: m.display_name,
        text: m.text,
        created_at_ms: m.created_at_ms,
        client_id: m.client_id,
    })
}

/// A list of rules as stored: joined by newlines, which no rule holds.
fn joined(rules: &[String]) -> String {
    rules.join("\n")
}

fn split(stored: &str) -> Vec<String> {
    if stored.is_empty() {
        return Vec::new();
    }
    stored.split('\n').map(str::to_owned).collect()
}

fn member_row(m: &Member) -> member::ActiveModel {
    member::ActiveModel {
        id: Set(m.id.to_string()),
        team_id: Set(m.team_id.to_string()),
        email: Set(m.email.clone()),
        display_name: Set(m.display_name.clone()),
        created_at_ms: Set(m.created_at_ms),
        role: Set(m.role.as_str().to_owned()),
        removed_at_ms: Set(None),
        join_key_hash: Set(None),
    }
}

fn invite_row(i: &Invite) -> invite::ActiveModel {
    invite::ActiveModel {
        code_hash: Set(i.code_hash.clone()),
        team_id: Set(i.team_id.to_string()),
        created_by: Set(i.created_by.to_string()),
        expires_at_ms: Set(i.expires_at_ms),
        max_uses: Set(i64::from(i.max_uses)),
        uses: Set(i64::from(i.uses)),
        revoked: Set(i.revoked),
        id: Set(i.id.clone()),
        created_at_ms: Set(i.created_at_ms),
    }
}

#[async_trait]
impl TeamStore for SeaTeamStore {
    async fn create_team(&self, t: &Team, owner: &Member, i: &Invite) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        team::ActiveModel {
            id: Set(t.id.to_string()),
            name: Set(t.name.clone()),
            created_at_ms: Set(t.created_at_ms),
        }
        .insert(&txn)
        .await?;
        member_row(owner).insert(&txn).await?;
        invite_row(i).insert(&txn).await?;
        txn.commit().await
    }

    async fn find_team(&self, id: TeamId) -> Result<Option<Team>, DbErr> {
        team::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(team_of)
            .transpose()
    }

    async fn find_member(&self, id: UserId) -> Result<Option<Member>, DbErr> {
        Ok(self
            .find_member_any(id)
            .await?
            .and_then(|(member, removed)| (!removed).then_some(member)))
    }

    async fn find_member_any(&self, id: UserId) -> Result<Option<(Member, bool)>, DbErr> {
        let Some(row) = member::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let removed = row.removed_at_ms.is_some();
        Ok(Some((member_of(row)?, removed)))
    }

    async fn find_member_by_email(
        &self,
        team: TeamId,
        email: &str,
    ) -> Result<Option<Member>, DbErr> {
        member::Entity::find()
            .filter(member::Column::TeamId.eq(team.to_string()))
            .filter(member::Column::Email.eq(email))
            .filter(member::Column::RemovedAtMs.is_null())
            .one(&self.db)
            .await?
            .map(member_of)
            .transpose()
    }

    async fn members(&self, team: TeamId) -> Result<Vec<Member>, DbErr> {
        member::Entity::find()
            .filter(member::Column::TeamId.eq(team.to_string()))
            .filter(member::Column::RemovedAtMs.is_null())
            .order_by_asc(member::Column::CreatedAtMs)
            // Members who joined in the same millisecond: ids are time-ordered (UUIDv7).
            .order_by_asc(member::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(member_of)
            .collect()
    }

    async fn add_invite(&self, i: &Invite) -> Result<(), DbErr> {
        invite_row(i).insert(&self.db).await.map(|_| ())
    }

    async fn find_invite(&self, code_hash: &str) -> Result<Option<Invite>, DbErr> {
        invite::Entity::find_by_id(code_hash.to_owned())
            .one(&self.db)
            .await?
            .map(invite_of)
            .transpose()
    }

    async fn invites(&self, team: TeamId) -> Result<Vec<Invite>, DbErr> {
        invite::Entity::find()
            .filter(invite::Column::TeamId.eq(team.to_string()))
            .order_by_desc(invite::Column::CreatedAtMs)
            .order_by_desc(invite::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(invite_of)
            .collect()
    }

    async fn revoke_invite(&self, team: TeamId, id: &str) -> Result<Option<Invite>, DbErr> {
        invite::Entity::update_many()
            .col_expr(invite::Column::Revoked, Expr::value(true))
            .filter(invite::Column::TeamId.eq(team.to_string()))
            .filter(invite::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        invite::Entity::find()
            .filter(invite::Column::TeamId.eq(team.to_string()))
            .filter(invite::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .map(invite_of)
            .transpose()
    }

    async fn remove_member(&self, team: TeamId, user: UserId, now_ms: i64) -> Result<(), DbErr> {
        member::Entity::update_many()
            .col_expr(member::Column::RemovedAtMs, Expr::value(now_ms))
            .filter(member::Column::TeamId.eq(team.to_string()))
            .filter(member::Column::Id.eq(user.to_string()))
            .filter(member::Column::RemovedAtMs.is_null())
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn removed_members(&self) -> Result<Vec<UserId>, DbErr> {
        member::Entity::find()
            .filter(member::Column::RemovedAtMs.is_not_null())
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| parse(&m.id))
            .collect()
    }

    async fn set_role(&self, team: TeamId, user: UserId, role: Role) -> Result<(), DbErr> {
        member::Entity::update_many()
            .col_expr(member::Column::Role, Expr::value(role.as_str()))
            .filter(member::Column::TeamId.eq(team.to_string()))
            .filter(member::Column::Id.eq(user.to_string()))
            .filter(member::Column::RemovedAtMs.is_null())
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    async fn transfer_ownership(
        &self,
        team: TeamId,
        from: UserId,
        to: UserId,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let step = |user: UserId, from_role: Option<Role>, role: Role| {
            let mut update = member::Entity::update_many()
                .col_expr(member::Column::Role, Expr::value(role.as_str()))
                .filter(member::Column::TeamId.eq(team.to_string()))
                .filter(member::Column::Id.eq(user.to_string()))
                .filter(member::Column::RemovedAtMs.is_null());
            if let Some(from_role) = from_role {
                update = update.filter(member::Column::Role.eq(from_role.as_str()));
            }
            update
        };
        let demoted = step(from, Some(Role::Owner), Role::Admin)
            .exec(&txn)
            .await?;
        let promoted = step(to, None, Role::Owner).exec(&txn).await?;
        if demoted.rows_affected != 1 || promoted.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.commit().await?;
        Ok(true)
    }

    async fn redeem(
        &self,
        code_hash: &str,
        now_ms: i64,
        m: &Member,
        join_key_hash: Option<&str>,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        // The guard in the WHERE clause makes concurrent redemptions of the last use safe.
        let used = invite::Entity::update_many()
            .col_expr(invite::Column::Uses, Expr::col(invite::Column::Uses).add(1))
            .filter(invite::Column::CodeHash.eq(code_hash))
            .filter(invite::Column::Revoked.eq(false))
            .filter(invite::Column::ExpiresAtMs.gt(now_ms))
            .filter(Expr::col(invite::Column::Uses).lt(Expr::col(invite::Column::MaxUses)))
            .exec(&txn)
            .await?;
        if used.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        let row = member::ActiveModel {
            join_key_hash: Set(join_key_hash.map(str::to_owned)),
            ..member_row(m)
        };
        if let Err(err) = row.insert(&txn).await {
            txn.rollback().await?;
            // The email joined meanwhile (the unique index on present members' emails).
            return match err.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Ok(false),
                _ => Err(err),
            };
        }
        txn.commit().await?;
        Ok(true)
    }

    async fn joined_with_key(
        &self,
        team: TeamId,
        email: &str,
        join_key_hash: &str,
    ) -> Result<Option<Member>, DbErr> {
        member::Entity::find()
            .filter(member::Column::TeamId.eq(team.to_string()))
            .filter(member::Column::Email.eq(email))
            .filter(member::Column::RemovedAtMs.is_null())
            .filter(member::Column::JoinKeyHash.eq(join_key_hash))
            .one(&self.db)
            .await?
            .map(member_of)
            .transpose()
    }

    async fn add_message(&self, m: &ChatMessage) -> Result<Option<ChatMessage>, DbErr> {
        let inserted = chat_message::ActiveModel {
            id: Set(m.id.to_string()),
            team_id: Set(m.team_id.to_string()),
            user_id: Set(m.user_id.to_string()),
            display_name: Set(m.display_name.clone()),
            text: Set(m.text.clone()),
            created_at_ms: Set(m.created_at_ms),
            client_id: Set(m.client_id.clone()),
        }
        .insert(&self.db)
        .await;
        let err = match inserted {
            Ok(_) => return Ok(None),
            Err(err) => err,
        };
        // A retry, or a copy that won the race: the unique index on the client id refused it,
        // and the message stored first is the answer.
        let (Some(client_id), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =
            (&m.client_id, err.sql_err())
        else {
            return Err(err);
        };
        let first = chat_message::Entity::find()
            .filter(chat_message::Column::TeamId.eq(m.team_id.to_string()))
            .filter(chat_message::Column::UserId.eq(m.user_id.to_string()))
            .filter(chat_message::Column::ClientId.eq(client_id.as_str()))
            .one(&self.db)
            .await?;
        match first {
            Some(first) => message_of(first).map(Some),
            None => Err(err),
        }
    }

    async fn messages(
        &self,
        team: TeamId,
        before: Option<Before>,
        limit: u64,
    ) -> Result<Vec<ChatMessage>, DbErr> {
        let mut query =
            chat_message::Entity::find().filter(chat_message::Column::TeamId.eq(team.to_string()));
        if let Some(before) = before {
            let mut older =
                Condition::any().add(chat_message::Column::CreatedAtMs.lt(before.at_ms));
            if let Some(id) = before.id {
                older = older.add(
                    Condition::all()
                        .add(chat_message::Column::CreatedAtMs.eq(before.at_ms))
                        .add(chat_message::Column::Id.lt(id.to_string())),
                );
            }
            query = query.filter(older);
        }
        query
            .order_by_desc(chat_message::Column::CreatedAtMs)
            .order_by_desc(chat_message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(message_of)
            .collect()
    }

    async fn team_policy(&self, team: TeamId) -> Result<Option<TeamPolicy>, DbErr> {
        let Some(row) = team_policy::Entity::find_by_id(team.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(TeamPolicy {
            rules: PolicyRules {
                allow: split(&row.allow_rules),
                deny: split(&row.deny_rules),
            },
            updated_at_ms: row.updated_at_ms,
            updated_by: Some(parse(&row.updated_by)?),
        }))
    }

    async fn set_team_policy(
        &self,
        team: TeamId,
        policy: &TeamPolicy,
        read_at: Option<i64>,
    ) -> Result<bool, DbErr> {
        let row = team_policy::ActiveModel {
            team_id: Set(team.to_string()),
            allow_rules: Set(joined(&policy.rules.allow)),
            deny_rules: Set(joined(&policy.rules.deny)),
            updated_at_ms: Set(policy.updated_at_ms),
            updated_by: Set(policy
                .updated_by
                .map(|user| user.to_string())
                .unwrap_or_default()),
        };
        match read_at {
            None => team_policy::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(team_policy::Column::TeamId)
                        .update_columns([
                            team_policy::Column::AllowRules,
                            team_policy::Column::DenyRules,
                            team_policy::Column::UpdatedAtMs,
                            team_policy::Column::UpdatedBy,
                        ])
                        .to_owned(),
                )
                .exec(&self.db)
                .await
                .map(|_| true),
            // Never set when read: the first save inserts, a later one finds the row.
            Some(0) => {
                let inserted = team_policy::Entity::insert(row)
                    .on_conflict_do_nothing_on([team_policy::Column::TeamId])
                    .exec_without_returning(&self.db)
                    .await?;
                Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
            }
            // One conditional update: of two saves from the same read, one wins.
            Some(read_at) => {
                let updated = team_policy::Entity::update_many()
                    .set(row)
                    .filter(team_policy::Column::TeamId.eq(team.to_string()))
                    .filter(team_policy::Column::UpdatedAtMs.eq(read_at))
                    .exec(&self.db)
                    .await?;
                Ok(updated.rows_affected == 1)
            }
        }
    }

    async fn member_policy(
        &self,
        team: TeamId,
        user: UserId,
    ) -> Result<Option<PolicyRules>, DbErr> {
        Ok(member_policy::Entity::find_by_id(user.to_string())
            .filter(member_policy::Column::TeamId.eq(team.to_string()))
            .one(&self.db)
            .await?
            .map(|row| PolicyRules {
                allow: split(&row.allow_rules),
                deny: split(&row.deny_rules),
            }))
    }

    async fn set_member_policy(
        &self,
        team: TeamId,
        user: UserId,
        rules: &PolicyRules,
        now_ms: i64,
    ) -> Result<(), DbErr> {
        let row = member_policy::ActiveModel {
            user_id: Set(user.to_string()),
            team_id: Set(team.to_string()),
            allow_rules: Set(joined(&rules.allow)),
            deny_rules: Set(joined(&rules.deny)),
            updated_at_ms: Set(now_ms),
        };
        member_policy::Entity::insert(row)
            .on_conflict(
                OnConflict::column(member_policy::Column::UserId)
                    .update_columns([
                        member_policy::Column::TeamId,
                        member_policy::Column::AllowRules,
                        member_policy::Column::DenyRules,
                        member_policy::Column::UpdatedAtMs,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
