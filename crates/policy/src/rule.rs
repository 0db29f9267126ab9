//! One permission rule in Claude Code's syntax, `Tool` or `Tool(specifier)`: parsed, printed
//! back as written, and matched against one tool use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, MAX_RULE_BYTES, clip};
use crate::glob::Glob;
use crate::request::Request;
use crate::shell;

/// The tools whose rules name a file, and the tools each rule's name covers: as in Claude Code,
/// an `Edit` rule covers every tool that edits files, a `Read` rule the tools that read them.
const PATH_TOOLS: &[(&str, &[&str])] = &[
    ("Edit", &["Edit", "Write", "MultiEdit", "NotebookEdit"]),
    ("Write", &["Write"]),
    ("MultiEdit", &["MultiEdit"]),
    ("NotebookEdit", &["NotebookEdit"]),
    ("Read", &["Read", "Grep", "Glob", "LS", "NotebookRead"]),
];

/// A permission rule: `Bash`, `Bash(git diff:*)`, `Edit(src/**)`, `WebFetch(domain:x.com)`,
/// `mcp__server`. Parse with [`str::parse`]; `Display` prints it as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    tool: String,
    specifier: Option<String>,
    matcher: Matcher,
}

/// What a rule matches within its tool (or tools).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// Every use: `Bash`, `Read`, `Edit(*)`.
    Any,
    /// MCP tools: `mcp__server` (and its tools), `mcp__server__tool`, `mcp__server__get_*`.
    Mcp(McpName),
    /// One simple command: exactly, or it and whatever follows (`:*`).
    Command { text: String, prefix: bool },
    /// A path pattern.
    Path(PathPattern),
    /// `domain:example.com` (and its subdomains; kept lowercase) or `domain:*.example.com` (subdomains only).
    Domain {
        domain: String,
        subdomains_only: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum McpName {
    /// `mcp__server`, `mcp__server__*`: the server's tools.
    Server(String),
    /// `mcp__server__get_*`: tools whose names start so.
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PathPattern {
    anchor: Anchor,
    glob: Glob,
}

/// Where a path pattern starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// `//path`: the file system's root.
    Root,
    /// `path`, `./path`: the project directory.
    Project,
    /// `/path`: the project directory for Claude Code (relative to the settings file), the
    /// root to many readers; a deny rule applies under either reading, an allow rule only under
    /// Claude Code's.
    Slash,
}

/// Which kind of rule is being matched: deny rules read ambiguous rules widely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Allow,
    Deny,
}

impl Rule {
    /// The tool name as written (`Bash`, `mcp__github`).
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// What is inside the parentheses, if any.
    pub fn specifier(&self) -> Option<&str> {
        self.specifier.as_deref()
    }

    /// Whether the rule covers the request's tool at all.
    fn covers(&self, tool: &str) -> bool {
        match &self.matcher {
            Matcher::Mcp(McpName::Server(server)) => tool
                .strip_prefix(server.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("__")),
            Matcher::Mcp(McpName::Prefix(prefix)) => tool.starts_with(prefix.as_str()),
            Matcher::Mcp(McpName::Exact(name)) => tool == name,
            _ => match PATH_TOOLS.iter().find(|(name, _)| *name == self.tool) {
                Some((_, tools)) => tools.contains(&tool),
                None => tool == self.tool,
            },
        }
    }

    /// Whether the rule applies to every use of the request's tool.
    pub(crate) fn covers_any_use(&self, request: &Request<'_>) -> bool {
        matches!(self.matcher, Matcher::Any | Matcher::Mcp(_)) && self.covers(request.tool)
    }

    /// Whether this rule, in a deny list, refuses the request: a command rule when any part of
    /// the command matches.
    pub(crate) fn denies(&self, request: &Request<'_>) -> bool {
        if !self.covers(request.tool) {
            return false;
        }
        match &self.matcher {
            Matcher::Command { .. } => request
                .deny_texts
                .iter()
                .any(|text| self.matches_command(text)),
            _ => self.matches(request, Mode::Deny),
        }
    }

    /// Whether this rule, in an allow list, allows the request; command rules are matched per
    /// part by the caller (`matches_command`), never here.
    pub(crate) fn allows(&self, request: &Request<'_>) -> bool {
        self.covers(request.tool) && self.matches(request, Mode::Allow)
    }

    /// Whether a command rule matches one simple command (its words joined by single spaces).
    pub(crate) fn matches_command(&self, command: &str) -> bool {
        let Matcher::Command { text, prefix } = &self.matcher else {
            return false;
        };
        if command == text {
            return true;
        }
        // `git diff:*` is `git diff` and what follows it, `git diff-tree` not: a prefix that
        // ends inside a word needs a space after it.
        *prefix
            && command.strip_prefix(text.as_str()).is_some_and(|rest| {
                rest.starts_with(' ') || text.ends_with(|c: char| !c.is_alphanumeric())
            })
    }

    fn matches(&self, request: &Request<'_>, mode: Mode) -> bool {
        match &self.matcher {
            Matcher::Any | Matcher::Mcp(_) => true,
            Matcher::Command { .. } => false,
            Matcher::Path(pattern) => request
                .path
                .as_ref()
                .is_some_and(|path| pattern.matches(path, &request.project, mode)),
            Matcher::Domain {
                domain,
                subdomains_only,
            } => request.host.as_ref().is_some_and(|host| {
                let under = host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|head| head.ends_with('.'));
                under || (!subdomains_only && host == domain)
            }),
        }
    }
}

