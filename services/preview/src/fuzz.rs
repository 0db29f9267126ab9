//! Fuzz targets (property tests on the stable toolchain) for what a webhook delivery carries:
//! the `X-Hub-Signature-256` header against the body, and the push body itself. Each feeds
//! random input and valid input mutated, and checks that nothing panics, that only the exact
//! signature of the exact body verifies, and that a refusal is typed and never echoes input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_testkit::fuzz::{config, edits, mutate};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use crate::webhook::{PushEvent, SignatureError, decode_hex, verify_signature};

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Signature headers and bodies, random or a valid pair mutated: the untouched pair verifies
/// (whatever the case of its hex); any other header or body is refused, as missing, malformed
/// or mismatched, never a panic.
#[test]
fn fuzz_webhook_signature() {
    let input = (
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 1..40),
        edits(0..5),
        edits(0..5),
        any::<bool>(),
        prop_oneof![3 => Just(None), 1 => any::<String>().prop_map(Some)],
    );
    proptest!(config(3000), |((body, secret, header_edits, body_edits, upper, random) in input)| {
        let good = sign(&secret, &body);
        let header = match random {
            Some(random) => random,
            None => {
                let header = if upper {
                    format!("sha256={}", good["sha256=".len()..].to_uppercase())
                } else {
                    good.clone()
                };
                match String::from_utf8(mutate(header.into_bytes(), &header_edits, None)) {
                    Ok(header) => header,
                    Err(_) => return Ok(()),
                }
            }
        };
        let sent = mutate(body.clone(), &body_edits, None);
        let verdict = verify_signature(&secret, &header, &sent);
        let same_tag = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(decode_hex)
            .is_some_and(|tag| tag == decode_hex(&good["sha256=".len()..]).unwrap());
        if same_tag && sent == body {
            prop_assert_eq!(verdict, Ok(()));
        } else {
            let refused = verdict.unwrap_err();
            if header.trim().is_empty() {
                prop_assert_eq!(refused, SignatureError::Missing);
            }
            prop_assert!(!refused.message().is_empty());
        }
    });
}

fn push_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            "[0-9a-f]{40}",
            "[0-9A-F]{64}",
            Just("0".repeat(40)),
            "[ -~]{0,70}"
        ],
        "refs/heads/[a-z/]{1,20}",
        "[a-z]{1,10}/[a-z]{1,10}",
        any::<bool>(),
        "\\PC{0,30}",
    )
        .prop_map(|(after, git_ref, name, deleted, pusher)| {
            serde_json::to_vec(&serde_json::json!({
                "ref": git_ref,
                "after": after,
                "deleted": deleted,
                "pusher": {"name": pusher},
                "repository": {
                    "full_name": name,
                    "clone_url": format!("https://github.com/{name}.git"),
                    "ssh_url": format!("git@github.com:{name}.git"),
                    "html_url": format!("https://github.com/{name}"),
                },
                "commits": [{"id": "x", "message": "m"}],
            }))
            .unwrap()
        })
}

/// Push bodies, random or valid and mutated: each parses into a push whose fields hold what
/// the domain relies on (a commit sha, bounded names), or is refused with a message that is
/// bounded and carries none of the body.
#[test]
fn fuzz_push_event_body() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (push_body(), edits(0..5)).prop_map(|(body, e)| mutate(body, &e, None)),
    ];
    proptest!(config(3000), |(body in input)| {
        match PushEvent::parse(&body) {
            Ok(push) => {
                prop_assert!(matches!(push.after.len(), 40 | 64));
                prop_assert!(push.after.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                prop_assert!(!push.git_ref.is_empty() && push.git_ref.len() <= 255);
                prop_assert!(!push.repository.is_empty() && push.repository.len() <= 255);
                prop_assert!(push.pusher.chars().count() <= 255);
                prop_assert_eq!(push.urls.len(), 3);
            }
            Err(message) => {
                prop_assert!(message.len() <= 160, "a long refusal: {message:?}");
                prop_assert!(!message.contains('"'), "a refusal quoting the body: {message:?}");
            }
        }
    });
}
