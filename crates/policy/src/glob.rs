//! Gitignore-style path patterns, matched against paths already made absolute and normalized.
//!
//! `**` as a whole segment crosses directories (zero or more of them); `*` matches within one
//! segment, `?` one character, `[abc]`, `[a-z]`, `[!a]` one of a set; `\` makes the next
//! character literal. As in gitignore, a pattern that matches a directory matches everything
//! under it, and a pattern with no `/` in it matches at any depth.

use std::path::{Component, Path};

/// Paths longer than this (bytes, Linux's `PATH_MAX`) cannot be opened, and are not matched.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// `**`: any number of directories, none included.
    Any,
    /// A glob within one path segment.
    Glob(Vec<char>),
}

/// A pattern's segments, relative to the directory it is anchored at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    segments: Vec<Segment>,
}

impl Glob {
    /// The pattern `body` (no leading `/`, no `..`, no empty segments checked by the caller);
    /// `anywhere` puts it at any depth (a gitignore pattern with no `/`).
    pub fn new(body: &str, anywhere: bool) -> Self {
        let mut segments = Vec::new();
        if anywhere {
            segments.push(Segment::Any);
        }
        for segment in body.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if segment == "**" {
                if segments.last() != Some(&Segment::Any) {
                    segments.push(Segment::Any);
                }
            } else {
                segments.push(Segment::Glob(segment.chars().collect()));
            }
        }
        // `dir/`: what is under the directory.
        if body.ends_with('/') && segments.last() != Some(&Segment::Any) {
            segments.push(Segment::Any);
        }
        Self { segments }
    }

    /// Whether `path` (segments relative to the anchor), or a directory above it, matches.
    pub fn matches(&self, path: &[String]) -> bool {
        if path.is_empty() {
            return false;
        }
        // A trailing `**` is what is under a directory: one segment or more.
        let (segments, under) = match self.segments.split_last() {
            Some((Segment::Any, rest)) => (rest, true),
            _ => (self.segments.as_slice(), false),
        };
        // reach[j]: the pattern's segments so far can match path[..j].
        let mut reach = vec![false; path.len() + 1];
        reach[0] = true;
        for segment in segments {
            let mut next = vec![false; path.len() + 1];
            match segment {
                Segment::Any => {
                    let mut any = false;
                    for j in 0..=path.len() {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                Segment::Glob(glob) => {
                    for j in 0..path.len() {
                        if reach[j] && matches_segment(glob, &path[j]) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        if under {
            reach[..path.len()].iter().any(|&r| r)
        } else {
            reach[1..].iter().any(|&r| r)
        }
    }
}

/// A path's segments, made absolute against `base` and with `.` and `..` resolved by their
/// text (symbolic links are not followed: there is no file system here). `None` when too long.
pub(crate) fn normalize(base: &Path, path: &Path) -> Option<Vec<String>> {
    let joined = base.join(path);
    if joined.as_os_str().len() > MAX_PATH_BYTES {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for component in joined.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name.to_string_lossy().into_owned()),
        }
    }
    Some(out)
}

/// One path segment against one glob segment.
fn matches_segment(glob: &[char], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut g, mut n) = (0, 0);
    // Where to resume after the last `*`: the glob after it, and the name position it covers to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g + 1, n));
                g += 1;
                continue;
            }
            Some(&c) => {
                let (matched, width) = one(glob, g, c, name[n]);
                if matched {
                    g += width;
                    n += 1;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((after, covered)) => {
                g = after;
                n = covered + 1;
                star = Some((after, covered + 1));
            }
            None => return false,
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

/// Whether the glob element at `at` (starting with `c`) matches `ch`, and its width.
fn one(glob: &[char], at: usize, c: char, ch: char) -> (bool, usize) {
    match c {
        '?' => (true, 1),
        '\\' => match glob.get(at + 1) {
            Some(&literal) => (literal == ch, 2),
            None => (ch == '\\', 1),
        },
        '[' => class(glob, at, ch).unwrap_or((ch == '[', 1)),
        _ => (c == ch, 1),
    }
}

/// `[…]` at `at`: whether `ch` is in it, and its width; `None` when it never closes.
fn class(glob: &[char], at: usize, ch: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negated = matches!(glob.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let c = *glob.get(i)?;
        if c == ']' && !first {
            return Some((found != negated, i + 1 - at));
        }
        first = false;
        if glob.get(i + 1) == Some(&'-') && glob.get(i + 2).is_some_and(|&e| e != ']') {
            let end = *glob.get(i + 2)?;
            found |= c <= ch && ch <= end;
            i += 3;
        } else {
            found |= c == ch;
            i += 1;
        }
    }
}
