//! GitHub push webhooks: the signature check and the few fields of a push we use.

use bytes::Bytes;
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::model::Preview;

/// Why a signature was refused (the audit log names it; the caller gets [`Self::message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// Not `sha256=<64 hex digits>` (a `sha1=` signature included).
    Malformed,
    /// Well formed, but not the HMAC of this body under our secret.
    Mismatch,
}

impl SignatureError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed => "malformed_signature",
            Self::Mismatch => "bad_signature",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing X-Hub-Signature-256 header",
            Self::Malformed => "X-Hub-Signature-256 must be sha256=<hex HMAC-SHA256 of the body>",
            Self::Mismatch => "webhook signature does not match the body",
        }
    }
}

/// Checks `header` (`sha256=<hex>`) against HMAC-SHA256 of `body` under `secret`, in constant
/// time.
pub fn verify_signature(secret: &[u8], header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// What we read from a `push` event's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The commit the ref points at after the push.
    pub after: String,
    pub git_ref: String,
    /// `owner/name`.
    pub repository: String,
    /// The other names of the repository (clone, SSH and web URLs), any of which a team's
    /// configuration may use.
    pub urls: Vec<String>,
    /// The push deleted the ref (`after` is all zeros).
    pub deleted: bool,
    /// Who pushed (GitHub's `pusher.name`), empty when not given.
    pub pusher: String,
}

#[derive(Deserialize)]
struct RawPush {
    after: String,
    #[serde(rename = "ref")]
    git_ref: String,
    repository: RawRepository,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    pusher: Option<RawPusher>,
}

#[derive(Deserialize)]
struct RawPusher {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawRepository {
    full_name: String,
    #[serde(default)]
    clone_url: String,
    #[serde(default)]
    ssh_url: String,
    #[serde(default)]
    html_url: String,
}

impl PushEvent {
    /// Parses a push body (JSON: configure the webhook's content type as `application/json`).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        // serde's message quotes the body (a string of any length): only where it failed.
        let raw: RawPush = serde_json::from_slice(body).map_err(|e| {
            tracing::debug!(error = %e, "push event body refused");
            format!(
                "invalid push event body (expected GitHub's JSON), at line {} column {}",
                e.line(),
                e.column()
            )
        })?;
        let sha_ok =
            matches!(raw.after.len(), 40 | 64) && raw.after.chars().all(|c| c.is_ascii_hexdigit());
        if !sha_ok {
            return Err("push event `after` must be a commit sha".to_owned());
        }
        if raw.git_ref.is_empty() || raw.git_ref.len() > 255 {
            return Err("push event `ref` must be a ref name".to_owned());
        }
        if raw.repository.full_name.is_empty() || raw.repository.full_name.len() > 255 {
            return Err("push event `repository.full_name` is missing".to_owned());
        }
        Ok(Self {
            deleted: raw.deleted || raw.after.bytes().all(|b| b == b'0'),
            pusher: raw
                .pusher
                .map(|p| p.name.chars().take(255).collect())
                .unwrap_or_default(),
            after: raw.after.to_ascii_lowercase(),
            git_ref: raw.git_ref,
            urls: vec![
                raw.repository.clone_url,
                raw.repository.ssh_url,
                raw.repository.html_url,
            ],
            repository: raw.repository.full_name,
        })
    }

    /// Every name the repository goes by.
    pub fn repository_names(&self) -> Vec<&str> {
        let mut names = vec![self.repository.as_str()];
        names.extend(self.urls.iter().map(String::as_str));
        names
    }
}

/// The team event announcing the team's new preview state.
pub(crate) fn preview_updated(preview: &Preview, push: &PushEvent) -> Bytes {
    let event = ev::TeamEvent {
        team_id: preview.team_id.to_string(),
        event: Some(ev::team_event::Event::PreviewUpdated(ev::PreviewUpdated {
            url: preview.url.clone(),
            commit: preview.commit.clone(),
            status: preview.status.clone(),
            git_ref: push.git_ref.clone(),
            repository: push.repository.clone(),
            updated_at_ms: preview.updated_at_ms,
        })),
    };
    Bytes::from(event.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"after":"x"}"#;
        let good = sign(b"s3cret", body);
        assert_eq!(verify_signature(b"s3cret", &good, body), Ok(()));
        assert_eq!(
            verify_signature(
                b"s3cret",
                &good.to_uppercase().replace("SHA256=", "sha256="),
                body
            ),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"other", &good, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", &good, br#"{"after":"y"}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", "", body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(
                b"s3cret",
                "sha1=0123456789abcdef0123456789abcdef01234567",
                body
            ),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", "sha256=zz", body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", &good[..good.len() - 2], body),
            Err(SignatureError::Malformed)
        );
    }

    /// GitHub's documented example ("Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify_signature(secret, signature, body), Ok(()));
        assert_eq!(sign(secret, body), signature);
        assert_eq!(
            verify_signature(secret, signature, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    /// Found by `fuzz_push_event_body`: a refusal quoted the body's own strings, of any length.
    #[test]
    fn a_refused_push_body_is_not_quoted_back() {
        let long = "x".repeat(100_000);
        let body = format!(r#"{{"ref":"r","after":"a","pusher":"{long}","repository":{{}}}}"#);
        let message = PushEvent::parse(body.as_bytes()).unwrap_err();
        assert!(!message.contains("xxx") && message.len() < 160, "{message}");
    }

    #[test]
    fn push_bodies_are_parsed() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let body = format!(
            r#"{{"ref":"refs/heads/main","after":"{sha}","repository":{{"full_name":"o/r"}},"extra":1}}"#
        );
        let push = PushEvent::parse(body.as_bytes()).unwrap();
        assert_eq!(push.after, sha);
        assert_eq!(push.git_ref, "refs/heads/main");
        assert_eq!(push.repository, "o/r");
        assert!(!push.deleted);
        assert!(PushEvent::parse(b"not json").is_err());
        assert!(
            PushEvent::parse(br#"{"ref":"r","after":"nothex","repository":{"full_name":"o/r"}}"#)
                .is_err()
        );
    }
}
