//! A Bash command split into the simple commands it runs, so that a rule is checked against each
//! of them and never against the first alone.
//!
//! This is not a shell: it reads quotes (`'…'`, `"…"`, `$'…'`), backslashes, the operators that
//! start another command (`&&`, `||`, `;`, `|`, `|&`, `&`, newlines), subshells (`( … )`),
//! command and process substitutions (`$( … )`, backticks, `<( … )`, `>( … )`, whose commands
//! are collected too) and redirections. Whatever it cannot vouch for makes the command
//! `opaque`: an allow rule never allows an opaque command (it is asked about instead), while
//! deny rules are still checked against every part found.

/// Substitutions nested deeper than this are not read further (and the command is opaque).
const MAX_DEPTH: usize = 16;

/// Words before the command that do not change which program runs (for deny rules only).
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "env", "command", "builtin", "exec", "nohup", "time", "nice", "timeout",
    "stdbuf", "xargs", "!", "{", "}", "if", "then", "elif", "else", "do", "while", "until",
];

/// Programs that run a script given as an argument (`-c`).
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash", "ksh", "fish"];

/// A command line as the simple commands it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Command {
    /// Every simple command found (those inside substitutions included), as its words with the
    /// quotes removed and harmless redirections (`2>&1`, `>/dev/null`) left out.
    pub parts: Vec<Vec<String>>,
    /// Something an allow rule cannot vouch for: a substitution, a subshell, a redirection to
    /// a file, a here-document, an open quote.
    pub opaque: bool,
}

impl Command {
    /// Each part as one line: its words joined by single spaces.
    pub fn texts(&self) -> impl Iterator<Item = String> + '_ {
        self.parts.iter().map(|words| words.join(" "))
    }

    /// Each part as deny rules see it: as written, and without the variable assignments and
    /// wrappers (`sudo`, `env`, `timeout 5`, `then`, …) in front of the program.
    pub fn deny_texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for words in &self.parts {
            out.push(words.join(" "));
            let mut rest: &[String] = words;
            while let Some((first, tail)) = rest.split_first() {
                if is_assignment(first) {
                    rest = tail;
                } else if WRAPPERS.contains(&first.as_str()) {
                    rest = tail;
                    // The wrapper's own options and numbers (`nice -n 10`, `timeout 5s`).
                    while let Some((word, tail)) = rest.split_first() {
                        if word.starts_with('-') || word.starts_with(|c: char| c.is_ascii_digit()) {
                            rest = tail;
                        } else {
                            break;
                        }
                    }
                } else {
                    break;
                }
                if !rest.is_empty() {
                    out.push(rest.join(" "));
                }
            }
        }
        out
    }
}

/// `NAME=value` before a command.
fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a command line into its simple commands.
pub(crate) fn parse(text: &str) -> Command {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Reader {
        chars: &chars,
        at: 0,
        out: Command::default(),
    };
    reader.list(0, None);
    reader.out
}

/// What a redirection's target may be without making the command opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirect {
    /// `>&2`, `2<&0`, `>&-`: a descriptor copied or closed.
    Duplicate,
    /// `>`, `>>`, `<`, `&>`: a file, harmless only when it is `/dev/null`.
    File,
}

struct Reader<'a> {
    chars: &'a [char],
    at: usize,
    out: Command,
}

/// The part being read.
#[derive(Default)]
struct Part {
    words: Vec<String>,
    word: String,
    in_word: bool,
    quoted: bool,
    redirect: Option<Redirect>,
}

