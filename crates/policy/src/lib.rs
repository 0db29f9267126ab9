//! The team's tool-use policy: allow and deny rules in Claude Code's own permission syntax
//! (`Bash(git diff:*)`, `Edit(src/**)`, `Read`, `WebFetch(domain:example.com)`, `mcp__github`),
//! parsed, validated and decided for each tool use an agent asks permission for. Pure: no I/O.
//!
//! Where this differs from Claude Code, or reads it one way of several:
//! - `Bash` specifiers are an exact command or a prefix with `:*` at the end (`npm run test`,
//!   `git diff:*`); other `*` are refused. A prefix ending inside a word needs a space after
//!   it (`git diff:*` does not match `git diff-tree`). Commands are compared word by word,
//!   quotes removed and spaces collapsed.
//! - A command is split into its parts (`&&`, `||`, `;`, `|`, `&`, newlines, subshells,
//!   `$(…)`, backticks, `bash -c`, `eval`). Deny: any part, also with leading `VAR=x` and
//!   wrappers (`sudo`, `env`, `timeout 5`, `xargs`, …) removed. Allow: every part, and nothing
//!   opaque (substitutions, subshells, redirections other than to `/dev/null` or another
//!   descriptor, here-documents). Deny rules remain best effort against a determined agent
//!   (as Claude Code's own documentation warns); what no rule decides is asked.
//! - Paths: gitignore patterns; `//abs` from the root, `path` and `./path` from the project
//!   directory, `/path` from the project directory for allow rules and from either for deny
//!   rules. `~` patterns are refused. Paths are normalized by their text (`src/../secrets` is
//!   `secrets`); symbolic links are not followed. An `Edit` rule covers `Write`, `MultiEdit`
//!   and `NotebookEdit`; a `Read` rule covers `Grep`, `Glob` and `LS` (a search with no path
//!   searches the project directory).
//! - `WebFetch(domain:example.com)`: the URL's host or a subdomain; `domain:*.example.com`:
//!   subdomains only.
//! - `mcp__server` and `mcp__server__*` cover the server's tools, `mcp__server__get_*` those
//!   starting so, `mcp__server__tool` that one.
//! - Other tools (`Task`, `WebSearch`, …) take no specifier but `(*)`.

mod decide;
mod error;
mod glob;
mod policy;
mod request;
mod rule;
mod shell;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use decide::{Decision, decide};
pub use error::{Error, List, MAX_RULE_BYTES, MAX_RULES};
pub use policy::Policy;
pub use rule::Rule;
