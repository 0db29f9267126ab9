#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::{Value, json};

use crate::{Decision, Error, List, MAX_RULE_BYTES, MAX_RULES, Policy, Rule, decide};

/// Attempts to get past the rules: compound commands, paths out of the project.
mod attacks;

const PROJECT: &str = "/home/dev/project";

fn policy(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::parse(allow, deny).unwrap()
}

fn rule(text: &str) -> Rule {
    text.parse().unwrap()
}

fn bash(command: &str) -> Value {
    json!({ "command": command })
}

/// What the team's policy alone decides.
fn team(team: &Policy, tool: &str, input: &Value) -> Decision {
    decide(team, &Policy::default(), tool, input, Path::new(PROJECT))
}

fn allow(text: &str) -> Decision {
    Decision::Allow { rule: rule(text) }
}

fn deny(text: &str) -> Decision {
    Decision::Deny { rule: rule(text) }
}

/// Every rule form parses, prints back as written, and matches what it names and no more.
#[test]
fn each_rule_form_matches_what_it_names() {
    let texts = [
        "Bash",
        "Read",
        "Bash(git diff:*)",
        "Bash(npm run test)",
        "Edit(src/**)",
        "Read(./docs/*.md)",
        "Write(//tmp/out/*)",
        "NotebookEdit(*.ipynb)",
        "WebFetch(domain:example.com)",
        "WebFetch(domain:*.docs.rs)",
        "mcp__github",
        "mcp__github__get_*",
        "mcp__linear__create_issue",
        "Task(*)",
    ];
    for text in texts {
        let parsed = rule(text);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.to_string().parse::<Rule>().unwrap(), parsed);
    }
    assert_eq!(rule("Bash(git diff:*)").tool(), "Bash");
    assert_eq!(rule("Bash(git diff:*)").specifier(), Some("git diff:*"));
    assert_eq!(rule("  Read  ").to_string(), "Read");

    // A bare tool: any use of it, of no other tool.
    let p = policy(&["Read"], &[]);
    assert_eq!(
        team(&p, "Read", &json!({"file_path": "/etc/passwd"})),
        allow("Read")
    );
    assert_eq!(team(&p, "Bash", &bash("ls")), Decision::Ask);
    assert_eq!(team(&p, "ReadMore", &json!({})), Decision::Ask);

    // Bash: prefix with `:*` (word boundary), exact without it.
    let p = policy(&["Bash(git diff:*)", "Bash(npm run test)"], &[]);
    for command in [
        "git diff",
        "git diff HEAD~1 -- src",
        "  git   diff  --stat ",
    ] {
        assert_eq!(
            team(&p, "Bash", &bash(command)),
            allow("Bash(git diff:*)"),
            "{command}"
        );
    }
    assert_eq!(
        team(&p, "Bash", &bash("npm run test")),
        allow("Bash(npm run test)")
    );
    for command in [
        "git diff-tree HEAD",
        "git dif",
        "git",
        "npm run test --watch",
        "npm run tests",
        "xgit diff",
        "",
    ] {
        assert_eq!(team(&p, "Bash", &bash(command)), Decision::Ask, "{command}");
    }
    assert_eq!(team(&p, "Bash", &json!({})), Decision::Ask);
    assert_eq!(team(&p, "Bash", &json!({"command": 7})), Decision::Ask);
    // A prefix ending in punctuation is a plain prefix.
    let p = policy(&["Bash(curl http://site.com/:*)"], &[]);
    assert!(matches!(
        team(&p, "Bash", &bash("curl http://site.com/a/b")),
        Decision::Allow { .. }
    ));
    assert_eq!(
        team(&p, "Bash", &bash("curl http://site.com.evil/")),
        Decision::Ask
    );

    // Paths: `**` crosses directories, `*` does not; relative to the project directory.
    let p = policy(&["Edit(src/**)", "Read(./docs/*.md)"], &[]);
    let edit = |path: &str| team(&p, "Edit", &json!({"file_path": path, "old_string": "a"}));
    assert_eq!(edit("src/a/b/c.rs"), allow("Edit(src/**)"));
    assert_eq!(edit("/home/dev/project/src/lib.rs"), allow("Edit(src/**)"));
    assert_eq!(edit("/home/dev/project/lib/src/x.rs"), Decision::Ask);
    assert_eq!(edit("/other/project/src/lib.rs"), Decision::Ask);
    // An `Edit` rule covers the tools that edit files.
    assert_eq!(
        team(&p, "Write", &json!({"file_path": "src/new.rs"})),
        allow("Edit(src/**)")
    );
    assert_eq!(
        team(&p, "MultiEdit", &json!({"file_path": "src/x.rs"})),
        allow("Edit(src/**)")
    );
    let read = |path: &str| team(&p, "Read", &json!({"file_path": path}));
    assert_eq!(read("docs/guide.md"), allow("Read(./docs/*.md)"));
    assert_eq!(read("./docs/guide.md"), allow("Read(./docs/*.md)"));
    assert_eq!(read("docs/deep/guide.md"), Decision::Ask);
    assert_eq!(read("docs/guide.txt"), Decision::Ask);
    // A `Read` rule does not let anything write.
    assert_eq!(
        team(&p, "Write", &json!({"file_path": "docs/guide.md"})),
        Decision::Ask
    );

    // gitignore: no `/` matches at any depth; a matched directory covers what is in it.
    let p = policy(&[], &["Read(*.env)", "Read(secrets)", "Write(//etc/**)"]);
    assert_eq!(
        team(&p, "Read", &json!({"file_path": "a/b/prod.env"})),
        deny("Read(*.env)")
    );
    assert_eq!(
        team(&p, "Read", &json!({"file_path": "deploy/secrets/key.pem"})),
        deny("Read(secrets)")
    );
    assert_eq!(
        team(&p, "Read", &json!({"file_path": "secrets.txt"})),
        Decision::Ask
    );
    assert_eq!(
        team(&p, "Write", &json!({"file_path": "/etc/cron.d/x"})),
        deny("Write(//etc/**)")
    );
    // Read rules cover the searches (a search with no path searches the project).
    assert_eq!(
        team(
            &p,
            "Grep",
            &json!({"pattern": "x", "path": "config/secrets"})
        ),
        deny("Read(secrets)")
    );
    let p = policy(&["Read"], &[]);
    assert_eq!(team(&p, "Glob", &json!({"pattern": "*"})), allow("Read"));
    // Notebooks by `notebook_path`.
    let p = policy(&["NotebookEdit(*.ipynb)"], &[]);
    assert_eq!(
        team(&p, "NotebookEdit", &json!({"notebook_path": "n/a.ipynb"})),
        allow("NotebookEdit(*.ipynb)")
    );
    assert_eq!(
        team(&p, "NotebookEdit", &json!({"file_path": "n/a.ipynb"})),
        Decision::Ask
    );

    // WebFetch: the URL's host or a subdomain of it.
    let p = policy(
        &["WebFetch(domain:example.com)", "WebFetch(domain:*.docs.rs)"],
        &[],
    );
    let fetch = |url: &str| team(&p, "WebFetch", &json!({"url": url, "prompt": "read"}));
    for url in [
        "https://example.com",
        "https://EXAMPLE.com./x",
        "http://api.example.com:8080/v1?q=1",
        "https://user:pw@example.com/",
    ] {
        assert_eq!(fetch(url), allow("WebFetch(domain:example.com)"), "{url}");
    }
    assert_eq!(
        fetch("https://serde.docs.rs/"),
        allow("WebFetch(domain:*.docs.rs)")
    );
    for url in [
        "https://docs.rs/",
        "https://evilexample.com/",
        "https://example.com.evil.io/",
        "https://evil.io/?u=https://example.com",
        "https://evil.io#@example.com",
        "https://evil.io\\@example.com",
        "https://example.com@evil.io/",
        "example.com/x",
        "https://exa%6Dple.com/",
    ] {
        assert_eq!(fetch(url), Decision::Ask, "{url}");
    }

    // MCP: a server covers its tools, a name with `*` those starting so.
    let p = policy(&["mcp__github", "mcp__linear__get_*"], &[]);
    let call = |tool: &str| team(&p, tool, &json!({}));
    assert_eq!(call("mcp__github__create_issue"), allow("mcp__github"));
    assert_eq!(call("mcp__github"), allow("mcp__github"));
    assert_eq!(call("mcp__linear__get_issue"), allow("mcp__linear__get_*"));
    for tool in [
        "mcp__githubx__x",
        "mcp__git",
        "mcp__linear__create_issue",
        "Bash",
    ] {
        assert_eq!(call(tool), Decision::Ask, "{tool}");
    }
}

