//! Fuzz targets (property tests on the stable toolchain) for what a member writes and what an
//! agent sends: rule texts, random and near-valid, never panic and print back as parsed; any
//! command, path or URL gets a decision without panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use covibe_testkit::fuzz::config;
use proptest::prelude::*;
use serde_json::json;

use crate::{Decision, Policy, Rule, decide};

/// Rule-like text: a tool name (known, MCP or odd) and maybe a specifier of the characters
/// that matter to the parsers.
fn rule_text() -> impl Strategy<Value = String> {
    let tool = prop_oneof![
        Just("Bash".to_owned()),
        Just("Edit".to_owned()),
        Just("Read".to_owned()),
        Just("Write".to_owned()),
        Just("WebFetch".to_owned()),
        Just("Task".to_owned()),
        "mcp__[a-z_*-]{0,12}",
        "[A-Za-z_ ]{0,8}",
    ];
    let specifier = prop::option::of(prop_oneof![
        "[a-z ./*:~()\\[\\]!?\\\\-]{0,24}",
        "domain:[a-zA-Z0-9.*-]{0,16}",
        "[a-z &|;<>$`'\"(){}=-]{0,24}(:\\*)?",
        "\\PC{0,24}",
    ]);
    (tool, specifier, "[ \t\n]{0,2}").prop_map(|(tool, specifier, pad)| match specifier {
        Some(s) => format!("{pad}{tool}({s}){pad}"),
        None => format!("{pad}{tool}{pad}"),
    })
}

/// Parsing never panics; a parsed rule prints as written (trimmed) and parses back the same.
#[test]
fn fuzz_rule_parse() {
    proptest!(config(4000), |(text in prop_oneof![rule_text(), "\\PC{0,40}", ".{0,40}"])| {
        if let Ok(rule) = text.parse::<Rule>() {
            let printed = rule.to_string();
            prop_assert_eq!(&printed, text.trim());
            prop_assert_eq!(printed.parse::<Rule>(), Ok(rule.clone()));
            let json = serde_json::to_string(&rule).unwrap();
            prop_assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
        }
    });
}

/// Any command, path or URL is decided without panicking; a command that any part of which
/// is `rm` is never allowed when `rm` is denied.
#[test]
fn fuzz_decide() {
    let team = Policy::parse(
        &[
            "Bash(git:*)",
            "Bash(ls:*)",
            "Edit(src/**)",
            "WebFetch(domain:example.com)",
        ],
        &["Bash(rm:*)", "Read(*.env)"],
    )
    .unwrap();
    let member = Policy::parse(&["Bash(git status)", "Bash(ls:*)"], &["Edit(src/gen/**)"]).unwrap();
    let text = prop_oneof![
        "[a-z &|;<>$`'\"(){}\\\\\n=/.*-]{0,40}",
        "(git|ls|rm) [a-z &|;$`'\"()\\\\\n-]{0,30}",
        "\\PC{0,40}",
    ];
    proptest!(config(3000), |(text in text, tool in 0..4u8)| {
        let (tool, input) = match tool {
            0 => ("Bash", json!({ "command": text })),
            1 => ("Edit", json!({ "file_path": text })),
            2 => ("Read", json!({ "file_path": text })),
            _ => ("WebFetch", json!({ "url": text })),
        };
        let decision = decide(&team, &member, tool, &input, Path::new("/p"));
        if tool == "Bash" && text.contains("rm") {
            // Whatever else happens, `rm` somewhere in the command is never simply allowed
            // unless it is inside a word no part starts with.
            if let Decision::Allow { .. } = &decision {
                let command = crate::shell::parse(&text);
                prop_assert!(!command.opaque);
                prop_assert!(command.deny_texts().iter().all(|t| !t.starts_with("rm")));
            }
        }
    });
}
