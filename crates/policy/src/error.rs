//! Why a rule or a policy is refused, in words shown to the member who wrote it, and the limits
//! those words name.

use std::fmt;

/// Rules per list (`allow`, `deny`) at most.
pub const MAX_RULES: usize = 200;

/// Bytes in one rule at most.
pub const MAX_RULE_BYTES: usize = 1024;

/// How much of a member's own text an error repeats back.
const ECHO_CHARS: usize = 40;

/// One of a policy's two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    Allow,
    Deny,
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// A rule or a policy that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("rule is empty")]
    Empty,
    #[error("rule is {len} bytes, at most {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("rule contains a control character (a newline or tab)")]
    ControlCharacter,
    #[error("`{name}` is not a tool name: write one like `Bash`, `Edit` or `mcp__server__tool`")]
    ToolName { name: String },
    #[error("missing `)` at the end")]
    MissingParen,
    #[error("`{tool}()` is empty: write `{tool}` to match any use")]
    EmptySpecifier { tool: String },
    #[error("`{tool}` takes no `(...)` here: write `{tool}` to match any use")]
    NoSpecifier { tool: String },
    #[error("in a Bash rule `*` only works as `:*` at the end, as in `Bash(npm run:*)`")]
    BashWildcard,
    #[error(
        "a Bash rule names one command, without `&&`, `;`, `|`, `$(...)`, redirections or open quotes"
    )]
    BashCompound,
    #[error(
        "`~` paths are not supported: write the absolute path, as in `Read(//home/me/.ssh/**)`"
    )]
    HomePath,
    #[error("path patterns cannot use `..`")]
    ParentDir,
    #[error("path pattern is empty")]
    EmptyPath,
    #[error("WebFetch rules take `domain:HOST`, as in `WebFetch(domain:example.com)`")]
    WebFetchSpecifier,
    #[error("`{domain}` is not a domain name")]
    Domain { domain: String },
    #[error("too many {list} rules: {count}, at most {limit}")]
    TooManyRules {
        list: List,
        count: usize,
        limit: usize,
    },
    /// A rule of a policy refused: which list, its position (from 1) and why.
    #[error("{list} rule {number}: {source}")]
    InList {
        list: List,
        number: usize,
        source: Box<Error>,
    },
}

/// The start of a member's text, enough to recognise it in an error.
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
