//! The shape of the code: dependencies between crates point down (no service or gateway crate
//! depends on another service's crate: they talk through `proto/`), and no crate has a cycle
//! between its modules (a file that a module's code uses never uses that module back).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// No service or gateway crate depends on another service's crate.
#[test]
fn crates_depend_downwards() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(covibe_testkit::workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = [
        "covibe-auth",
        "covibe-team",
        "covibe-orchestrator",
        "covibe-vm-connector",
        "covibe-preview",
        "covibe-gateway",
    ];
    let mut checked = 0;
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let is_service = services.contains(&name);
        let is_base = name == "covibe-proto"
            || package["manifest_path"]
                .as_str()
                .unwrap()
                .contains("/crates/");
        if !(is_service || is_base) {
            continue;
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            let dep = dep["name"].as_str().unwrap();
            assert!(
                !services.contains(&dep),
                "{name} depends on {dep}: call it through proto/ instead"
            );
        }
    }
    assert!(checked >= 13, "only {checked} crates checked");
}

/// Every crate of the workspace: no cycle between its modules.
#[test]
fn no_module_cycles_in_any_crate() {
    let root = covibe_testkit::workspace_root();
    let mut crates = 0;
    let mut found: Vec<String> = Vec::new();
    for dir in ["proto", "gateway", "vm-agent", "covibe", "bench"]
        .iter()
        .map(|d| root.join(d))
        .chain(children(&root.join("crates")))
        .chain(children(&root.join("services")))
    {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        crates += 1;
        let graph = Graph::of(&src);
        if let Some(cycle) = graph.cycle() {
            found.push(format!(
                "{}: {} (modules tangled together: {:?})",
                dir.display(),
                cycle.join(" -> "),
                graph.tangles()
            ));
        }
    }
    assert!(crates >= 17, "only {crates} crates checked");
    assert!(
        found.is_empty(),
        "modules in a cycle:\n{}",
        found.join("\n")
    );
}

/// The check itself finds a planted cycle, through `use`, a `super::` path and a re-export.
#[test]
fn a_planted_cycle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "mod model;\nmod store;\npub use model::Thing;\n");
    write("model.rs", "pub struct Thing;\n");
    write(
        "store/mod.rs",
        "mod sql;\nuse crate::Thing;\npub fn save(_: Thing) {}\n",
    );
    write(
        "store/sql.rs",
        "pub fn run() { super::save(crate::Thing); }\n",
    );
    assert_eq!(
        Graph::of(src).cycle(),
        None,
        "child to parent alone is no cycle"
    );
    write(
        "store/mod.rs",
        "mod sql;\nuse crate::Thing;\npub fn save(_: Thing) { sql::run() }\n",
    );
    assert_eq!(
        Graph::of(src).cycle(),
        Some(vec![
            "store".to_owned(),
            "store::sql".to_owned(),
            "store".to_owned()
        ])
    );
    write(
        "store/mod.rs",
        "mod sql;\nuse crate::Thing;\npub fn save(_: Thing) {}\n",
    );
    write(
        "model.rs",
        "pub struct Thing;\nfn f() { crate::store::save(Thing) }\n",
    );
    let cycle = Graph::of(src).cycle().unwrap();
    assert!(
        cycle.contains(&"model".to_owned()) && cycle.contains(&"store".to_owned()),
        "{cycle:?}"
    );
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// The modules of one crate (one per file) and which use which.
struct Graph {
    /// Module path (`""` for the root, `a::b`) to the names it re-exports (`pub use`), each with
    /// the path it re-exports.
    reexports: BTreeMap<String, BTreeMap<String, String>>,
    modules: BTreeSet<String>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn of(src: &Path) -> Self {
        let mut files = Vec::new();
        collect(src, src, &mut files);
        let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
        let mut graph = Self {
            reexports: BTreeMap::new(),
            modules,
            edges: BTreeMap::new(),
        };
        let mut uses = Vec::new();
        for (module, path) in &files {
            let text = code_of(&std::fs::read_to_string(path).unwrap());
            for statement in use_statements(&text) {
                let public = statement.starts_with("pub");
                let tree = statement
                    .split_once("use ")
                    .map_or("", |(_, t)| t)
                    .trim_end_matches(';');
                for full in expand(tree) {
                    if public {
                        let name = full.rsplit("::").next().unwrap_or_default().to_owned();
                        let name = name.rsplit(" as ").next().unwrap_or_default().to_owned();
                        let target = full.split(" as ").next().unwrap_or_default().to_owned();
                        graph
                            .reexports
                            .entry(module.clone())
                            .or_default()
                            .insert(name, absolute(module, &target));
                    } else {
                        uses.push((
                            module.clone(),
                            full.split(" as ").next().unwrap_or_default().to_owned(),
                        ));
                    }
                }
            }
            for path in inline_paths(&text) {
                uses.push((module.clone(), path));
            }
            // Paths through a child module, written relative to this one (`rooms::Rooms`).
            let prefix = if module.is_empty() {
                String::new()
            } else {
                format!("{module}::")
            };
            for child in graph
                .modules
                .iter()
                .filter_map(|m| m.strip_prefix(prefix.as_str()))
            {
                if child.is_empty() || child.contains("::") {
                    continue;
                }
                if mentions(&text, &format!("{child}::")) {
                    uses.push((module.clone(), format!("self::{child}")));
                }
            }
        }
        for (module, path) in uses {
            let relative_child = {
                let first = path.split("::").next().unwrap_or_default();
                let child = if module.is_empty() {
                    first.to_owned()
                } else {
                    format!("{module}::{first}")
                };
                graph.modules.contains(&child)
            };
            let path = if relative_child {
                format!("self::{path}")
            } else {
                path
            };
            if !(path.starts_with("crate::")
                || path.starts_with("super::")
                || path.starts_with("self::"))
            {
                continue;
            }
            let target = graph.resolve(&absolute(&module, &path), 0);
            if target != module && !target.is_empty() || (target.is_empty() && !module.is_empty()) {
                graph.edges.entry(module).or_default().insert(target);
            }
        }
        graph
    }