/// Deny wins over allow, whichever is more specific and whichever layer it comes from.
#[test]
fn deny_wins_over_allow_in_both_layers() {
    let team_policy = policy(&["Bash", "Edit"], &["Bash(rm:*)", "Edit(.git/**)"]);
    assert_eq!(
        team(&team_policy, "Bash", &bash("rm -rf build")),
        deny("Bash(rm:*)")
    );
    assert_eq!(team(&team_policy, "Bash", &bash("ls")), allow("Bash"));
    assert_eq!(
        team(&team_policy, "Edit", &json!({"file_path": ".git/config"})),
        deny("Edit(.git/**)")
    );
    // A bare deny beats a specific allow.
    let p = policy(&["Bash(git status)"], &["Bash"]);
    assert_eq!(team(&p, "Bash", &bash("git status")), deny("Bash"));

    // The member's deny denies what the team allows.
    let member = policy(&[], &["Bash(git push:*)"]);
    let decide = |member: &Policy, tool: &str, input: &Value| {
        decide(&team_policy, member, tool, input, Path::new(PROJECT))
    };
    assert_eq!(
        decide(&member, "Bash", &bash("git push --force")),
        deny("Bash(git push:*)")
    );
    assert_eq!(decide(&member, "Bash", &bash("git pull")), allow("Bash"));
    // The team's deny is cited first when both deny.
    let member = policy(&[], &["Bash(rm -rf:*)"]);
    assert_eq!(
        decide(&member, "Bash", &bash("rm -rf /")),
        deny("Bash(rm:*)")
    );
}

