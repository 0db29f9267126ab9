//! The rules: who may join which team, and how invite codes work. Codes are 80 random bits from
//! the OS, shown as `XXXX-XXXX-XXXX-XXXX` (Crockford base32) and stored only as a SHA-256 hash;
//! an unknown, expired, revoked or used-up code all get the same answer.

use std::sync::Arc;

use covibe_types::{ApiError, TeamId, UserId, now_ms};
use rand::RngCore;
use sha2::Digest;

use crate::Error;
use crate::store::TeamStore;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: UserId,
    pub team_id: TeamId,
    pub email: String,
    pub display_name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub code_hash: String,
    pub team_id: TeamId,
    pub created_by: UserId,
    pub expires_at_ms: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

impl Invite {
    pub fn usable(&self, now: i64) -> bool {
        !self.revoked && now < self.expires_at_ms && self.uses < self.max_uses
    }
}

/// Invite codes compare without dashes, spaces or case, and with Crockford's look-alikes folded.
pub fn normalize_invite_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

fn hash_code(code: &str) -> String {
    let digest = sha2::Sha256::digest(normalize_invite_code(code).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_invite_code() -> String {
    let mut bytes = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // 80 bits -> 16 base32 digits.
    let mut value = u128::from_be_bytes({
        let mut wide = [0u8; 16];
        wide[6..].copy_from_slice(&bytes);
        wide
    });
    let mut digits = [0u8; 16];
    for d in digits.iter_mut().rev() {
        *d = CROCKFORD[(value & 31) as usize];
        value >>= 5;
    }
    let s: Vec<String> = digits
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    s.join("-")
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
        }
    }

    fn invite(
        &self,
        team_id: TeamId,
        created_by: UserId,
        ttl_ms: i64,
        max_uses: u32,
    ) -> (String, Invite) {
        let code = new_invite_code();
        let invite = Invite {
            code_hash: hash_code(&code),
            team_id,
            created_by,
            expires_at_ms: now_ms().saturating_add(ttl_ms),
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
        };
        let (code, invite) =
            self.invite(team.id, member.id, self.policy.ttl_ms, self.policy.max_uses);
        self.store.create_team(&team, &member, &invite).await?;
        tracing::info!(team_id = %team.id, user_id = %member.id, "team created");
        Ok((team, member, code))
    }

    /// Joins the invite's team as `email`, or signs that member in again.
    pub async fn redeem(
        &self,
        code: &str,
        email: &str,
        display_name: &str,
    ) -> Result<(Team, Member), Error> {
        let refused = || {
            ApiError::new(
                covibe_types::Code::Unauthenticated,
                "invalid or expired invite code",
            )
        };
        let email = clean_email(email)?;
        let display_name = clean_name("display name", display_name)?;
        if normalize_invite_code(code).len() != 16 {
            return Err(refused().into());
        }
        let now = now_ms();
        let invite = self
            .store
            .find_invite(&hash_code(code))
            .await?
            .ok_or_else(refused)?;
        // A member who already belongs signs in again without using up the code, but the code
        // must still be valid: a stale code is no way back in.
        if !invite.usable(now) {
            return Err(refused().into());
        }
        let team = self
            .store
            .find_team(invite.team_id)
            .await?
            .ok_or_else(refused)?;
        if let Some(member) = self.store.find_member_by_email(team.id, &email).await? {
            return Ok((team, member));
        }
        let member = Member {
            id: UserId::new(),
            team_id: team.id,
            email,
            display_name,
            created_at_ms: now,
        };
        if !self.store.redeem(&invite.code_hash, now, &member).await? {
            return Err(refused().into());
        }
        tracing::info!(team_id = %team.id, user_id = %member.id, "member joined");
        Ok((team, member))
    }

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

    /// A new invite code for the caller's team.
    pub async fn create_invite(
        &self,
        user: UserId,
        team: TeamId,
        max_uses: u32,
        ttl_secs: u32,
    ) -> Result<(String, Invite), Error> {
        let (_, member) = self.member(user).await?;
        if member.team_id != team {
            return Err(ApiError::forbidden("not a member of this team").into());
        }
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
        Ok((code, invite))
    }

    pub async fn team_with_members(
        &self,
        user: UserId,
        team: TeamId,
    ) -> Result<(Team, Vec<Member>), Error> {
        let (found, member) = self.member(user).await?;
        if member.team_id != team {
            return Err(ApiError::forbidden("not a member of this team").into());
        }
        let members = self.store.members(team).await?;
        Ok((found, members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_normalize() {
        let a = new_invite_code();
        let b = new_invite_code();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert_eq!(
            normalize_invite_code(&a.to_lowercase().replace('-', " ")),
            normalize_invite_code(&a)
        );
        assert_eq!(hash_code(&a), hash_code(&a.to_lowercase()));
    }
}