    /// The module a crate-absolute path (`a::b::Item`, no `crate::`) lands in.
    fn resolve(&self, path: &str, depth: usize) -> String {
        let mut module = String::new();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        for (i, segment) in segments.iter().enumerate() {
            let child = if module.is_empty() {
                (*segment).to_owned()
            } else {
                format!("{module}::{segment}")
            };
            if self.modules.contains(&child) {
                module = child;
                continue;
            }
            // An item re-exported here: it lives where it was re-exported from.
            if depth < 8
                && let Some(target) = self.reexports.get(&module).and_then(|r| r.get(*segment))
            {
                let rest = segments[i + 1..].join("::");
                let target = if rest.is_empty() {
                    target.clone()
                } else {
                    format!("{target}::{rest}")
                };
                return self.resolve(&target, depth + 1);
            }
            break;
        }
        module
    }

    /// The groups of modules that reach each other (strongly connected, more than one).
    fn tangles(&self) -> Vec<Vec<String>> {
        let reach = |from: &String| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.clone()];
            while let Some(m) = stack.pop() {
                for next in self.edges.get(&m).into_iter().flatten() {
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&String, BTreeSet<String>> =
            self.modules.iter().map(|m| (m, reach(m))).collect();
        let mut groups: Vec<Vec<String>> = Vec::new();
        for m in &self.modules {
            if groups.iter().any(|g| g.contains(m)) || !reaches[m].contains(m) {
                continue;
            }
            let group: Vec<String> = self
                .modules
                .iter()
                .filter(|o| reaches[m].contains(*o) && reaches[*o].contains(m))
                .map(|o| {
                    if o.is_empty() {
                        "crate".to_owned()
                    } else {
                        o.clone()
                    }
                })
                .collect();
            groups.push(group);
        }
        groups
    }

    /// A cycle between modules, if there is one (as the modules along it, the first repeated).
    fn cycle(&self) -> Option<Vec<String>> {
        fn visit(
            graph: &Graph,
            module: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|m| m == module) {
                let mut cycle = path[at..].to_vec();
                cycle.push(module.to_owned());
                return Some(cycle);
            }
            if done.contains(module) {
                return None;
            }
            path.push(module.to_owned());
            for next in graph.edges.get(module).into_iter().flatten() {
                if let Some(cycle) = visit(graph, next, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(module.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for module in &self.modules {
            if let Some(cycle) = visit(self, module, &mut Vec::new(), &mut done) {
                return Some(
                    cycle
                        .iter()
                        .map(|m| {
                            if m.is_empty() {
                                "crate".to_owned()
                            } else {
                                m.clone()
                            }
                        })
                        .collect(),
                );
            }
        }
        None
    }
}

/// Every `.rs` file under `dir` with its module path.
fn collect(src: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(src, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        // Binaries under src/bin are crates of their own.
        if parts.first().is_some_and(|p| p == "bin") {
            continue;
        }
        out.push((parts.join("::"), path));
    }
}

/// The file's code: no comments, no string contents, and nothing from its tests module on.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Each `use ...;` statement, on one line.
fn use_statements(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let from = &rest[at..];
        let end = from.find(';').unwrap_or(from.len());
        out.push(
            from[..=end.min(from.len() - 1)]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
        rest = &from[end.min(from.len())..];
    }
    out
}

/// Where the next `use` or `pub ... use` statement starts (at the beginning of a line).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let statement = trimmed.starts_with("use ")
            || (trimmed.starts_with("pub") && trimmed.split_whitespace().nth(1) == Some("use"));
        if statement {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

/// The paths of a use tree: `a::{b, c::{d, e}}` is `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p).into_iter().map(move |e| {
                if e == "self" {
                    prefix.trim_end_matches("::").to_owned()
                } else {
                    format!("{prefix}{e}")
                }
            })
        })
        .collect()
}

