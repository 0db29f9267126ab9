//! A tool use in one line for people deciding on it: the command for `Bash`, the file and a
//! short diff summary for `Edit` and `Write`, the question for `AskUserQuestion`, else the tool
//! and a short input.

use serde_json::Value;

/// Characters of a summary, at most.
const MAX_CHARS: usize = 500;
/// Characters of the input shown for a tool this does not know.
const MAX_INPUT_CHARS: usize = 200;

pub(crate) fn summary(tool: &str, input: &Value) -> String {
    let text = |key: &str| input.get(key).and_then(Value::as_str).unwrap_or_default();
    let lines = |key: &str| text(key).lines().count();
    let described = match tool {
        "Bash" => Some(text("command").to_owned()),
        "Edit" => Some(format!(
            "{} (-{} +{} lines)",
            text("file_path"),
            lines("old_string"),
            lines("new_string")
        )),
        "MultiEdit" => {
            let edits = input.get("edits").and_then(Value::as_array);
            let (removed, added) = edits.into_iter().flatten().fold((0, 0), |(r, a), edit| {
                let count = |key: &str| {
                    edit.get(key)
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.lines().count())
                };
                (r + count("old_string"), a + count("new_string"))
            });
            let n = edits.map_or(0, Vec::len);
            Some(format!(
                "{} ({n} edits, -{removed} +{added} lines)",
                text("file_path")
            ))
        }
        "Write" => Some(format!(
            "{} (writes {} lines)",
            text("file_path"),
            lines("content")
        )),
        "NotebookEdit" => Some(text("notebook_path").to_owned()),
        "Read" => Some(text("file_path").to_owned()),
        "Glob" | "Grep" => Some(text("pattern").to_owned()),
        "WebFetch" => Some(text("url").to_owned()),
        "WebSearch" => Some(text("query").to_owned()),
        "AskUserQuestion" => question(input),
        _ => None,
    };
    let line = match described.filter(|d| !d.trim().is_empty()) {
        Some(described) => described,
        None => {
            let input = serde_json::to_string(input).unwrap_or_default();
            format!("{tool} {}", cut(&input, MAX_INPUT_CHARS))
        }
    };
    cut(line.trim(), MAX_CHARS)
}

/// The first question asked, and how many more follow.
fn question(input: &Value) -> Option<String> {
    let questions = input.get("questions")?.as_array()?;
    let first = questions.first()?.get("question")?.as_str()?;
    Some(match questions.len() {
        1 => first.to_owned(),
        n => format!("{first} (and {} more)", n - 1),
    })
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::summary;
    use serde_json::json;

    #[test]
    fn summaries_say_what_the_tool_would_do() {
        assert_eq!(
            summary(
                "Bash",
                &json!({"command": "cargo test", "description": "x"})
            ),
            "cargo test"
        );
        assert_eq!(
            summary(
                "Edit",
                &json!({"file_path": "src/a.rs", "old_string": "a\nb", "new_string": "c"})
            ),
            "src/a.rs (-2 +1 lines)"
        );
        assert_eq!(
            summary(
                "Write",
                &json!({"file_path": "b.txt", "content": "1\n2\n3\n"})
            ),
            "b.txt (writes 3 lines)"
        );
        assert_eq!(
            summary(
                "AskUserQuestion",
                &json!({"questions": [{"question": "Which?"}, {"question": "Why?"}]})
            ),
            "Which? (and 1 more)"
        );
        assert_eq!(
            summary("mcp__x__y", &json!({"a": 1})),
            r#"mcp__x__y {"a":1}"#
        );
        let long = "é".repeat(600);
        let cut = summary("Bash", &json!({ "command": long }));
        assert_eq!(cut.chars().count(), 501);
        assert!(cut.ends_with('…'));
    }
}
