//! Signing and verifying tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use covibe_proto::tonic;
use covibe_types::{ApiError, SessionId, TeamId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::{modified, read_public_keys, read_signing_key, valid_service_name};
use crate::{Error, Revocations};

const ISSUER: &str = "covibe";
const AUDIENCE: &str = "covibe";

/// How often a key file is looked at for a change (a rotation or a retirement).
const RELOAD_EVERY: Duration = Duration::from_secs(2);

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
    /// The member's sign-in session (one per device): ending it refuses its access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    kind: TokenKind,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Member {
        user_id: UserId,
        team_id: TeamId,
        session_id: SessionId,
    },
    Service {
        name: String,
    },
}

impl Principal {
    /// The member, or a `permission_denied` error for a service token.
    pub fn member(&self) -> Result<(UserId, TeamId), ApiError> {
        match self {
            Self::Member {
                user_id, team_id, ..
            } => Ok((*user_id, *team_id)),
            Self::Service { .. } => Err(ApiError::forbidden("this call needs a member's token")),
        }
    }

    /// The member's session, or a `permission_denied` error for a service token.
    pub fn session(&self) -> Result<SessionId, ApiError> {
        match self {
            Self::Member { session_id, .. } => Ok(*session_id),
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
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file that is looked at again now and then, and reloaded when it changed.
struct Watched {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl Watched {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            modified: modified(path),
            checked: Instant::now(),
        }
    }

    /// Whether the file changed since it was last loaded; looks at most every `RELOAD_EVERY`,
    /// unless `now` is set.
    fn changed(&mut self, now: bool) -> bool {
        if !now && self.checked.elapsed() < RELOAD_EVERY {
            return false;
        }
        self.checked = Instant::now();
        let modified = modified(&self.path);
        if modified == self.modified {
            return false;
        }
        self.modified = modified;
        true
    }
}

struct SigningState {
    key: EncodingKey,
    kid: String,
}

/// Issues tokens. The auth service holds the one with the token signing key; a service with a
/// key of its own holds one that signs only its own service tokens (`load_service`). It
/// follows its key file: after a rotation, tokens are signed with the new key.
#[derive(Clone)]
pub struct Signer {
    state: Arc<RwLock<SigningState>>,
    watched: Option<Arc<Mutex<Watched>>>,
    /// Set for a service's own key: the only `sub` it signs is `service:NAME`.
    service: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid())
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

fn signing_state(path: &Path) -> Result<SigningState, Error> {
    let (kid, _) = read_signing_key(path)?;
    let pem = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(SigningState {
        key: EncodingKey::from_ed_pem(&pem)?,
        kid,
    })
}

impl Signer {
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            state: Arc::new(RwLock::new(signing_state(path)?)),
            watched: Some(Arc::new(Mutex::new(Watched::new(path)))),
            service: None,
        })
    }

    /// A signer of the service `name`'s own key: it signs `name`'s service tokens, nothing
    /// else (verifiers hold it to the same, by the key's label in the verifying file).
    pub(crate) fn load_service(path: &Path, name: &str) -> Result<Self, Error> {
        if !valid_service_name(name) {
            return Err(Error::Key(format!("{name:?} is not a service name")));
        }
        Ok(Self {
            service: Some(name.to_owned()),
            ..Self::load(path)?
        })
    }

    /// The id of the key tokens are signed with now.
    pub fn kid(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .kid
            .clone()
    }

    fn follow_file(&self) {
        let Some(watched) = &self.watched else { return };
        let mut watched = watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !watched.changed(false) {
            return;
        }
        match signing_state(&watched.path) {
            Ok(state) => {
                tracing::info!(kid = %state.kid, "token signing key changed");
                *self
                    .state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
            }
            // Half-written or unreadable: keep signing with the key we have.
            Err(err) => tracing::warn!(error = %err, "could not reload the token signing key"),
        }
    }

    /// A member's access token for one session, and its expiry (seconds since the epoch).
    pub fn access_token(
        &self,
        user: UserId,
        team: TeamId,
        session: SessionId,
        ttl: Duration,
    ) -> Result<(String, u64), Error> {
        let jti = uuid::Uuid::new_v4().to_string();
        self.access_token_at(user, team, session, now_secs(), ttl, jti)
    }

    /// An access token with a given issue time and id: signing is deterministic (Ed25519), so
    /// the same inputs give the same token, which lets a retried refresh get the same pair.
    pub fn access_token_at(
        &self,
        user: UserId,
        team: TeamId,
        session: SessionId,
        issued_at_secs: u64,
        ttl: Duration,
        jti: String,
    ) -> Result<(String, u64), Error> {
        self.sign(Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.to_string(),
            team: Some(team.to_string()),
            sid: Some(session.to_string()),
            kind: TokenKind::Access,
            iat: issued_at_secs,
            nbf: issued_at_secs,
            exp: issued_at_secs + ttl.as_secs().max(1),
            jti,
        })
    }

    /// A short-lived token for a service calling another service on its own behalf.
    pub fn service_token(&self, service: &str, ttl: Duration) -> Result<String, Error> {
        let now = now_secs();
        self.sign(Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: format!("service:{service}"),
            team: None,
            sid: None,
            kind: TokenKind::Service,
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            jti: uuid::Uuid::new_v4().to_string(),
        })
        .map(|(t, _)| t)
    }

    fn sign(&self, claims: Claims) -> Result<(String, u64), Error> {
        if let Some(own) = &self.service
            && (claims.kind != TokenKind::Service || claims.sub != format!("service:{own}"))
        {
            return Err(Error::Key(format!(
                "the service key of {own} signs only {own}'s service tokens"
            )));
        }
        self.follow_file();
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(state.kid.clone());
        let exp = claims.exp;
        Ok((jsonwebtoken::encode(&header, &claims, &state.key)?, exp))
    }
}