impl PathPattern {
    fn matches(&self, path: &[String], project: &[String], mode: Mode) -> bool {
        let under = |base: &[String]| {
            path.strip_prefix(base)
                .is_some_and(|rest| self.glob.matches(rest))
        };
        match (self.anchor, mode) {
            (Anchor::Root, _) => under(&[]),
            (Anchor::Project, _) | (Anchor::Slash, Mode::Allow) => under(project),
            (Anchor::Slash, Mode::Deny) => under(project) || under(&[]),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.specifier {
            Some(specifier) => write!(f, "{}({specifier})", self.tool),
            None => f.write_str(&self.tool),
        }
    }
}

impl FromStr for Rule {
    type Err = Error;

    /// Parses a rule; whitespace around it is dropped.
    fn from_str(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Empty);
        }
        if text.len() > MAX_RULE_BYTES {
            return Err(Error::TooLong {
                len: text.len(),
                limit: MAX_RULE_BYTES,
            });
        }
        if text.chars().any(char::is_control) {
            return Err(Error::ControlCharacter);
        }
        let (tool, specifier) = match text.split_once('(') {
            Some((tool, rest)) => {
                let specifier = rest.strip_suffix(')').ok_or(Error::MissingParen)?;
                (tool, Some(specifier))
            }
            None => (text, None),
        };
        let matcher = match specifier {
            None => matcher_of_name(tool)?,
            Some(specifier) => {
                matcher_of_name(tool)?;
                if tool.starts_with("mcp__") {
                    return Err(Error::NoSpecifier { tool: clip(tool) });
                }
                matcher_of_specifier(tool, specifier)?
            }
        };
        Ok(Self {
            tool: tool.to_owned(),
            specifier: specifier.map(str::to_owned),
            matcher,
        })
    }
}

/// The matcher of a rule with no specifier, checking the tool's name.
fn matcher_of_name(tool: &str) -> Result<Matcher, Error> {
    let bad = || Error::ToolName { name: clip(tool) };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(rest) = tool.strip_prefix("mcp__") {
        let (server, name) = match rest.split_once("__") {
            Some((server, name)) => (server, Some(name)),
            None => (rest, None),
        };
        if !word(server) {
            return Err(bad());
        }
        let server = format!("mcp__{server}");
        return Ok(Matcher::Mcp(match name {
            None | Some("*") => McpName::Server(server),
            Some(name) => match name.strip_suffix('*') {
                Some(start) if word(start) => McpName::Prefix(format!("{server}__{start}")),
                None if word(name) => McpName::Exact(tool.to_owned()),
                _ => return Err(bad()),
            },
        }));
    }
    let mut chars = tool.chars();
    if chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(Matcher::Any)
    } else {
        Err(bad())
    }
}

/// The matcher of `tool(specifier)`.
fn matcher_of_specifier(tool: &str, specifier: &str) -> Result<Matcher, Error> {
    if specifier.trim().is_empty() {
        return Err(Error::EmptySpecifier {
            tool: tool.to_owned(),
        });
    }
    if specifier.trim() == "*" {
        return Ok(Matcher::Any);
    }
    if tool == "Bash" {
        return command_matcher(specifier, tool);
    }
    if tool == "WebFetch" {
        return domain_matcher(specifier);
    }
    if PATH_TOOLS.iter().any(|(name, _)| *name == tool) {
        return path_matcher(specifier);
    }
    Err(Error::NoSpecifier {
        tool: tool.to_owned(),
    })
}

fn command_matcher(specifier: &str, tool: &str) -> Result<Matcher, Error> {
    let (body, prefix) = match specifier.strip_suffix(":*") {
        Some(body) => (body, true),
        None => (specifier, false),
    };
    if body.contains('*') {
        return Err(Error::BashWildcard);
    }
    let command = shell::parse(body);
    if command.opaque || command.parts.len() > 1 {
        return Err(Error::BashCompound);
    }
    match command.texts().next() {
        Some(text) => Ok(Matcher::Command { text, prefix }),
        None => Err(Error::EmptySpecifier {
            tool: tool.to_owned(),
        }),
    }
}

fn domain_matcher(specifier: &str) -> Result<Matcher, Error> {
    let domain = specifier
        .strip_prefix("domain:")
        .ok_or(Error::WebFetchSpecifier)?;
    let (name, subdomains_only) = match domain.strip_prefix("*.") {
        Some(name) => (name, true),
        None => (domain, false),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(Error::Domain {
            domain: clip(domain),
        });
    }
    Ok(Matcher::Domain {
        domain: name.to_ascii_lowercase(),
        subdomains_only,
    })
}

fn path_matcher(specifier: &str) -> Result<Matcher, Error> {
    if specifier.starts_with('~') {
        return Err(Error::HomePath);
    }
    let (anchor, body) = if let Some(rest) = specifier.strip_prefix("//") {
        (Anchor::Root, rest.trim_start_matches('/'))
    } else if let Some(rest) = specifier.strip_prefix('/') {
        (Anchor::Slash, rest)
    } else {
        (Anchor::Project, specifier)
    };
    if body.split('/').any(|segment| segment == "..") {
        return Err(Error::ParentDir);
    }
    if body
        .split('/')
        .all(|segment| segment.is_empty() || segment == ".")
    {
        return Err(Error::EmptyPath);
    }
    // As in gitignore: a pattern with no `/` but at its end matches at any depth.
    let anywhere = anchor == Anchor::Project && !body.trim_end_matches('/').contains('/');
    Ok(Matcher::Path(PathPattern {
        anchor,
        glob: Glob::new(body, anywhere),
    }))
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
