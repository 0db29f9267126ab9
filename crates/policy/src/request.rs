//! One tool use as the rules see it: the tool's name, and what its input names (the command's
//! parts, the file's path, the URL's host), read once.

use std::path::Path;

use serde_json::Value;

use crate::glob;
use crate::shell::{self, Command};

/// A tool use, read from the tool's name and JSON input.
pub(crate) struct Request<'a> {
    pub tool: &'a str,
    /// The project directory's segments, as relative paths and patterns are resolved against.
    pub project: Vec<String>,
    /// `Bash`: the command's parts.
    pub command: Option<Command>,
    /// `Bash`: the parts as deny rules see them (`Command::deny_texts`).
    pub deny_texts: Vec<String>,
    /// File tools: the path's segments, absolute and normalized.
    pub path: Option<Vec<String>>,
    /// `WebFetch`: the URL's host, lowercase.
    pub host: Option<String>,
}

impl<'a> Request<'a> {
    pub fn new(tool: &'a str, input: &Value, project_dir: &Path) -> Self {
        let project = glob::normalize(Path::new("/"), project_dir).unwrap_or_default();
        let text = |key: &str| input.get(key).and_then(Value::as_str);
        let path_key = match tool {
            "Read" | "Edit" | "Write" | "MultiEdit" => Some("file_path"),
            "NotebookEdit" | "NotebookRead" => Some("notebook_path"),
            "Grep" | "Glob" | "LS" => Some("path"),
            _ => None,
        };
        let path = path_key.and_then(|key| match text(key) {
            Some("") => None,
            Some(path) => glob::normalize(project_dir, Path::new(path)),
            // A search with no path searches the project.
            None if key == "path" => Some(project.clone()),
            None => None,
        });
        let command = (tool == "Bash")
            .then(|| text("command").map(shell::parse))
            .flatten();
        Self {
            tool,
            deny_texts: command
                .as_ref()
                .map(Command::deny_texts)
                .unwrap_or_default(),
            command,
            host: (tool == "WebFetch")
                .then(|| text("url").and_then(host_of))
                .flatten(),
            project,
            path,
        }
    }
}

/// The host of an absolute URL, lowercase, without port or trailing dot; `None` when it has
/// none or is not a plain host name or address.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    // Browsers end the authority at `\` too: `https://evil.com\@example.com` is evil.com.
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, _) = bracketed.split_once(']')?;
        if !address
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        address
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let plain = host.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    (plain || (host.contains(':') && !host.is_empty())).then_some(host)
}
