//! Turning the configured command template and a task into an argv, without any shell.

use crate::Error;

const PLACEHOLDER: &str = "{task}";

/// Splits `template` into words and puts `task` into every word containing `{task}`, as part of
/// that one argument whatever the task contains.
///
/// Words are separated by whitespace; `"..."` and `'...'` quote parts of a word (`a"b c"` is the
/// one word `ab c`). There are no escapes and no expansions: the result is run directly, never
/// through a shell.
pub fn split_command(template: &str, task: &str) -> Result<Vec<String>, Error> {
    let words = split_words(template)?;
    if words.is_empty() {
        return Err(Error::CommandTemplate("empty command"));
    }
    if !words.iter().any(|word| word.contains(PLACEHOLDER)) {
        return Err(Error::CommandTemplate("no {task} placeholder"));
    }
    Ok(words
        .into_iter()
        .map(|word| word.replace(PLACEHOLDER, task))
        .collect())
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
