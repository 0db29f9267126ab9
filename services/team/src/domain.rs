//! The rules: who may join which team, who may manage it, and how invite codes work. Codes are
//! `covibe_identity::code`s (80 random bits, stored only as a hash); an unknown, expired,
//! revoked or used-up code, and a code used with a member's email, all get the same answer.

use std::sync::Arc;

use covibe_types::{ApiError, TeamId, UserId, now_ms};

use crate::Error;
use crate::model::{Invite, Member, Role, Team};
use crate::store::TeamStore;

/// Invite codes compare without dashes, spaces or case, and with Crockford's look-alikes folded.
pub fn normalize_invite_code(code: &str) -> String {
    covibe_identity::code::normalize(code)
}

fn hash_code(code: &str) -> String {
    covibe_identity::code::hash_code(code)
}

fn new_invite_code() -> String {
    covibe_identity::code::new_code()
}

fn clean_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("email must be a valid address"))
    }
}

fn clean_name(what: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to 64 printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// Settings of the domain.
#[derive(Debug, Clone, Copy)]
pub struct InvitePolicy {
    pub ttl_ms: i64,
    pub max_uses: u32,
}

pub struct TeamDomain {
    store: Arc<dyn TeamStore>,
    policy: InvitePolicy,
    /// Invite redemptions per team: a leaked code cannot fill a team in a burst.
    joins: JoinLimiter,
    sessions: Option<covibe_identity::revocation::Ender>,
}

/// Redemptions one team takes per minute by default, and at once after a quiet spell.
pub const JOINS_PER_MINUTE: u32 = 20;

/// A token bucket per team, in this process.
struct JoinLimiter {
    per_minute: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<TeamId, (f64, i64)>>,
}

impl JoinLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Takes one redemption of `team`'s budget, or says how many seconds until there is one.
    fn take(&self, team: TeamId, now: i64) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now - *at < 60_000);
        }
        let (tokens, at) = buckets.entry(team).or_insert((self.per_minute, now));
        #[allow(clippy::cast_precision_loss)]
        let elapsed_min = (now - *at).max(0) as f64 / 60_000.0;
        *tokens = (*tokens + elapsed_min * self.per_minute).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait = ((1.0 - *tokens) / self.per_minute * 60.0).ceil() as u64;
        Err(wait.max(1))
    }
}

/// The answer to every unusable invite code, and to a code used with a member's email: the
/// caller learns nothing about which it was.
/// How long after joining a retry with the same join key still signs the member in.
pub const JOIN_RETRY_MS: i64 = 15 * 60 * 1000;