/// `crate::a::b` and `super::x` paths written in code (not in `use`).
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(keyword) {
            let start = from + at;
            from = start + keyword.len();
            if start > 0
                && (bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || bytes[start - 1] == b'$')
            {
                continue;
            }
            // Skip the ones inside a use statement (counted there).
            if inside_use(code, start) {
                continue;
            }
            // `super::` inside an inline `mod x { ... }` is this file's own module.
            let keyword = if keyword == "super::" && inside_inline_mod(code, start) {
                "self::"
            } else {
                keyword
            };
            let end = code[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| start + e);
            let path = code[start..end].trim_end_matches(':');
            out.push(format!(
                "{keyword}{}",
                &path[path.find("::").map_or(0, |i| i + 2)..]
            ));
        }
    }
    out
}

/// Whether `at` is inside an inline `mod name { ... }` block of the file.
fn inside_inline_mod(code: &str, at: usize) -> bool {
    let mut from = 0;
    while let Some(found) = code[from..].find("mod ") {
        let start = from + found;
        from = start + 4;
        let rest = &code[from..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_end..].trim_start();
        if name_end == 0 || !after.starts_with('{') {
            continue;
        }
        let open = from + name_end + (rest[name_end..].len() - after.len());
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        if (open..open + i).contains(&at) {
                            return true;
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    false
}

/// Whether `at` is inside a `use` statement (counted with the statements).
fn inside_use(code: &str, at: usize) -> bool {
    let statement_start = code[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
    let head: Vec<&str> = code[statement_start..at]
        .split_whitespace()
        .take(2)
        .collect();
    head.first() == Some(&"use")
        || (head.first().is_some_and(|w| w.starts_with("pub")) && head.get(1) == Some(&"use"))
}

/// Whether `code` has `needle` as a path start (not the tail of a longer path or name).
fn mentions(code: &str, needle: &str) -> bool {
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find(needle) {
        let start = from + at;
        from = start + needle.len();
        let before = if start == 0 { b' ' } else { bytes[start - 1] };
        let in_path = before.is_ascii_alphanumeric() || before == b'_' || before == b':';
        if !(in_path || inside_use(code, start)) {
            return true;
        }
    }
    false
}

/// A path from `module` made crate-absolute (without `crate::`).
fn absolute(module: &str, path: &str) -> String {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut segments = path.split("::").peekable();
    match segments.peek() {
        Some(&"crate") => {
            base.clear();
            segments.next();
        }
        Some(&"self") => {
            segments.next();
        }
        Some(&"super") => {
            while segments.peek() == Some(&"super") {
                segments.next();
                base.pop();
            }
        }
        // A path relative to this module (`mod x; use x::Y;`).
        _ => {}
    }
    base.extend(segments);
    base.join("::")
}
