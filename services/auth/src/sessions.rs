//! Token issuing and refresh rotation. A refresh token is 256 random bits, stored as a hash, in a
//! family started at sign-in. Using one marks it used and issues the next of the family; using
//! an already-used one means it was stolen or replayed, so the whole family is revoked.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use covibe_identity::Signer;
use covibe_proto::tonic;
use covibe_types::{ApiError, TeamId, UserId, now_ms};
use rand::RngCore;
use sha2::Digest;

use crate::store::{RefreshRecord, RefreshStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("auth storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("token signing: {0}")]
    Signing(#[from] covibe_identity::Error),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Api(api) => api,
            other => ApiError::internal(other),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        ApiError::from(err).into()
    }
}

#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at_ms: i64,
}

pub struct Sessions {
    signer: Signer,
    store: Arc<dyn RefreshStore>,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

fn hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("rt_{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Sessions {
    pub fn new(
        signer: Signer,
        store: Arc<dyn RefreshStore>,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            signer,
            store,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A short-lived token this service uses to call the team service.
    pub fn service_token(&self) -> Result<String, Error> {
        Ok(self.signer.service_token("auth", Duration::from_secs(60))?)
    }

    /// Starts a new refresh family for a member who just signed in.
    pub async fn start(&self, user: UserId, team: TeamId) -> Result<IssuedTokens, Error> {
        let family = uuid_like();
        self.issue(user, team, family).await
    }

    async fn issue(
        &self,
        user: UserId,
        team: TeamId,
        family: String,
    ) -> Result<IssuedTokens, Error> {
        let (access_token, exp) = self.signer.access_token(user, team, self.access_ttl)?;
        let refresh_token = new_refresh_token();
        let ttl_ms = i64::try_from(self.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert(&RefreshRecord {
                token_hash: hash(&refresh_token),
                family,
                user_id: user,
                team_id: team,
                expires_at_ms: now_ms().saturating_add(ttl_ms),
                used: false,
                revoked: false,
            })
            .await?;
        let access_expires_at_ms = i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000);
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            access_expires_at_ms,
        })
    }

    /// Rotates a refresh token. `still_member` is asked before new tokens are issued.
    pub async fn refresh<F, Fut>(&self, token: &str, still_member: F) -> Result<IssuedTokens, Error>
    where
        F: FnOnce(UserId) -> Fut,
        Fut: std::future::Future<Output = Result<bool, Error>>,
    {
        let refused = || ApiError::unauthenticated("invalid or expired refresh token");
        let record = self.store.find(&hash(token)).await?.ok_or_else(refused)?;
        if record.revoked || record.expires_at_ms <= now_ms() {
            return Err(refused().into());
        }
        if record.used || !self.store.mark_used(&record.token_hash).await? {
            // Replay of a rotated token: whoever holds this family may be an attacker.
            self.store.revoke_family(&record.family).await?;
            tracing::warn!(user_id = %record.user_id, "refresh token reuse detected, family revoked");
            return Err(refused().into());
        }
        if !still_member(record.user_id).await? {
            self.store.revoke_family(&record.family).await?;
            return Err(refused().into());
        }
        self.issue(record.user_id, record.team_id, record.family)
            .await
    }
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
