//! Sessions and their tokens. A session is one signed-in device: a rotating chain of refresh
//! tokens (256 random bits each, stored as hashes) and the short-lived access tokens issued
//! with them, each naming the session. Using a refresh token marks it used and issues the
//! next; the same token presented again within `REFRESH_GRACE` (a phone retrying on a flaky
//! network) gets the same pair; after it, the replay means the chain was stolen, so the
//! session ends. An ended session is refused everywhere at once (`covibe_identity::revocation`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use covibe_identity::code::{hash_token, random_bytes};
use covibe_identity::revocation::Ender;
use covibe_identity::{Ended, Signer};
use covibe_types::{ApiError, SessionId, TeamId, UserId, now_ms};
use sha2::Digest;

use crate::Error;
use crate::model::{CodeKind, IssuedTokens, RefreshRecord, Session, SignInCode};
use crate::store::SessionStore;

/// How long after a refresh the same refresh token still gets the same new pair.
pub const REFRESH_GRACE: Duration = Duration::from_secs(10);
/// How long a device code may wait for the new device.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a recovery code may wait for its member.
pub const RECOVERY_CODE_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct Sessions {
    signer: Signer,
    store: Arc<dyn SessionStore>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    refresh_grace: Duration,
    ender: Option<Ender>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn refused() -> ApiError {
    ApiError::unauthenticated("invalid or expired refresh token")
}

const TOKEN_PREFIX: &str = "rt_";

fn encode_token(bytes: &[u8; 32]) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// 32 bytes only the holder of `token` can derive, for `purpose`.
fn derived(purpose: &str, token: &str) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

/// The successor token sealed with the one it replaces (a one-time pad from its hash).
fn seal(token: &str, successor: &[u8; 32]) -> String {
    let pad = derived("covibe refresh successor", token);
    successor
        .iter()
        .zip(pad)
        .map(|(a, b)| format!("{:02x}", a ^ b))
        .collect()
}

fn open(token: &str, sealed: &str) -> Option<[u8; 32]> {
    let pad = derived("covibe refresh successor", token);
    let mut out = [0u8; 32];
    if sealed.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = sealed.get(i * 2..i * 2 + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()? ^ pad[i];
    }
    Some(out)
}

/// The access token issued with a refresh: its id comes from the refresh token, so a retry
/// within the grace signs exactly the same token.
fn jti(token: &str) -> String {
    derived("covibe access jti", token)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A device name as shown in the sessions list: trimmed, printable, at most 64 characters.
pub fn clean_device_name(name: &str, fallback: &str) -> String {
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if name.is_empty() {
        fallback.to_owned()
    } else {
        name
    }
}

impl Sessions {
    pub fn new(
        signer: Signer,
        store: Arc<dyn SessionStore>,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            signer,
            store,
            access_ttl,
            refresh_ttl,
            refresh_grace: REFRESH_GRACE,
            ender: None,
        }
    }

    /// Another grace for retried refreshes than [`REFRESH_GRACE`] (tests).
    pub fn with_refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// Ended sessions are announced to every process through `ender`.
    pub fn with_ender(mut self, ender: Ender) -> Self {
        self.ender = Some(ender);
        self
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A short-lived token this service uses to call the team service.
    pub fn service_token(&self) -> Result<String, Error> {
        Ok(self.signer.service_token("auth", Duration::from_secs(60))?)
    }

    /// Starts a session on a device for a member who just signed in.
    pub async fn start(
        &self,
        user: UserId,
        team: TeamId,
        device_name: &str,
    ) -> Result<IssuedTokens, Error> {
        let now = now_ms();
        let session = Session {
            id: SessionId::new(),
            user_id: user,
            team_id: team,
            device_name: clean_device_name(device_name, "a device"),
            created_at_ms: now,
            last_used_at_ms: now,
            ended_at_ms: None,
        };
        let refresh_bytes = random_bytes::<32>();
        let refresh_token = encode_token(&refresh_bytes);
        let first = self.record(&session.id, user, team, &refresh_token, now);
        self.store.start_session(&session, &first).await?;
        let (access_token, exp) =
            self.signer
                .access_token(user, team, session.id, self.access_ttl)?;
        tracing::info!(user_id = %user, session_id = %session.id, "session started");
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            access_expires_at_ms: exp_ms(exp),
            session_id: session.id,
        })
    }

    fn record(
        &self,
        session: &SessionId,
        user: UserId,
        team: TeamId,
        token: &str,
        now: i64,
    ) -> RefreshRecord {
        RefreshRecord {
            token_hash: hash_token(token),
            session: *session,
            user_id: user,
            team_id: team,
            expires_at_ms: now.saturating_add(ms(self.refresh_ttl)),
            used_at_ms: None,
            revoked: false,
            successor: None,
        }
    }

    /// The pair a refresh of `token` at `used_at_ms` issues: the same every time.
    fn pair(
        &self,
        record: &RefreshRecord,
        token: &str,
        successor: &[u8; 32],
        used_at_ms: i64,
    ) -> Result<IssuedTokens, Error> {
        let issued_at = u64::try_from(used_at_ms / 1000).unwrap_or(0);
        let (access_token, exp) = self.signer.access_token_at(
            record.user_id,
            record.team_id,
            record.session,
            issued_at,
            self.access_ttl,
            jti(token),
        )?;
        Ok(IssuedTokens {
            access_token,
            refresh_token: encode_token(successor),
            access_expires_at_ms: exp_ms(exp),
            session_id: record.session,
        })
    }

    /// Rotates a refresh token. `still_member` is asked before new tokens are issued.
    pub async fn refresh<F, Fut>(&self, token: &str, still_member: F) -> Result<IssuedTokens, Error>
    where
        F: FnOnce(UserId) -> Fut,
        Fut: std::future::Future<Output = Result<bool, Error>>,
    {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 64 {
            return Err(refused().into());
        }
        let hash = hash_token(token);
        let mut record = self.store.find_refresh(&hash).await?.ok_or_else(refused)?;
        let now = now_ms();
        if record.revoked || record.expires_at_ms <= now {
            return Err(refused().into());
        }
        if record.used_at_ms.is_none() {
            if !still_member(record.user_id).await? {
                self.end(record.user_id, Some(record.session), "member_removed")
                    .await?;
                return Err(refused().into());
            }
            let successor = random_bytes::<32>();
            let next = self.record(
                &record.session,
                record.user_id,
                record.team_id,
                &encode_token(&successor),
                now,
            );
            if self
                .store
                .rotate(&hash, now, &seal(token, &successor), &next)
                .await?
            {
                return self.pair(&record, token, &successor, now);
            }
            // A concurrent refresh of the same token won: answer as its retry.
            record = self.store.find_refresh(&hash).await?.ok_or_else(refused)?;
        }
        let retry = record.used_at_ms.and_then(|used_at| {
            let within = now.saturating_sub(used_at) <= ms(self.refresh_grace);
            let successor = record.successor.as_deref().and_then(|s| open(token, s))?;
            within.then_some((used_at, successor))
        });
        if let Some((used_at, successor)) = retry
            && !record.revoked
        {
            // Only while the pair handed out has not been used itself.
            let next = self
                .store
                .find_refresh(&hash_token(&encode_token(&successor)))
                .await?;
            if next.is_some_and(|n| n.used_at_ms.is_none() && !n.revoked) {
                return self.pair(&record, token, &successor, used_at);
            }
        }
        // A replay of a rotated token: whoever holds this chain may be an attacker.
        tracing::warn!(user_id = %record.user_id, session_id = %record.session, "refresh token reuse detected, session ended");
        self.end(record.user_id, Some(record.session), "refresh_reuse")
            .await?;
        Err(refused().into())
    }

    /// The session, if it has not ended.
    pub async fn live_session(&self, id: SessionId) -> Result<Option<Session>, Error> {
        Ok(self
            .store
            .find_session(id)
            .await?
            .filter(|s| s.ended_at_ms.is_none()))
    }

    /// The member's live sessions, newest first.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<Session>, Error> {
        Ok(self.store.live_sessions(user).await?)
    }

    /// Ends the member's sessions (only `only`, when given), everywhere: their refresh tokens
    /// stop working, their access tokens are refused and their sockets closed. Returns how many
    /// ended.
    pub async fn end(
        &self,
        user: UserId,
        only: Option<SessionId>,
        reason: &str,
    ) -> Result<usize, Error> {
        let ended = self
            .store
            .end_sessions(user, only, reason, now_ms())
            .await?;
        // Announced even when the database had them ended already: a retry after a failed
        // announcement must still reach every process.
        let sessions = match (ended.is_empty(), only) {
            (true, Some(id)) => vec![id],
            _ => ended.clone(),
        };
        if let Some(ender) = &self.ender
            && !sessions.is_empty()
        {
            ender
                .end(Ended {
                    sessions,
                    users: Vec::new(),
                    reason: reason.to_owned(),
                })
                .await
                .map_err(|err| {
                    tracing::error!(error = %err, "could not announce ended sessions");
                    ApiError::unavailable(
                        "the session could not be ended everywhere yet: try again",
                    )
                })?;
        }
        Ok(ended.len())
    }

    /// Records again the sessions that ended within an access token's lifetime (after a
    /// hot-store restart lost them).
    pub async fn reassert_ended(&self) -> Result<usize, Error> {
        let Some(ender) = &self.ender else {
            return Ok(0);
        };
        let since = now_ms().saturating_sub(ms(self.access_ttl) + 60_000);
        let sessions = self.store.ended_since(since).await?;
        let count = sessions.len();
        ender
            .reassert(&Ended {
                sessions,
                users: Vec::new(),
                reason: "revoked".to_owned(),
            })
            .await
            .map_err(ApiError::internal)?;
        Ok(count)
    }

    /// A one-time sign-in code for `user`: the code (shown once) and when it expires.
    pub async fn create_code(
        &self,
        kind: CodeKind,
        user: UserId,
        team: TeamId,
        created_by: Option<UserId>,
    ) -> Result<(String, i64), Error> {
        create_code(&*self.store, kind, user, team, created_by).await
    }

    /// Uses a sign-in code once. Unknown, used and expired codes get one answer.
    pub async fn redeem_code(&self, code: &str) -> Result<SignInCode, Error> {
        let refused = || ApiError::unauthenticated("invalid or expired code");
        if !covibe_identity::code::well_formed(code) {
            return Err(refused().into());
        }
        let hash = covibe_identity::code::hash_code(code);
        Ok(self
            .store
            .use_code(&hash, now_ms())
            .await?
            .ok_or_else(refused)?)
    }
}