/// A member's rules are stricter, never looser: their allow list cannot allow what the team
/// does not, and when it is not empty it narrows what the team allows (the rest is asked).
#[test]
fn member_rules_only_narrow_the_team() {
    let team_policy = policy(&["Bash(git:*)", "Read"], &["Read(.env)"]);
    let decide = |member: &Policy, tool: &str, input: &Value| {
        decide(&team_policy, member, tool, input, Path::new(PROJECT))
    };
    // Looser: the member allows what the team does not decide, or denies.
    let looser = policy(&["Bash", "Edit", "Read"], &[]);
    assert_eq!(decide(&looser, "Bash", &bash("npm install")), Decision::Ask);
    assert_eq!(
        decide(&looser, "Edit", &json!({"file_path": "src/a.rs"})),
        Decision::Ask
    );
    assert_eq!(
        decide(&looser, "Read", &json!({"file_path": ".env"})),
        deny("Read(.env)")
    );
    // The team's rule is cited when both allow.
    assert_eq!(
        decide(&looser, "Bash", &bash("git status")),
        allow("Bash(git:*)")
    );
    // Narrower: only `git status` runs without asking; reading is asked.
    let narrower = policy(&["Bash(git status)"], &[]);
    assert_eq!(
        decide(&narrower, "Bash", &bash("git status")),
        allow("Bash(git:*)")
    );
    assert_eq!(decide(&narrower, "Bash", &bash("git push")), Decision::Ask);
    assert_eq!(
        decide(&narrower, "Read", &json!({"file_path": "README.md"})),
        Decision::Ask
    );
    // No member rules: the team decides alone.
    assert_eq!(
        decide(
            &Policy::default(),
            "Read",
            &json!({"file_path": "README.md"})
        ),
        allow("Read")
    );
    // Every part of a command must be allowed by both layers.
    let member = policy(&["Bash(git status)", "Bash(git log:*)"], &[]);
    assert_eq!(
        decide(&member, "Bash", &bash("git status && git log -1")),
        allow("Bash(git:*)")
    );
    assert_eq!(
        decide(&member, "Bash", &bash("git status && git push")),
        Decision::Ask
    );
}