/// A join key as clients make them: 16 to 128 letters, digits, `-` or `_`.
fn well_formed_join_key(key: &str) -> bool {
    (16..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn refused() -> ApiError {
    ApiError::new(
        covibe_types::Code::Unauthenticated,
        "invalid or expired invite code",
    )
}

fn denied(what: &str) -> Error {
    ApiError::forbidden(format!("only the team's {what} may do this")).into()
}

impl TeamDomain {
    pub fn new(store: Arc<dyn TeamStore>, invite_ttl_secs: u64, invite_max_uses: u32) -> Self {
        let ttl_ms = i64::try_from(invite_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            store,
            policy: InvitePolicy {
                ttl_ms,
                max_uses: invite_max_uses.max(1),
            },
            joins: JoinLimiter::new(JOINS_PER_MINUTE),
            sessions: None,
        }
    }

    /// At most `per_minute` new members per team through invites (default [`JOINS_PER_MINUTE`]).
    pub fn with_join_limit(mut self, per_minute: u32) -> Self {
        self.joins = JoinLimiter::new(per_minute);
        self
    }

    /// Removing a member ends their sessions everywhere through `ender`.
    pub fn with_session_ender(mut self, ender: covibe_identity::revocation::Ender) -> Self {
        self.sessions = Some(ender);
        self
    }

    fn invite(
        &self,
        team_id: TeamId,
        created_by: UserId,
        ttl_ms: i64,
        max_uses: u32,
    ) -> (String, Invite) {
        let code = new_invite_code();
        let now = now_ms();
        let invite = Invite {
            id: uuid::Uuid::now_v7().simple().to_string(),
            created_at_ms: now,
            code_hash: hash_code(&code),
            team_id,
            created_by,
            expires_at_ms: now.saturating_add(ttl_ms),
            max_uses,
            uses: 0,
            revoked: false,
        };
        (code, invite)
    }

    /// A new team with `email` as its first member, and a first invite code.
    pub async fn create_team(
        &self,
        name: &str,
        email: &str,
        display_name: &str,
    ) -> Result<(Team, Member, String), Error> {
        let name = clean_name("team name", name)?;
        let email = clean_email(email)?;
        let display_name = clean_name("display name", display_name)?;
        let now = now_ms();
        let team = Team {
            id: TeamId::new(),
            name,
            created_at_ms: now,
        };
        let member = Member {
            id: UserId::new(),
            team_id: team.id,
            email,
            display_name,
            created_at_ms: now,
            role: Role::Owner,
        };
        let (code, invite) =
            self.invite(team.id, member.id, self.policy.ttl_ms, self.policy.max_uses);
        self.store.create_team(&team, &member, &invite).await?;
        tracing::info!(team_id = %team.id, user_id = %member.id, "team created");
        Ok((team, member, code))
    }

    /// Joins the invite's team as a new member named `email`. An email that already belongs to
    /// a member of the team gets the answer of an unusable code: an invite never signs anybody
    /// in, and nobody learns who is a member.
    pub async fn redeem(
        &self,
        code: &str,
        email: &str,
        display_name: &str,
    ) -> Result<(Team, Member), Error> {
        self.redeem_retryable(code, email, display_name, "").await
    }

    /// [`Self::redeem`], safe to retry with the same `join_key` (a random key of the joining
    /// client's; empty for none): when a first try made the member but its answer was lost, a
    /// retry within [`JOIN_RETRY_MS`] gets that member again, even if the invite was used up
    /// by it. Only the same invite code, email and key do: nobody else learns or gets anything.
    pub async fn redeem_retryable(
        &self,
        code: &str,
        email: &str,
        display_name: &str,
        join_key: &str,
    ) -> Result<(Team, Member), Error> {
        let email = clean_email(email)?;
        let display_name = clean_name("display name", display_name)?;
        if !covibe_identity::code::well_formed(code) {
            return Err(refused().into());
        }
        let join_key_hash = match join_key {
            "" => None,
            key if well_formed_join_key(key) => Some(covibe_identity::code::hash_token(key)),
            _ => {
                return Err(ApiError::invalid(
                    "joinKey must be 16 to 128 letters, digits, `-` or `_`",
                )
                .into());
            }
        };
        let now = now_ms();
        let invite = self
            .store
            .find_invite(&hash_code(code))
            .await?
            .ok_or_else(refused)?;
        if let Some(key_hash) = &join_key_hash
            && let Some(member) = self
                .store
                .joined_with_key(invite.team_id, &email, key_hash)
                .await?
            && now.saturating_sub(member.created_at_ms) <= JOIN_RETRY_MS
        {
            let team = self
                .store
                .find_team(invite.team_id)
                .await?
                .ok_or_else(refused)?;
            tracing::info!(team_id = %team.id, user_id = %member.id, "join retried: the member made by its first try");
            return Ok((team, member));
        }
        if !invite.usable(now) {
            return Err(refused().into());
        }
        if let Err(wait) = self.joins.take(invite.team_id, now) {
            tracing::warn!(team_id = %invite.team_id, "invite redemptions rate limited");
            return Err(ApiError::rate_limited(
                format!("too many sign-ups for this team, try again in {wait} s"),
                wait,
            )
            .into());
        }
        let team = self
            .store
            .find_team(invite.team_id)
            .await?
            .ok_or_else(refused)?;
        if self
            .store
            .find_member_by_email(team.id, &email)
            .await?
            .is_some()
        {
            tracing::warn!(team_id = %team.id, "invite redeemed with a member's email: refused");
            return Err(refused().into());
        }
        let member = Member {
            id: UserId::new(),
            team_id: team.id,
            email,
            display_name,
            created_at_ms: now,
            role: Role::Member,
        };
        // Refused too when the email joined meanwhile (the unique index).
        if !self
            .store
            .redeem(&invite.code_hash, now, &member, join_key_hash.as_deref())
            .await?
        {
            return Err(refused().into());
        }
        tracing::info!(team_id = %team.id, user_id = %member.id, "member joined");
        Ok((team, member))
    }

    /// The caller, who must be a present member of `team`.
    async fn caller(&self, user: UserId, team: TeamId) -> Result<Member, Error> {
        let member = self
            .store
            .find_member(user)
            .await?
            .filter(|m| m.team_id == team)
            .ok_or_else(|| ApiError::forbidden("not a member of this team"))?;
        Ok(member)
    }

    /// The caller, who must be an owner or admin of `team`.
    async fn manager(&self, user: UserId, team: TeamId) -> Result<Member, Error> {
        let caller = self.caller(user, team).await?;
        if !caller.role.manages() {
            return Err(denied("owners and admins"));
        }
        Ok(caller)
    }

    /// Another present member of the caller's team (`not_found` otherwise, whoever it is).
    async fn other(&self, caller: &Member, user: UserId) -> Result<Member, Error> {
        let member = self
            .store
            .find_member(user)
            .await?
            .filter(|m| m.team_id == caller.team_id)
            .ok_or_else(|| ApiError::not_found("no such member in your team"))?;
        if member.id == caller.id {
            return Err(ApiError::invalid("you cannot do this to yourself").into());
        }
        Ok(member)
    }

    /// A new invite code for the caller's team (owners and admins).
    pub async fn create_invite(
        &self,
        user: UserId,
        team: TeamId,
        max_uses: u32,
        ttl_secs: u32,
    ) -> Result<(String, Invite), Error> {
        self.manager(user, team).await?;
        let max_uses = if max_uses == 0 {
            self.policy.max_uses
        } else {
            max_uses.min(1000)
        };
        let ttl_ms = if ttl_secs == 0 {
            self.policy.ttl_ms
        } else {
            i64::from(ttl_secs.min(30 * 24 * 3600)) * 1000
        };
        let (code, invite) = self.invite(team, user, ttl_ms, max_uses);
        self.store.add_invite(&invite).await?;
        tracing::info!(team_id = %team, user_id = %user, invite_id = %invite.id, "invite created");
        Ok((code, invite))
    }

    /// The team's invites, newest first (owners and admins).
    pub async fn invites(&self, user: UserId, team: TeamId) -> Result<Vec<Invite>, Error> {
        self.manager(user, team).await?;
        Ok(self.store.invites(team).await?)
    }

    /// Revokes one of the team's invites (owners and admins).
    pub async fn revoke_invite(
        &self,
        user: UserId,
        team: TeamId,
        invite_id: &str,
    ) -> Result<Invite, Error> {
        self.manager(user, team).await?;
        let invite = self
            .store
            .revoke_invite(team, invite_id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such invite in your team"))?;
        tracing::info!(team_id = %team, user_id = %user, invite_id, "invite revoked");
        Ok(invite)
    }

    /// The present member `user`, with their team.
    pub async fn member(&self, user: UserId) -> Result<(Team, Member), Error> {
        let gone = || ApiError::not_found("no such member");
        let member = self.store.find_member(user).await?.ok_or_else(gone)?;
        let team = self
            .store
            .find_team(member.team_id)
            .await?
            .ok_or_else(gone)?;
        Ok((team, member))
    }

    /// The team and its members. Only owners and admins see the others' emails.
    pub async fn team_with_members(
        &self,
        user: UserId,
        team: TeamId,
    ) -> Result<(Team, Vec<Member>), Error> {
        let caller = self.caller(user, team).await?;
        let found = self
            .store
            .find_team(team)
            .await?
            .ok_or_else(|| ApiError::not_found("no such team"))?;
        let mut members = self.store.members(team).await?;
        if !caller.role.manages() {
            for member in members.iter_mut().filter(|m| m.id != caller.id) {
                member.email.clear();
            }
        }
        Ok((found, members))
    }

    /// Removes a member: owners remove admins and members, admins only members, nobody the
    /// owner. Every session of theirs ends at once, everywhere. Removing a member already
    /// removed ends their sessions again and succeeds (a retry after a failure).
    pub async fn remove_member(
        &self,
        user: UserId,
        team: TeamId,
        target: UserId,
    ) -> Result<(), Error> {
        let caller = self.manager(user, team).await?;
        if target == caller.id {
            return Err(ApiError::invalid("you cannot remove yourself").into());
        }
        match self.store.find_member_any(target).await? {
            Some((member, removed)) if member.team_id == team => {
                if !removed {
                    if member.role >= caller.role {
                        return Err(denied(if member.role == Role::Owner {
                            "nobody: the owner hands the team over first"
                        } else {
                            "owner"
                        }));
                    }
                    self.store.remove_member(team, target, now_ms()).await?;
                    tracing::info!(team_id = %team, user_id = %user, removed = %target, "member removed");
                }
            }
            _ => return Err(ApiError::not_found("no such member in your team").into()),
        }
        self.end_sessions_of(vec![target]).await
    }

    async fn end_sessions_of(&self, users: Vec<UserId>) -> Result<(), Error> {
        let Some(ender) = &self.sessions else {
            return Ok(());
        };
        let ended = covibe_identity::Ended {
            sessions: Vec::new(),
            users,
            reason: "member_removed".to_owned(),
        };
        ender.end(ended).await.map_err(|err| {
            tracing::error!(error = %err, "could not end a removed member's sessions");
            ApiError::unavailable(
                "the member is removed, but their sessions could not be ended yet: try again",
            )
            .into()
        })
    }

    /// Records again every removed member as revoked (after a hot-store restart lost them).
    pub async fn reassert_removed(&self) -> Result<usize, Error> {
        let Some(ender) = &self.sessions else {
            return Ok(0);
        };
        let users = self.store.removed_members().await?;
        let count = users.len();
        let ended = covibe_identity::Ended {
            sessions: Vec::new(),
            users,
            reason: "member_removed".to_owned(),
        };
        ender.reassert(&ended).await.map_err(ApiError::internal)?;
        Ok(count)
    }

    /// The owner makes a member an admin, or an admin a member.
    pub async fn set_role(
        &self,
        user: UserId,
        team: TeamId,
        target: UserId,
        role: Role,
    ) -> Result<Member, Error> {
        let caller = self.caller(user, team).await?;
        if caller.role != Role::Owner {
            return Err(denied("owner"));
        }
        if role == Role::Owner {
            return Err(ApiError::invalid(
                "ownership moves with a transfer (POST /api/team/transfer-ownership)",
            )
            .into());
        }
        let mut member = self.other(&caller, target).await?;
        self.store.set_role(team, target, role).await?;
        member.role = role;
        tracing::info!(team_id = %team, user_id = %user, member = %target, role = role.as_str(), "role changed");
        Ok(member)
    }

    /// The owner hands the team over to another member and becomes an admin.
    pub async fn transfer_ownership(
        &self,
        user: UserId,
        team: TeamId,
        target: UserId,
    ) -> Result<(Team, Vec<Member>), Error> {
        let caller = self.caller(user, team).await?;
        if caller.role != Role::Owner {
            return Err(denied("owner"));
        }
        self.other(&caller, target).await?;
        if !self.store.transfer_ownership(team, user, target).await? {
            return Err(ApiError::new(
                covibe_types::Code::Conflict,
                "the team changed meanwhile: try again",
            )
            .into());
        }
        tracing::info!(team_id = %team, from = %user, to = %target, "ownership transferred");
        self.team_with_members(user, team).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_takes_its_burst_then_waits() {
        let limiter = JoinLimiter::new(3);
        let (team, other) = (TeamId::new(), TeamId::new());
        let now = 1_000_000;
        for _ in 0..3 {
            assert!(limiter.take(team, now).is_ok());
        }
        let wait = limiter.take(team, now).unwrap_err();
        assert_eq!(wait, 20, "a third of a minute for the next one");
        assert!(limiter.take(other, now).is_ok(), "teams are limited apart");
        assert!(limiter.take(team, now + 20_000).is_ok());
    }
}