/// [`Sessions::create_code`], for tools that hold only the store (`covibe admin
/// recovery-code`).
pub async fn create_code(
    store: &dyn SessionStore,
    kind: CodeKind,
    user: UserId,
    team: TeamId,
    created_by: Option<UserId>,
) -> Result<(String, i64), Error> {
    let code = covibe_identity::code::new_code();
    let now = now_ms();
    let ttl = match kind {
        CodeKind::Device => DEVICE_CODE_TTL,
        CodeKind::Recovery => RECOVERY_CODE_TTL,
    };
    let expires_at_ms = now.saturating_add(ms(ttl));
    store
        .add_code(&SignInCode {
            code_hash: covibe_identity::code::hash_code(&code),
            kind,
            user_id: user,
            team_id: team,
            created_by,
            created_at_ms: now,
            expires_at_ms,
        })
        .await?;
    tracing::info!(user_id = %user, kind = kind.as_str(), "sign-in code created");
    Ok((code, expires_at_ms))
}

fn exp_ms(exp_secs: u64) -> i64 {
    i64::try_from(exp_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_successor_opens_only_with_its_token() {
        let successor = random_bytes::<32>();
        let sealed = seal("rt_a", &successor);
        assert_eq!(open("rt_a", &sealed), Some(successor));
        assert_ne!(open("rt_b", &sealed), Some(successor));
        assert_eq!(open("rt_a", "zz"), None);
    }
}
