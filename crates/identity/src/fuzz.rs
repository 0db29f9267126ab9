//! Fuzz targets (property tests on the stable toolchain) for what a caller hands in: access and
//! service tokens (JWTs), the bearer header they come in, and typed one-time codes. Each feeds
//! random input and valid input mutated, and checks that nothing panics, that a refusal says
//! nothing of why, and that nothing but an untouched token verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use covibe_proto::tonic::metadata::{MetadataMap, MetadataValue};
use covibe_testkit::fuzz::{config, edits, mutate};
use covibe_types::{Code, SessionId, TeamId, UserId};
use proptest::prelude::*;

use crate::code::{hash_code, new_code, normalize, well_formed};
use crate::keys::KeyFiles;
use crate::load::load_or_generate;
use crate::token::{Principal, bearer_from_metadata};

/// A token's own alphabet and separator, so that mutants still look like tokens.
fn token_char(byte: u8) -> u8 {
    b"ABCxyz019-_.="[usize::from(byte) % 13]
}

/// Tokens as a caller may send them: untouched, mutated, or random. Only an untouched token
/// verifies, to its own principal; every other is refused with the same words.
#[test]
fn fuzz_access_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let files = KeyFiles {
        signing: dir.path().join("s.pem"),
        verifying: dir.path().join("v.pem"),
    };
    let (signer, verifier) = load_or_generate(&files).unwrap();
    let (user_id, team_id, session_id) = (UserId::new(), TeamId::new(), SessionId::new());
    let (member, _) = signer
        .access_token(user_id, team_id, session_id, Duration::from_secs(600))
        .unwrap();
    let service = signer
        .service_token("fuzz", Duration::from_secs(600))
        .unwrap();
    let originals = [
        (
            member,
            Principal::Member {
                user_id,
                team_id,
                session_id,
            },
        ),
        (
            service,
            Principal::Service {
                name: "fuzz".to_owned(),
            },
        ),
    ];
    let input = prop_oneof![
        (0..2usize, edits(1..5)).prop_map(|(which, e)| (Some(which), e, String::new())),
        any::<String>().prop_map(|s| (None, Vec::new(), s)),
        "[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,200}\\.[A-Za-z0-9_=-]{0,90}".prop_map(|s| (
            None,
            Vec::new(),
            s
        )),
    ];
    proptest!(config(1500), |((which, edits, random) in input)| {
        let token = match which {
            Some(which) => {
                let bytes = mutate(originals[which].0.clone().into_bytes(), &edits, Some(token_char));
                let Ok(token) = String::from_utf8(bytes) else {
                    return Ok(());
                };
                token
            }
            None => random,
        };
        match verifier.verify(&token) {
            Ok(principal) => {
                let original = originals.iter().find(|(t, _)| *t == token);
                prop_assert!(original.is_some(), "a changed token verified: {token:?}");
                prop_assert_eq!(Some(&principal), original.map(|(_, p)| p));
            }
            Err(err) => {
                prop_assert_eq!(err.code, Code::Unauthenticated);
                prop_assert_eq!(err.message.as_str(), "invalid or expired token");
            }
        }
    });
}

/// The bearer header of a gRPC request: a token found is never empty nor padded.
#[test]
fn fuzz_bearer_header() {
    let value = prop_oneof![
        "[ -~]{0,40}",
        "(Bearer|bearer|BEARER)[ \\t]{0,3}[ -~]{0,20}",
    ];
    proptest!(config(2000), |(value in value)| {
        let mut metadata = MetadataMap::new();
        let Ok(value) = MetadataValue::try_from(value.as_str()) else {
            return Ok(());
        };
        metadata.insert("authorization", value);
        if let Some(token) = bearer_from_metadata(&metadata) {
            prop_assert!(!token.is_empty());
            prop_assert_eq!(token, token.trim());
        }
    });
}

/// Typed codes: ours, however typed (case, dashes, spaces, look-alikes), are well formed and
/// hash the same; anything else is refused before it costs more than its 64 bytes.
#[test]
fn fuzz_typed_codes() {
    let input = prop_oneof![
        any::<String>().prop_map(|s| (s, false)),
        "[0-9A-Za-z -]{0,70}".prop_map(|s| (s, false)),
        (any::<u64>(), prop::collection::vec(0u8..4, 16)).prop_map(|(_, styles)| {
            let code = new_code();
            let typed: String = code
                .chars()
                .zip(styles.iter().cycle())
                .map(|(c, style)| match (style, c) {
                    (0, c) => c.to_ascii_lowercase().to_string(),
                    (1, '-') => " ".to_owned(),
                    (2, '0') => "o".to_owned(),
                    (2, '1') => "l".to_owned(),
                    (3, c) => format!("{c} "),
                    (_, c) => c.to_string(),
                })
                .collect();
            (format!("{code}\n{typed}"), true)
        }),
    ];
    proptest!(config(2000), |((text, ours) in input)| {
        if ours {
            let (code, typed) = text.split_once('\n').unwrap();
            prop_assert!(well_formed(code) && well_formed(typed), "{typed:?}");
            prop_assert_eq!(hash_code(code), hash_code(typed));
        } else if well_formed(&text) {
            prop_assert!(text.len() <= 64);
            let normal = normalize(&text);
            prop_assert_eq!(normal.len(), 16);
            prop_assert!(normal.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        }
    });
}