impl Reader<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    /// Reads commands until `closer` (consumed) or the end.
    fn list(&mut self, depth: usize, closer: Option<char>) {
        let mut part = Part::default();
        while let Some(c) = self.peek(0) {
            if Some(c) == closer {
                self.at += 1;
                self.end_part(&mut part, depth);
                return;
            }
            match c {
                ' ' | '\t' => {
                    self.at += 1;
                    self.end_word(&mut part);
                }
                '\n' | '\r' | ';' | '|' => {
                    self.at += 1;
                    self.end_part(&mut part, depth);
                }
                '&' if self.peek(1) == Some('>') => {
                    // `&>file`, `&>>file`: stdout and stderr to a file.
                    self.end_word(&mut part);
                    self.at += 2;
                    if self.peek(0) == Some('>') {
                        self.at += 1;
                    }
                    self.redirect(&mut part, Redirect::File);
                }
                '&' => {
                    self.at += 1;
                    self.end_part(&mut part, depth);
                }
                '(' => {
                    self.at += 1;
                    self.end_part(&mut part, depth);
                    self.out.opaque = true;
                    self.nested(depth, ')');
                }
                ')' => {
                    self.at += 1;
                    self.end_part(&mut part, depth);
                    self.out.opaque = true;
                }
                '<' | '>' => self.redirection(depth, &mut part),
                '$' if self.peek(1) == Some('(') => {
                    self.at += 2;
                    self.substitution(depth, ')', &mut part);
                }
                '$' if self.peek(1) == Some('\'') => {
                    self.at += 2;
                    self.ansi_c_quote(&mut part);
                }
                '$' if self.peek(1) == Some('"') => {
                    self.at += 1;
                }
                '`' => {
                    self.at += 1;
                    self.substitution(depth, '`', &mut part);
                }
                '\'' => {
                    self.at += 1;
                    self.single_quote(&mut part);
                }
                '"' => {
                    self.at += 1;
                    self.double_quote(depth, closer, &mut part);
                }
                '\\' => {
                    self.at += 1;
                    match self.peek(0) {
                        // A line continuation.
                        Some('\n') => self.at += 1,
                        Some(next) => {
                            self.at += 1;
                            push(&mut part, next, true);
                        }
                        None => push(&mut part, '\\', true),
                    }
                }
                _ => {
                    self.at += 1;
                    push(&mut part, c, false);
                }
            }
        }
        if closer.is_some() {
            // Never closed.
            self.out.opaque = true;
        }
        self.end_part(&mut part, depth);
    }

    /// The commands inside `( … )`, `$( … )`, backticks: collected, and the line opaque.
    fn nested(&mut self, depth: usize, closer: char) {
        self.out.opaque = true;
        if depth < MAX_DEPTH {
            self.list(depth + 1, Some(closer));
        } else {
            // Too deep to read: skip to the end.
            self.at = self.chars.len();
        }
    }

    /// A substitution inside a word: its commands collected, a placeholder in the word.
    fn substitution(&mut self, depth: usize, closer: char, part: &mut Part) {
        self.nested(depth, closer);
        part.word.push_str("$(…)");
        part.in_word = true;
        part.quoted = true;
    }

    fn redirection(&mut self, depth: usize, part: &mut Part) {
        // A word of digits right before is the descriptor (`2>`), not an argument.
        if part.in_word && !part.quoted && part.word.chars().all(|c| c.is_ascii_digit()) {
            part.word.clear();
            part.in_word = false;
        } else {
            self.end_word(part);
        }
        if part.redirect.take().is_some() {
            // The one before had no target.
            self.out.opaque = true;
        }
        let first = self.peek(0);
        self.at += 1;
        match (first, self.peek(0)) {
            // Process substitution.
            (_, Some('(')) => {
                self.at += 1;
                self.nested(depth, ')');
                return;
            }
            // Here-documents and here-strings: their text is read as commands, for deny rules.
            (Some('<'), Some('<')) => {
                self.at += 1;
                while matches!(self.peek(0), Some('<' | '-')) {
                    self.at += 1;
                }
                self.out.opaque = true;
                part.redirect = Some(Redirect::File);
                return;
            }
            (_, Some('&')) => {
                self.at += 1;
                part.redirect = Some(Redirect::Duplicate);
                return;
            }
            (_, Some('>' | '|')) => self.at += 1,
            _ => {}
        }
        part.redirect = Some(Redirect::File);
    }

    fn single_quote(&mut self, part: &mut Part) {
        part.in_word = true;
        part.quoted = true;
        while let Some(c) = self.peek(0) {
            self.at += 1;
            if c == '\'' {
                return;
            }
            part.word.push(c);
        }
        self.out.opaque = true;
    }

    fn double_quote(&mut self, depth: usize, closer: Option<char>, part: &mut Part) {
        part.in_word = true;
        part.quoted = true;
        while let Some(c) = self.peek(0) {
            self.at += 1;
            match c {
                '"' => return,
                '\\' => match self.peek(0) {
                    Some('\n') => self.at += 1,
                    Some(next @ ('$' | '`' | '"' | '\\')) => {
                        self.at += 1;
                        part.word.push(next);
                    }
                    _ => part.word.push('\\'),
                },
                '$' if self.peek(0) == Some('(') => {
                    self.at += 1;
                    self.substitution(depth, ')', part);
                }
                // Inside backticks, a backtick ends them even within quotes (near enough).
                '`' if closer == Some('`') => {
                    self.at -= 1;
                    self.out.opaque = true;
                    return;
                }
                '`' => self.substitution(depth, '`', part),
                _ => part.word.push(c),
            }
        }
        self.out.opaque = true;
    }

    /// `$'…'`: backslash escapes decoded (so `$'\x72m'` reads as `rm`), and the line opaque.
    fn ansi_c_quote(&mut self, part: &mut Part) {
        self.out.opaque = true;
        part.in_word = true;
        part.quoted = true;
        while let Some(c) = self.peek(0) {
            self.at += 1;
            match c {
                '\'' => return,
                '\\' => {
                    let Some(e) = self.peek(0) else {
                        part.word.push('\\');
                        return;
                    };
                    self.at += 1;
                    let decoded = match e {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'r' => Some('\r'),
                        'a' => Some('\u{7}'),
                        'b' => Some('\u{8}'),
                        'e' | 'E' => Some('\u{1b}'),
                        'f' => Some('\u{c}'),
                        'v' => Some('\u{b}'),
                        'x' => self.digits(16, 2),
                        'u' => self.digits(16, 4),
                        'U' => self.digits(16, 8),
                        '0'..='7' => {
                            self.at -= 1;
                            self.digits(8, 3)
                        }
                        other => Some(other),
                    };
                    if let Some(d) = decoded {
                        part.word.push(d);
                    }
                }
                _ => part.word.push(c),
            }
        }
    }

    /// Up to `max` digits in `radix`, as a character.
    fn digits(&mut self, radix: u32, max: usize) -> Option<char> {
        let mut value: u32 = 0;
        let mut read = 0;
        while read < max {
            let Some(d) = self.peek(0).and_then(|c| c.to_digit(radix)) else {
                break;
            };
            value = value.saturating_mul(radix).saturating_add(d);
            self.at += 1;
            read += 1;
        }
        if read == 0 {
            return None;
        }
        char::from_u32(value)
    }

    fn end_word(&mut self, part: &mut Part) {
        if !part.in_word {
            return;
        }
        let word = std::mem::take(&mut part.word);
        part.in_word = false;
        part.quoted = false;
        match part.redirect.take() {
            None => part.words.push(word),
            Some(Redirect::Duplicate)
                if word == "-"
                    || (!word.is_empty() && word.chars().all(|c| c.is_ascii_digit())) => {}
            Some(Redirect::File) if word == "/dev/null" => {}
            Some(_) => self.out.opaque = true,
        }
    }

    fn redirect(&mut self, part: &mut Part, kind: Redirect) {
        if part.redirect.replace(kind).is_some() {
            // The one before had no target.
            self.out.opaque = true;
        }
    }

    fn end_part(&mut self, part: &mut Part, depth: usize) {
        self.end_word(part);
        if part.redirect.take().is_some() {
            // A redirection with no target.
            self.out.opaque = true;
        }
        if part.words.is_empty() {
            return;
        }
        let words = std::mem::take(&mut part.words);
        let script = inline_script(&words);
        self.out.parts.push(words);
        // `bash -c '…'`, `eval …`: the script's own commands, for deny rules.
        if let Some(script) = script {
            self.out.opaque = true;
            if depth < MAX_DEPTH {
                let chars: Vec<char> = script.chars().collect();
                let mut inner = Reader {
                    chars: &chars,
                    at: 0,
                    out: Command::default(),
                };
                inner.list(depth + 1, None);
                self.out.parts.extend(inner.out.parts);
            }
        }
    }
}

/// The script a part hands to a shell: `sh -c SCRIPT`, `bash -lc SCRIPT`, `eval WORDS…`.
fn inline_script(words: &[String]) -> Option<String> {
    let start = words
        .iter()
        .position(|w| !is_assignment(w) && !WRAPPERS.contains(&w.as_str()))?;
    let program = words[start].rsplit('/').next().unwrap_or_default();
    let rest = &words[start + 1..];
    if program == "eval" {
        return Some(rest.join(" "));
    }
    if !SHELLS.contains(&program) {
        return None;
    }
    let flag = rest
        .iter()
        .position(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('c'))?;
    rest.get(flag + 1).cloned()
}

fn push(part: &mut Part, c: char, quoted: bool) {
    part.word.push(c);
    part.in_word = true;
    part.quoted |= quoted;
}
