//! Turning the configured command template and a task into an argv, without any shell.

use crate::Error;

const PLACEHOLDER: &str = "{task}";

/// The agent command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    pub argv: Vec<String>,
    /// The command reads Claude Code's stream-json input (`--input-format stream-json`): the
    /// task goes to it as the first user message on stdin, and it speaks the control protocol.
    pub control: bool,
}

/// Splits `template` into words and puts `task` into every word containing `{task}`, as part of
/// that one argument whatever the task contains.
///
/// Words are separated by whitespace; `"..."` and `'...'` quote parts of a word (`a"b c"` is the
/// one word `ab c`). There are no escapes and no expansions: the result is run directly, never
/// through a shell. A template must name `{task}` unless it reads stream-json input, where the
/// task is sent on stdin instead.
pub fn parse_command(template: &str, task: &str) -> Result<AgentCommand, Error> {
    let words = split_words(template)?;
    if words.is_empty() {
        return Err(Error::CommandTemplate("empty command"));
    }
    let control = reads_stream_json(&words);
    if !control && !words.iter().any(|word| word.contains(PLACEHOLDER)) {
        return Err(Error::CommandTemplate("no {task} placeholder"));
    }
    let argv = words
        .into_iter()
        .map(|word| word.replace(PLACEHOLDER, task))
        .collect();
    Ok(AgentCommand { argv, control })
}

/// [`parse_command`]'s argv.
pub fn split_command(template: &str, task: &str) -> Result<Vec<String>, Error> {
    parse_command(template, task).map(|command| command.argv)
}

/// Whether the words say `--input-format stream-json` (or `--input-format=stream-json`).
fn reads_stream_json(words: &[String]) -> bool {
    words.iter().enumerate().any(|(i, word)| {
        word == "--input-format=stream-json"
            || (word == "--input-format"
                && words.get(i + 1).is_some_and(|next| next == "stream-json"))
    })
}

fn split_words(template: &str) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in template.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => words.extend(word.take()),
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(Error::CommandTemplate("unterminated quote"));
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(template: &str, task: &str) -> Vec<String> {
        split_command(template, task).unwrap_or_else(|err| panic!("{template}: {err}"))
    }

    #[test]
    fn task_is_one_argument_and_quotes_group_words() {
        let task = "fix the \"bug\"; rm -rf / $(whoami) 'x'";
        assert_eq!(
            split(
                "claude  -p {task}\t--output-format stream-json --verbose",
                task
            ),
            [
                "claude",
                "-p",
                task,
                "--output-format",
                "stream-json",
                "--verbose"
            ]
        );
        assert_eq!(
            split(
                r#"/opt/my tools/x "/opt/my tools/claude" --prompt={task} 'a b'"c d" '' x"#,
                "t u"
            ),
            [
                "/opt/my",
                "tools/x",
                "/opt/my tools/claude",
                "--prompt=t u",
                "a bc d",
                "",
                "x"
            ]
        );
        assert_eq!(split("run '{task}'", ""), ["run", ""]);
        assert_eq!(split("run \"{task} and {task}\"", "x"), ["run", "x and x"]);
    }

    #[test]
    fn stream_json_input_makes_the_task_optional() {
        let command = |template: &str| parse_command(template, "fix it").ok();
        let claude = "claude -p --input-format stream-json --output-format stream-json";
        assert_eq!(
            command(claude).map(|c| (c.argv.len(), c.control)),
            Some((6, true))
        );
        assert_eq!(
            command("claude --input-format=stream-json").map(|c| c.control),
            Some(true)
        );
        assert_eq!(
            command("x --input-format stream-json -p {task}")
                .map(|c| (c.argv[4].clone(), c.control)),
            Some(("fix it".to_owned(), true))
        );
        assert_eq!(
            command("claude -p {task} --output-format stream-json").map(|c| c.control),
            Some(false)
        );
        // Another input format, or the flag without its value, still needs the task.
        for template in [
            "claude --input-format text",
            "claude --input-format",
            "claude stream-json --input-format",
        ] {
            assert!(command(template).is_none(), "{template:?}");
        }
    }

    #[test]
    fn bad_templates_are_rejected() {
        for template in [
            "",
            "   ",
            "claude -p",
            "claude -p \"{task}",
            "claude 'x {task}",
        ] {
            assert!(
                matches!(split_command(template, "t"), Err(Error::CommandTemplate(_))),
                "{template:?} should be rejected"
            );
        }
    }
}