/// Checks tokens. Every service holds one. It knows every key of the verifying file (two at
/// once during a rotation; a token with an unknown `kid` makes it look at the file again) and
/// the sessions that ended (`Revocations`), whose tokens it refuses. A key labelled with a
/// service's name verifies that service's service tokens only.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<RwLock<HashMap<String, KnownKey>>>,
    watched: Option<Arc<Mutex<Watched>>>,
    validation: Arc<Validation>,
    revocations: Revocations,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self.read_keys().keys().cloned().collect();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

struct KnownKey {
    key: DecodingKey,
    /// The service whose own key this is, if it is one.
    service: Option<String>,
}

fn decoding_keys(path: &Path) -> Result<HashMap<String, KnownKey>, Error> {
    Ok(read_public_keys(path)?
        .into_iter()
        .map(|k| {
            // EdDSA verifies with the raw 32-byte public key.
            let key = DecodingKey::from_ed_der(k.key.as_bytes());
            let service = k.service;
            (k.kid, KnownKey { key, service })
        })
        .collect())
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    validation
}

impl Verifier {
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            keys: Arc::new(RwLock::new(decoding_keys(path)?)),
            watched: Some(Arc::new(Mutex::new(Watched::new(path)))),
            validation: Arc::new(validation()),
            revocations: Revocations::default(),
        })
    }

    /// The same verifier, refusing the sessions `revocations` holds.
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// The ended sessions this verifier refuses.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, KnownKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reloads the keys if the file changed (looked at every few seconds, or at once when a
    /// token names a key we do not know).
    fn follow_file(&self, unknown_kid: bool) {
        let Some(watched) = &self.watched else { return };
        let mut watched = watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !watched.changed(unknown_kid) {
            return;
        }
        match decoding_keys(&watched.path) {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "token verifying keys changed");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
            }
            Err(err) => tracing::warn!(error = %err, "could not reload the token verifying keys"),
        }
    }

    /// The principal a token names, or `unauthenticated` with a message that says nothing of why.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_expiring(token).map(|(principal, _)| principal)
    }

    /// [`Self::verify`], with when the token expires (ms since the epoch).
    pub fn verify_expiring(&self, token: &str) -> Result<(Principal, u64), ApiError> {
        let denied = || ApiError::unauthenticated("invalid or expired token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| denied())?;
        if header.alg != Algorithm::EdDSA {
            return Err(denied());
        }
        let kid = header.kid.ok_or_else(denied)?;
        let known = self.read_keys().contains_key(&kid);
        self.follow_file(!known);
        let claims = {
            let keys = self.read_keys();
            let known = keys.get(&kid).ok_or_else(denied)?;
            let claims = jsonwebtoken::decode::<Claims>(token, &known.key, &self.validation)
                .map_err(|e| {
                    tracing::debug!(error = %e, "token rejected");
                    denied()
                })?
                .claims;
            // A service's own key vouches for that service and nothing else.
            if let Some(own) = &known.service
                && (claims.kind != TokenKind::Service || claims.sub != format!("service:{own}"))
            {
                tracing::debug!(kid = %kid, "token rejected: beyond its service key");
                return Err(denied());
            }
            claims
        };
        let expires_at_ms = claims.exp.saturating_mul(1000);
        let principal = match claims.kind {
            TokenKind::Access => {
                let user_id: UserId = claims.sub.parse().map_err(|_| denied())?;
                let team_id: TeamId = claims
                    .team
                    .as_deref()
                    .ok_or_else(denied)?
                    .parse()
                    .map_err(|_| denied())?;
                // Every access token names its session: one without is not ours to honour.
                let session_id: SessionId = claims
                    .sid
                    .as_deref()
                    .ok_or_else(denied)?
                    .parse()
                    .map_err(|_| denied())?;
                if self.revocations.is_revoked(session_id, user_id) {
                    return Err(ApiError::unauthenticated(
                        "this session has ended: sign in again",
                    ));
                }
                Principal::Member {
                    user_id,
                    team_id,
                    session_id,
                }
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
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::{KeyFiles, load_or_generate, load_verifier, retire, rotate};

    fn files(dir: &std::path::Path) -> KeyFiles {
        KeyFiles {
            signing: dir.join("k/s.pem"),
            verifying: dir.join("k/v.pem"),
        }
    }

    fn member(signer: &Signer, ttl: u64) -> (String, Principal) {
        let (user, team, session) = (UserId::new(), TeamId::new(), SessionId::new());
        let (token, _) = signer
            .access_token(user, team, session, Duration::from_secs(ttl))
            .unwrap();
        let principal = Principal::Member {
            user_id: user,
            team_id: team,
            session_id: session,
        };
        (token, principal)
    }

    #[test]
    fn access_tokens_round_trip_and_forgeries_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, verifier) = load_or_generate(&files(dir.path())).unwrap();
        let (token, principal) = member(&signer, 60);
        assert_eq!(verifier.verify(&token).unwrap(), principal);

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
        let (other_signer, _) = load_or_generate(&files(other.path())).unwrap();
        let (foreign, _) = member(&other_signer, 60);
        assert!(verifier.verify(&foreign).is_err());

        // service tokens are not member tokens
        let service = signer
            .service_token("auth", Duration::from_secs(60))
            .unwrap();
        let principal = verifier.verify(&service).unwrap();
        assert_eq!(principal.require_service().unwrap(), "auth");
        assert!(principal.member().is_err());
    }

    /// Found by `fuzz_bearer_header`: `Bearer` and blanks gave an empty token instead of none.
    #[test]
    fn a_blank_bearer_token_is_no_token() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", "Bearer  ".parse().unwrap());
        assert_eq!(bearer_from_metadata(&metadata), None);
        metadata.insert("authorization", "Bearer  t ".parse().unwrap());
        assert_eq!(bearer_from_metadata(&metadata), Some("t"));
    }

    #[test]
    fn the_same_inputs_sign_the_same_token() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = load_or_generate(&files(dir.path())).unwrap();
        let (user, team, session) = (UserId::new(), TeamId::new(), SessionId::new());
        let ttl = Duration::from_secs(60);
        let a = signer
            .access_token_at(user, team, session, now_secs(), ttl, "j".to_owned())
            .unwrap();
        let b = signer
            .access_token_at(user, team, session, now_secs(), ttl, "j".to_owned())
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rotation_keeps_old_tokens_until_their_key_is_retired() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        // No key at all: a verifier refuses to start, naming the file.
        let err = load_verifier(&files).unwrap_err().to_string();
        assert!(err.contains("v.pem"), "{err}");
        let first = rotate(&files).unwrap();
        let signer = crate::load_signer(&files).unwrap();
        let verifier = load_verifier(&files).unwrap();
        let (old, principal) = member(&signer, 600);
        assert_eq!(signer.kid(), first);

        let second = rotate(&files).unwrap();
        assert_ne!(first, second);
        // A process started before the rotation follows the files.
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(100));
        let (new, _) = member(&signer, 600);
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        assert_eq!(kid(&new), second);
        assert!(
            verifier.verify(&new).is_ok(),
            "the new key verifies at once"
        );
        assert_eq!(
            verifier.verify(&old).unwrap(),
            principal,
            "the old one still"
        );

        // The current key cannot be retired; the old one can, and its tokens then fail.
        assert!(retire(&files, Some(&second)).is_err());
        assert_eq!(retire(&files, None).unwrap(), vec![first]);
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(100));
        assert!(verifier.verify(&old).is_err());
        assert!(verifier.verify(&new).is_ok());
        assert!(load_verifier(&files).unwrap().verify(&old).is_err());
    }

    /// The orchestrator's own key, beside an auth signing key: (auth signer, orchestrator
    /// signer, the key's file).
    fn with_service_key(files: &KeyFiles) -> (Signer, Signer, std::path::PathBuf) {
        rotate(files).unwrap();
        let auth = crate::load_signer(files).unwrap();
        let path = files.signing.with_file_name("orchestrator.pem");
        crate::add_service_key(&files.verifying, &path, "orchestrator", false).unwrap();
        let own = crate::load_service_signer(&path, "orchestrator", &files.verifying).unwrap();
        (auth, own, path)
    }

    /// `claims` signed with the key in `pem_file` under `kid`, as anyone holding it could.
    fn sign_by_hand(pem_file: &std::path::Path, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_ed_pem(&std::fs::read(pem_file).unwrap()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn claims(sub: &str, kind: &str) -> serde_json::Value {
        let now = now_secs();
        serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "kind": kind,
            "team": TeamId::new().to_string(), "sid": SessionId::new().to_string(),
            "iat": now, "nbf": now, "exp": now + 60, "jti": "j",
        })
    }

    #[test]
    fn a_service_key_vouches_for_its_own_service_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let (auth, own, path) = with_service_key(&files);
        let verifier = load_verifier(&files).unwrap();
        let ttl = Duration::from_secs(60);

        let token = own.service_token("orchestrator", ttl).unwrap();
        assert_eq!(
            verifier.verify(&token).unwrap(),
            Principal::Service {
                name: "orchestrator".to_owned()
            }
        );
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid,
            Some(own.kid())
        );

        // The signer will not sign beyond its service.
        let err = own.service_token("auth", ttl).unwrap_err().to_string();
        assert!(err.contains("only orchestrator's service tokens"), "{err}");
        assert!(
            own.access_token(UserId::new(), TeamId::new(), SessionId::new(), ttl)
                .is_err()
        );

        // Nor does the key verify beyond it, signed by hand with the same key.
        let kid = own.kid();
        let by_hand = |sub: &str, kind: &str| sign_by_hand(&path, &kid, &claims(sub, kind));
        assert!(
            verifier
                .verify(&by_hand("service:orchestrator", "service"))
                .is_ok()
        );
        for (sub, kind) in [
            ("service:auth", "service"),
            ("service:orchestrator-2", "service"),
            ("orchestrator", "service"),
            (&UserId::new().to_string(), "access"),
            ("service:orchestrator", "access"),
        ] {
            let err = verifier.verify(&by_hand(sub, kind)).unwrap_err();
            assert_eq!(err.message, "invalid or expired token", "{sub} {kind}");
        }

        // Its own token with the name changed after signing.
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "service:auth".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        assert!(
            verifier
                .verify(&format!("{}.{payload}.{}", parts[0], parts[2]))
                .is_err()
        );

        // The token signing key still signs service tokens for any service.
        for name in ["auth", "orchestrator"] {
            let token = auth.service_token(name, ttl).unwrap();
            assert_eq!(
                verifier.verify(&token).unwrap().require_service().unwrap(),
                name
            );
        }
        let (token, principal) = member(&auth, 60);
        assert_eq!(verifier.verify(&token).unwrap(), principal);

        // The private file is not replaced unless asked to.
        let before = std::fs::read(&path).unwrap();
        let err = crate::add_service_key(&files.verifying, &path, "orchestrator", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("orchestrator.pem exists"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_relabelled_or_mislabelled_service_key_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let (_, own, _) = with_service_key(&files);
        let token = own
            .service_token("orchestrator", Duration::from_secs(60))
            .unwrap();
        let text = std::fs::read_to_string(&files.verifying).unwrap();
        assert_eq!(
            text.matches("service: orchestrator\n-----BEGIN").count(),
            1,
            "{text}"
        );

        // Labelled for another service: the orchestrator's tokens are refused.
        std::fs::write(
            &files.verifying,
            text.replace("service: orchestrator", "service: team"),
        )
        .unwrap();
        assert!(load_verifier(&files).unwrap().verify(&token).is_err());

        // A label mistyped would leave the key unlabelled, able to sign anything: refused.
        for typo in [
            "Service: orchestrator",
            "service orchestrator",
            "service: Orch!",
        ] {
            std::fs::write(
                &files.verifying,
                text.replace("service: orchestrator", typo),
            )
            .unwrap();
            let err = load_verifier(&files).unwrap_err().to_string();
            assert!(err.contains("v.pem"), "{typo}: {err}");
        }
        // So is a label with no key after it.
        std::fs::write(&files.verifying, format!("{text}service: orchestrator\n")).unwrap();
        assert!(load_verifier(&files).is_err());
    }

    #[test]
    fn rotate_and_retire_keep_service_keys() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let (first_signer, own, _) = with_service_key(&files);
        let first = first_signer.kid();
        let ttl = Duration::from_secs(600);
        let token = own.service_token("orchestrator", ttl).unwrap();
        let labelled = |files: &KeyFiles| {
            std::fs::read_to_string(&files.verifying)
                .unwrap()
                .matches("service: orchestrator\n")
                .count()
        };

        let second = rotate(&files).unwrap();
        assert_eq!(labelled(&files), 1);
        assert!(load_verifier(&files).unwrap().verify(&token).is_ok());

        // Every old signing key goes, the service key stays, labelled.
        assert!(retire(&files, Some(&own.kid())).is_err(), "not by retire");
        assert_eq!(retire(&files, None).unwrap(), vec![first]);
        assert_eq!(labelled(&files), 1);
        let verifier = load_verifier(&files).unwrap();
        assert_eq!(
            verifier.verify(&token).unwrap().require_service().unwrap(),
            "orchestrator"
        );
        let service = own.service_token("auth", ttl);
        assert!(service.is_err(), "the label still binds it");

        // Retiring the service key takes it out, and its tokens are refused.
        let err = crate::retire_service_key(&files.verifying, "team", None).unwrap_err();
        assert!(err.to_string().contains("team has no service key"), "{err}");
        assert_eq!(
            crate::retire_service_key(&files.verifying, "orchestrator", None).unwrap(),
            vec![own.kid()]
        );
        assert_eq!(labelled(&files), 0);
        let verifier = load_verifier(&files).unwrap();
        assert!(verifier.verify(&token).is_err());
        let (token, _) = member(&crate::load_signer(&files).unwrap(), 60);
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid,
            Some(second)
        );
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn ended_sessions_and_removed_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, verifier) = load_or_generate(&files(dir.path())).unwrap();
        let revocations = Revocations::default();
        let verifier = verifier.with_revocations(revocations.clone());
        let (a, pa) = member(&signer, 60);
        let (b, pb) = member(&signer, 60);
        let (c, pc) = member(&signer, 60);
        revocations.apply(&crate::Ended {
            sessions: vec![pa.session().unwrap()],
            users: vec![pb.member().unwrap().0],
            reason: "test".to_owned(),
        });
        assert!(verifier.verify(&a).is_err());
        assert!(verifier.verify(&b).is_err());
        assert_eq!(verifier.verify(&c).unwrap(), pc);
    }
}
