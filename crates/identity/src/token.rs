//! Signing and verifying tokens.

use std::time::Duration;

use covibe_proto::tonic;
use covibe_types::{ApiError, TeamId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::Error;

const ISSUER: &str = "covibe";
const AUDIENCE: &str = "covibe";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A member's access token.
    Access,
    /// A service acting on its own behalf inside the mesh.
    Service,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    kind: TokenKind,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Member { user_id: UserId, team_id: TeamId },
    Service { name: String },
}

impl Principal {
    /// The member, or a `permission_denied` error for a service token.
    pub fn member(&self) -> Result<(UserId, TeamId), ApiError> {
        match self {
            Self::Member { user_id, team_id } => Ok((*user_id, *team_id)),
            Self::Service { .. } => Err(ApiError::forbidden("this call needs a member's token")),
        }
    }

    pub fn require_service(&self) -> Result<&str, ApiError> {
        match self {
            Self::Service { name } => Ok(name),
            Self::Member { .. } => Err(ApiError::forbidden("this call is internal to the mesh")),
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_id(public_pem: &[u8]) -> String {
    let digest = sha2::Sha256::digest(public_pem);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Issues tokens. Only the auth service holds one.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_pem(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(private_pem)?,
            kid: key_id(public_pem),
        })
    }

    /// A member's access token and its expiry (seconds since the epoch).
    pub fn access_token(
        &self,
        user: UserId,
        team: TeamId,
        ttl: Duration,
    ) -> Result<(String, u64), Error> {
        self.sign(
            user.to_string(),
            Some(team.to_string()),
            TokenKind::Access,
            ttl,
        )
    }

    /// A short-lived token for a service calling another service on its own behalf.
    pub fn service_token(&self, service: &str, ttl: Duration) -> Result<String, Error> {
        self.sign(format!("service:{service}"), None, TokenKind::Service, ttl)
            .map(|(t, _)| t)
    }

    fn sign(
        &self,
        sub: String,
        team: Option<String>,
        kind: TokenKind,
        ttl: Duration,
    ) -> Result<(String, u64), Error> {
        let now = now_secs();
        let exp = now + ttl.as_secs().max(1);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub,
            team,
            kind,
            iat: now,
            nbf: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok((jsonwebtoken::encode(&header, &claims, &self.key)?, exp))
    }
}

/// Checks tokens. Every service holds one.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    kid: String,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn from_pem(public_pem: &[u8]) -> Result<Self, Error> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(Self {
            key: DecodingKey::from_ed_pem(public_pem)?,
            kid: key_id(public_pem),
            validation,
        })
    }

    /// The principal a token names, or `unauthenticated` with a message that says nothing of why.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_expiring(token).map(|(principal, _)| principal)
    }

    /// [`Self::verify`], with when the token expires (ms since the epoch).
    pub fn verify_expiring(&self, token: &str) -> Result<(Principal, u64), ApiError> {
        let denied = || ApiError::unauthenticated("invalid or expired token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| denied())?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(denied());
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                tracing::debug!(error = %e, "token rejected");
                denied()
            })?;
        let claims = data.claims;
        let expires_at_ms = claims.exp.saturating_mul(1000);
        let principal = match claims.kind {
            TokenKind::Access => {
                let user_id = claims.sub.parse().map_err(|_| denied())?;
                let team_id = claims
                    .team
                    .as_deref()
                    .ok_or_else(denied)?
                    .parse()
                    .map_err(|_| denied())?;
                Principal::Member { user_id, team_id }
            }
            TokenKind::Service => {
                let name = claims.sub.strip_prefix("service:").ok_or_else(denied)?;
                Principal::Service {
                    name: name.to_owned(),
                }
            }
        };
        Ok((principal, expires_at_ms))
    }

    /// Verifies the bearer token of an incoming gRPC request.
    pub fn verify_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, ApiError> {
        let token = bearer_from_metadata(metadata)
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
        self.verify(token)
    }
}

/// The token of an `authorization: Bearer ...` entry.
pub fn bearer_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    (!token.is_empty()).then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::{KeyFiles, load_or_generate, load_verifier};

    fn pair(dir: &std::path::Path) -> (Signer, Verifier) {
        let files = KeyFiles {
            signing: dir.join("k/s.pem"),
            verifying: dir.join("k/v.pem"),
        };
        load_or_generate(&files).unwrap()
    }

    #[test]
    fn access_tokens_round_trip_and_forgeries_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, verifier) = pair(dir.path());
        let (user, team) = (UserId::new(), TeamId::new());
        let (token, _) = signer
            .access_token(user, team, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            verifier.verify(&token).unwrap(),
            Principal::Member {
                user_id: user,
                team_id: team
            }
        );

        // alg none with the same claims
        let payload = token.split('.').nth(1).unwrap();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            verifier
                .verify(&format!("{none_header}.{payload}."))
                .is_err()
        );

        // a changed payload (another team) with the old signature
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["team"] = serde_json::Value::String(TeamId::new().to_string());
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        assert!(
            verifier
                .verify(&format!("{}.{forged}.{}", parts[0], parts[2]))
                .is_err()
        );

        // a token from another key pair
        let other = tempfile::tempdir().unwrap();
        let (other_signer, _) = pair(other.path());
        let (foreign, _) = other_signer
            .access_token(user, team, Duration::from_secs(60))
            .unwrap();
        assert!(verifier.verify(&foreign).is_err());

        // service tokens are not member tokens
        let service = signer
            .service_token("auth", Duration::from_secs(60))
            .unwrap();
        let principal = verifier.verify(&service).unwrap();
        assert_eq!(principal.require_service().unwrap(), "auth");
        assert!(principal.member().is_err());
    }

    #[test]
    fn a_second_load_reuses_the_pair_and_verifier_only_loads_public() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles {
            signing: dir.path().join("s.pem"),
            verifying: dir.path().join("v.pem"),
        };
        let (signer, _) = load_or_generate(&files).unwrap();
        let verifier = load_verifier(&files).unwrap();
        let (token, _) = signer
            .access_token(UserId::new(), TeamId::new(), Duration::from_secs(5))
            .unwrap();
        assert!(verifier.verify(&token).is_ok());
        let (_, again) = load_or_generate(&files).unwrap();
        assert!(again.verify(&token).is_ok());
    }
}
