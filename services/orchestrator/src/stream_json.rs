//! Claude Code's `stream-json` output, understood once at ingest so clients render it without
//! parsing. Each line becomes a small event of our own shape (stable whatever Claude Code adds),
//! read through `claude-codes`' typed models (versioned alongside Claude Code). A line that is
//! not JSON, or a message type nobody knows yet, becomes `{"kind": "raw"}`: it never breaks the
//! stream, and clients show the line itself.
//!
//! Shapes: `init {model, cwd, tools, sessionId}`; `assistant {blocks}` and `user {blocks}` with blocks
//! `text {text}`, `thinking {text}`, `tool_use {id, name, input}`,
//! `tool_result {toolUseId, content, isError}`, `other {type}`; `result {isError, costUsd,
//! durationMs, turns, result}`; `system {subtype}`; `raw`.

use claude_codes::ClaudeOutput;
use claude_codes::io::{ContentBlock, ToolResultContent};
use serde_json::{Value, json};

/// What the orchestrator keeps from a final result line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub cost_usd: f64,
    pub turns: i64,
    pub duration_ms: i64,
}

/// One parsed line: the event clients get, and the outcome when it is the final result.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub event: Value,
    pub outcome: Option<Outcome>,
}

fn blocks(content: &[ContentBlock]) -> Vec<Value> {
    content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => json!({"type": "text", "text": t.text}),
            ContentBlock::Thinking(t) => json!({"type": "thinking", "text": t.thinking}),
            ContentBlock::ToolUse(t) => {
                json!({"type": "tool_use", "id": t.id, "name": t.name, "input": t.input})
            }
            ContentBlock::ToolResult(r) => {
                let content = match &r.content {
                    Some(ToolResultContent::Text(text)) => Value::String(text.clone()),
                    Some(ToolResultContent::Structured(parts)) => Value::Array(parts.clone()),
                    None => Value::Null,
                };
                json!({
                    "type": "tool_result",
                    "toolUseId": r.tool_use_id,
                    "content": content,
                    "isError": r.is_error.unwrap_or(false),
                })
            }
            other => {
                let kind = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "unknown".to_owned());
                json!({"type": "other", "blockType": kind})
            }
        })
        .collect()
}

fn raw() -> Parsed {
    Parsed {
        event: json!({"kind": "raw"}),
        outcome: None,
    }
}

/// Reads one output line.
pub fn parse(line: &[u8]) -> Parsed {
    let trimmed = line.trim_ascii();
    if trimmed.first() != Some(&b'{') {
        return raw();
    }
    let Ok(output) = serde_json::from_slice::<ClaudeOutput>(trimmed) else {
        return raw();
    };
    match output {
        ClaudeOutput::System(system) => {
            let data = &system.data;
            if system.is_init() {
                Parsed {
                    event: json!({
                        "kind": "init",
                        "model": data.get("model").cloned().unwrap_or(Value::Null),
                        "cwd": data.get("cwd").cloned().unwrap_or(Value::Null),
                        "tools": data.get("tools").cloned().unwrap_or_else(|| json!([])),
                        "sessionId": data.get("session_id").cloned().unwrap_or(Value::Null),
                    }),
                    outcome: None,
                }
            } else {
                let subtype = serde_json::to_value(&system.subtype).unwrap_or(Value::Null);
                Parsed {
                    event: json!({"kind": "system", "subtype": subtype}),
                    outcome: None,
                }
            }
        }
        ClaudeOutput::Assistant(message) => Parsed {
            event: json!({"kind": "assistant", "blocks": blocks(&message.message.content)}),
            outcome: None,
        },
        ClaudeOutput::User(message) => Parsed {
            event: json!({"kind": "user", "blocks": blocks(&message.message.content)}),
            outcome: None,
        },
        ClaudeOutput::Result(result) => {
            let outcome = Outcome {
                cost_usd: result.total_cost_usd,
                turns: i64::from(result.num_turns),
                duration_ms: i64::try_from(result.duration_ms).unwrap_or(i64::MAX),
            };
            Parsed {
                event: json!({
                    "kind": "result",
                    "isError": result.is_error,
                    "costUsd": outcome.cost_usd,
                    "durationMs": outcome.duration_ms,
                    "turns": outcome.turns,
                    "result": result.result,
                }),
                outcome: Some(outcome),
            }
        }
        _ => raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_agent_lines(task: &str) -> Vec<String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fake-claude");
        let out = std::process::Command::new(script)
            .args(["-p", task])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_fake_agents_lines_become_typed_events() {
        let lines = fake_agent_lines("lines=1 exit=0");
        let kinds: Vec<Parsed> = lines.iter().map(|l| parse(l.as_bytes())).collect();
        assert_eq!(kinds[0].event["kind"], "init");
        assert_eq!(kinds[0].event["model"], "claude-sonnet-4-5");
        assert!(
            kinds[0].event["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "Bash")
        );
        assert_eq!(kinds[1].event["kind"], "assistant");
        assert_eq!(kinds[1].event["blocks"][0]["type"], "text");
        let tool = &kinds[2].event["blocks"][0];
        assert_eq!(
            (tool["type"].as_str(), tool["name"].as_str()),
            (Some("tool_use"), Some("Bash"))
        );
        assert_eq!(tool["input"]["command"], "ls");
        let result = &kinds[3].event["blocks"][0];
        assert_eq!(result["type"], "tool_result");
        assert_eq!(result["toolUseId"], tool["id"]);
        assert_eq!(result["isError"], false);
        let last = kinds.last().unwrap();
        assert_eq!(last.event["kind"], "result");
        let outcome = last.outcome.unwrap();
        assert!(outcome.cost_usd > 0.0);
        assert_eq!(outcome.turns, 3);
    }

    #[test]
    fn anything_unknown_passes_through_as_raw() {
        for line in [
            "plain text from a build tool",
            "",
            "{not json",
            r#"{"type":"brand_new_message_type","payload":1}"#,
            r#"{"type":"assistant","message":"shape changed"}"#,
            "[1,2,3]",
        ] {
            assert_eq!(parse(line.as_bytes()), raw(), "{line}");
        }
    }
}
