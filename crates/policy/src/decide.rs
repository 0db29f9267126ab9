//! The decision on one tool use, under the team's policy and the member's own rules.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::Policy;
use crate::request::Request;
use crate::rule::Rule;

/// What the policy says about a tool use, and which rule said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// A team allow rule allowed it (the first that matched the command's first part).
    Allow { rule: Rule },
    /// A deny rule, the team's or the member's, refused it.
    Deny { rule: Rule },
    /// Nothing decided: the agent's owner is asked.
    Ask,
}

/// Decides one tool use (`tool`, its JSON `input`) of an agent working in `project_dir` (an
/// absolute path; relative paths in the input and in rules are resolved against it).
///
/// 1. A deny rule of the team, then of the member, that matches: `Deny`. For `Bash` a deny rule
///    matches when any part of the command does (`a && b`, `a | b`, `$(b)`, `bash -c 'b'`, …).
/// 2. Else a team allow rule that matches: `Allow`, unless the member's allow list is not empty
///    and does not match too, which leaves it to `Ask`. A member's rules are never looser than
///    the team's: they add denies, and their allow list narrows what the team allows.
///    For `Bash` every part of the command must be allowed (by any rule each) and the command
///    must have nothing the rules cannot see through (substitution, subshell, redirection to a
///    file): `git add . && git commit -m x` is allowed by `Bash(git add:*)` and
///    `Bash(git commit:*)`, `git diff && rm -rf ~` by neither. A bare `Bash` allows everything.
/// 3. Else `Ask`.
pub fn decide(
    team: &Policy,
    member: &Policy,
    tool: &str,
    input: &Value,
    project_dir: &Path,
) -> Decision {
    let request = Request::new(tool, input, project_dir);
    if let Some(rule) = team
        .deny
        .iter()
        .chain(&member.deny)
        .find(|rule| rule.denies(&request))
    {
        return Decision::Deny { rule: rule.clone() };
    }
    let Some(rule) = allowed_by(&team.allow, &request) else {
        return Decision::Ask;
    };
    if !member.allow.is_empty() && allowed_by(&member.allow, &request).is_none() {
        return Decision::Ask;
    }
    Decision::Allow { rule: rule.clone() }
}

/// The rule of `rules` that allows the request, if one does; for a command, the rule that
/// allows its first part, when every part is allowed.
fn allowed_by<'r>(rules: &'r [Rule], request: &Request<'_>) -> Option<&'r Rule> {
    if let Some(rule) = rules.iter().find(|rule| rule.covers_any_use(request)) {
        return Some(rule);
    }
    let Some(command) = &request.command else {
        return rules.iter().find(|rule| rule.allows(request));
    };
    if command.opaque {
        return None;
    }
    let mut first = None;
    for part in command.texts() {
        let rule = rules.iter().find(|rule| rule.matches_command(&part))?;
        first.get_or_insert(rule);
    }
    first
}