/// Invalid rules are refused with a short message saying what is wrong and where.
#[test]
fn invalid_rules_say_what_is_wrong() {
    let cases: &[(&str, Error)] = &[
        ("", Error::Empty),
        ("   ", Error::Empty),
        ("Bash(git diff", Error::MissingParen),
        ("Bash(git diff))x", Error::MissingParen),
        (
            "bash",
            Error::ToolName {
                name: "bash".into(),
            },
        ),
        (
            "Bash Tool",
            Error::ToolName {
                name: "Bash Tool".into(),
            },
        ),
        (
            "mcp__",
            Error::ToolName {
                name: "mcp__".into(),
            },
        ),
        (
            "mcp__*",
            Error::ToolName {
                name: "mcp__*".into(),
            },
        ),
        (
            "mcp__gh__a*b",
            Error::ToolName {
                name: "mcp__gh__a*b".into(),
            },
        ),
        (
            "Bash()",
            Error::EmptySpecifier {
                tool: "Bash".into(),
            },
        ),
        (
            "Bash(:*)",
            Error::EmptySpecifier {
                tool: "Bash".into(),
            },
        ),
        (
            "mcp__gh(x)",
            Error::NoSpecifier {
                tool: "mcp__gh".into(),
            },
        ),
        (
            "Task(explore)",
            Error::NoSpecifier {
                tool: "Task".into(),
            },
        ),
        ("Bash(npm run *)", Error::BashWildcard),
        ("Bash(git * main)", Error::BashWildcard),
        ("Bash(git diff && rm:*)", Error::BashCompound),
        ("Bash(git diff | head)", Error::BashCompound),
        ("Bash(echo $(id))", Error::BashCompound),
        ("Bash(echo x > f)", Error::BashCompound),
        ("Bash(python3 -c \":*)", Error::BashCompound),
        ("Read(~/.ssh/**)", Error::HomePath),
        ("Edit(../other/**)", Error::ParentDir),
        ("Edit(src/../../x)", Error::ParentDir),
        ("Edit(./)", Error::EmptyPath),
        ("Read(//)", Error::EmptyPath),
        ("WebFetch(example.com)", Error::WebFetchSpecifier),
        (
            "WebFetch(domain:exa mple.com)",
            Error::Domain {
                domain: "exa mple.com".into(),
            },
        ),
        ("WebFetch(domain:)", Error::Domain { domain: "".into() }),
        ("Bash(ls\n&& rm)", Error::ControlCharacter),
    ];
    for (text, error) in cases {
        assert_eq!(text.parse::<Rule>().as_ref(), Err(error), "{text:?}");
    }
    assert_eq!(
        "Bash(npm run *)".parse::<Rule>().unwrap_err().to_string(),
        "in a Bash rule `*` only works as `:*` at the end, as in `Bash(npm run:*)`"
    );
    assert_eq!(
        "Bash(git diff".parse::<Rule>().unwrap_err().to_string(),
        "missing `)` at the end"
    );
    // A long name is clipped in the message.
    let long = format!("x{}", "y".repeat(500));
    let message = long.parse::<Rule>().unwrap_err().to_string();
    assert!(message.len() < 150, "{message}");

    // In a policy: which list, which rule.
    let err = Policy::parse(&["Read", "Edit"], &["Bash", "Bash(rm"]).unwrap_err();
    assert_eq!(err.to_string(), "deny rule 2: missing `)` at the end");
    let err = serde_json::from_str::<Policy>(r#"{"allow": ["Read", "bash"]}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("allow rule 2: `bash` is not a tool name"),
        "{err}"
    );
    assert!(serde_json::from_str::<Policy>(r#"{"allow": [], "ask": []}"#).is_err());
}

/// The limits: rules per list and bytes per rule, named in the error.
#[test]
fn limits_and_json() {
    let many: Vec<String> = (0..=MAX_RULES).map(|i| format!("Bash(echo {i})")).collect();
    assert_eq!(
        Policy::parse(&many, &[]).unwrap_err(),
        Error::TooManyRules {
            list: List::Allow,
            count: MAX_RULES + 1,
            limit: MAX_RULES
        }
    );
    assert_eq!(
        Policy::parse(&[], &many).unwrap_err().to_string(),
        "too many deny rules: 201, at most 200"
    );
    let fits = Policy::parse(&many[..MAX_RULES], &many[..MAX_RULES]).unwrap();
    assert_eq!(fits.validate(), Ok(()));
    let mut over = fits.clone();
    over.deny.push(rule("Read"));
    assert_eq!(
        over.validate().unwrap_err().to_string(),
        "too many deny rules: 201, at most 200"
    );

    let longest = format!("Bash(echo {})", "x".repeat(MAX_RULE_BYTES - 11));
    assert_eq!(longest.len(), MAX_RULE_BYTES);
    assert!(longest.parse::<Rule>().is_ok());
    let too_long = format!("{longest}x");
    assert_eq!(
        too_long.parse::<Rule>().unwrap_err().to_string(),
        "rule is 1025 bytes, at most 1024"
    );

    // JSON: lists of strings, printed back as written; a missing list is empty.
    let text = r#"{"allow":["Bash(git diff:*)","Edit(src/**)"],"deny":["Read(.env)"]}"#;
    let parsed: Policy = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), text);
    let only_deny: Policy = serde_json::from_str(r#"{"deny":["Bash"]}"#).unwrap();
    assert!(only_deny.allow.is_empty() && !only_deny.is_empty());
    assert!(Policy::default().is_empty());
    // A decision as the audit log records it.
    assert_eq!(
        serde_json::to_value(allow("Bash(git diff:*)")).unwrap(),
        json!({"decision": "allow", "rule": "Bash(git diff:*)"})
    );
    assert_eq!(
        serde_json::to_value(Decision::Ask).unwrap(),
        json!({"decision": "ask"})
    );
}
