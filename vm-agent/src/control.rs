//! Claude Code's control protocol, as lines of JSON on the agent's stdin and stdout (run with
//! `--input-format stream-json --output-format stream-json --permission-prompt-tool stdio`), in
//! the shapes the official Agent SDK (`claude_agent_sdk/_internal/query.py`) reads and writes:
//!
//! - in: `{"type":"user","message":{"role":"user","content":[{"type":"text","text":T}]},
//!   "parent_tool_use_id":null}`, one per turn;
//! - out: `{"type":"control_request","request_id":ID,"request":{"subtype":"can_use_tool",
//!   "tool_name":...,"input":{...},"permission_suggestions":[...],"tool_use_id":...}}`;
//! - in: `{"type":"control_response","response":{"subtype":"success","request_id":ID,
//!   "response":{"behavior":"allow","updatedInput":{...}}}}` or `{"behavior":"deny",
//!   "message":...}`, or `"subtype":"error"` with an `"error"` text for requests not served;
//! - out: `{"type":"control_cancel_request","request_id":ID}` when the agent gave up waiting;
//! - in: `{"type":"control_request","request_id":ID,"request":{"subtype":"interrupt"}}`, answered
//!   by an out `control_response`.

use covibe_proto::vmagent::v1::{PermissionAnswer, PermissionRequest};
use serde::Deserialize;
use serde_json::{Value, json};

/// What a line of the agent's stdout is.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A `can_use_tool` request, for the orchestrator to answer.
    Permission(PermissionRequest),
    /// Another control request, which nobody here serves.
    Unsupported { request_id: String, subtype: String },
    /// The agent no longer waits for an answer to this request.
    Cancel { request_id: String },
    /// The agent answers a control request of ours.
    Response,
    /// Output; `result` when it ends a turn (`"type":"result"`).
    Output { result: bool },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    request: Option<Request>,
}

#[derive(Deserialize)]
struct Request {
    subtype: String,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    permission_suggestions: Option<Value>,
}

/// Reads one whole line of the agent's stdout. Only lines that can be protocol are parsed.
pub(crate) fn classify(line: &[u8]) -> Line {
    let output = Line::Output { result: false };
    if !line.trim_ascii_start().starts_with(b"{")
        || !(contains(line, b"control_") || contains(line, b"\"result\""))
    {
        return output;
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(line) else {
        return output;
    };
    match (envelope.kind.as_str(), envelope.request_id) {
        ("result", _) => Line::Output { result: true },
        ("control_response", _) => Line::Response,
        ("control_cancel_request", Some(request_id)) => Line::Cancel { request_id },
        ("control_request", Some(request_id)) => match envelope.request {
            Some(request) => request_line(request_id, request),
            None => Line::Unsupported {
                request_id,
                subtype: String::new(),
            },
        },
        _ => output,
    }
}

fn request_line(request_id: String, request: Request) -> Line {
    let Request {
        subtype,
        tool_name,
        input,
        tool_use_id,
        permission_suggestions,
    } = request;
    match (subtype.as_str(), tool_name, input) {
        ("can_use_tool", Some(tool), Some(input @ Value::Object(_))) => {
            let suggestions_json = match permission_suggestions {
                None | Some(Value::Null) => String::new(),
                Some(suggestions) => suggestions.to_string(),
            };
            Line::Permission(PermissionRequest {
                request_id,
                tool,
                input_json: input.to_string(),
                tool_use_id: tool_use_id.unwrap_or_default(),
                suggestions_json,
                // The conversation knows it, not the line.
                project_dir: String::new(),
            })
        }
        _ => Line::Unsupported {
            request_id,
            subtype,
        },
    }
}

/// The id of a control request too long to be read whole, from the start of its line (Claude
/// Code writes `{"type":"control_request","request_id":"...",` first).
pub(crate) fn oversized_request_id(head: &[u8]) -> Option<String> {
    const START: &[u8] = br#"{"type":"control_request","request_id":""#;
    let rest = head.trim_ascii_start().strip_prefix(START)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    (!id.is_empty() && !id.contains('\\')).then(|| id.to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A user turn carrying `text`.
pub(crate) fn user_message(text: &str) -> Vec<u8> {
    line(&json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": null,
    }))
}

fn success(request_id: &str, response: Value) -> Vec<u8> {
    line(&json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }))
}

/// A refusal of the tool use, `message` shown to the model as the tool's error.
pub(crate) fn deny(request_id: &str, message: &str) -> Vec<u8> {
    success(request_id, json!({"behavior": "deny", "message": message}))
}

/// The error answer to a control request that is not served.
pub(crate) fn error(request_id: &str, message: &str) -> Vec<u8> {
    line(&json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": message},
    }))
}

/// Asks the agent to stop its current turn.
pub(crate) fn interrupt(request_id: &str) -> Vec<u8> {
    line(&json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    }))
}

/// The `control_response` line for the orchestrator's answer to `request`. An allow without an
/// updated input runs the tool with the requested one (as the SDK does); an updated input that
/// is not a JSON object turns the answer into a deny, so the agent never waits on it.
pub(crate) fn answer(request: &PermissionRequest, answer: &PermissionAnswer) -> Vec<u8> {
    let id = &request.request_id;
    if !answer.allow {
        let message = if answer.message.is_empty() {
            "denied"
        } else {
            &answer.message
        };
        return deny(id, message);
    }
    let input = if answer.updated_input_json.is_empty() {
        &request.input_json
    } else {
        &answer.updated_input_json
    };
    match serde_json::from_str::<Value>(input) {
        Ok(input @ Value::Object(_)) => {
            success(id, json!({"behavior": "allow", "updatedInput": input}))
        }
        _ => {
            tracing::warn!(request_id = %id, "approval with an updated input that is not a JSON object, denied");
            deny(id, "the approval's updated input is not a JSON object")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn lines_are_told_apart() {
        let request = br#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"},"permission_suggestions":[{"type":"addRules"}],"tool_use_id":"toolu_1"}}"#;
        assert_eq!(
            classify(request),
            Line::Permission(PermissionRequest {
                request_id: "r1".into(),
                tool: "Bash".into(),
                input_json: r#"{"command":"ls"}"#.into(),
                tool_use_id: "toolu_1".into(),
                suggestions_json: r#"[{"type":"addRules"}]"#.into(),
                project_dir: String::new(),
            })
        );
        let bare = br#"{"type":"control_request","request_id":"r2","request":{"subtype":"can_use_tool","tool_name":"Edit","input":{}}}"#;
        assert!(matches!(
            classify(bare),
            Line::Permission(PermissionRequest { tool_use_id, suggestions_json, .. })
                if tool_use_id.is_empty() && suggestions_json.is_empty()
        ));
        let hook = br#"{"type":"control_request","request_id":"r3","request":{"subtype":"hook_callback","callback_id":"h"}}"#;
        let no_input = br#"{"type":"control_request","request_id":"r4","request":{"subtype":"can_use_tool","tool_name":"Bash","input":"ls"}}"#;
        assert_eq!(
            [classify(hook), classify(no_input)],
            [
                Line::Unsupported {
                    request_id: "r3".into(),
                    subtype: "hook_callback".into()
                },
                Line::Unsupported {
                    request_id: "r4".into(),
                    subtype: "can_use_tool".into()
                }
            ]
        );
        assert_eq!(
            classify(br#"{"type":"control_cancel_request","request_id":"r1"}"#),
            Line::Cancel {
                request_id: "r1".into()
            }
        );
        assert_eq!(
            classify(br#"{"type":"control_response","response":{"subtype":"success","request_id":"i1"}}"#),
            Line::Response
        );
        assert_eq!(
            classify(br#"{"type":"result","subtype":"success","result":"ok"}"#),
            Line::Output { result: true }
        );
        for output in [
            &br#"{"type":"assistant","message":{"content":[{"type":"text","text":"a control_request"}]}}"#[..],
            br#"{"type":"control_request","request":{"subtype":"can_use_tool"}}"#,
            br#"{"type":"control_request","request_id":"r5""#,
            b"control_request",
            b"",
        ] {
            assert_eq!(classify(output), Line::Output { result: false });
        }
    }

    #[test]
    fn oversized_requests_are_known_by_their_start() {
        let head = br#"{"type":"control_request","request_id":"abc-1","request":{"subtype":"can_use_tool","input":{"content":"xxxx"#;
        assert_eq!(oversized_request_id(head), Some("abc-1".into()));
        assert_eq!(oversized_request_id(br#"{"type":"assistant""#), None);
        assert_eq!(
            oversized_request_id(br#"{"type":"control_request","request_id":"#),
            None
        );
    }

    #[test]
    fn answers_have_the_sdk_shapes() {
        let request = PermissionRequest {
            request_id: "r1".into(),
            tool: "AskUserQuestion".into(),
            input_json: r#"{"questions":[{"question":"Which?"}]}"#.into(),
            ..Default::default()
        };
        let mut allow = PermissionAnswer {
            request_id: "r1".into(),
            allow: true,
            ..Default::default()
        };
        let response = |line: Vec<u8>| {
            assert_eq!(line.last(), Some(&b'\n'));
            let value = parse(&line);
            assert_eq!(value["type"], "control_response");
            value["response"].clone()
        };
        assert_eq!(
            response(answer(&request, &allow)),
            json!({"subtype": "success", "request_id": "r1", "response": {
                "behavior": "allow", "updatedInput": {"questions": [{"question": "Which?"}]}}})
        );
        allow.updated_input_json =
            r#"{"questions":[{"question":"Which?"}],"answers":{"Which?":"B"}}"#.into();
        assert_eq!(
            response(answer(&request, &allow))["response"]["updatedInput"]["answers"],
            json!({"Which?": "B"})
        );
        allow.updated_input_json = "[1]".into();
        assert_eq!(
            response(answer(&request, &allow))["response"]["behavior"],
            "deny"
        );
        let deny = PermissionAnswer {
            request_id: "r1".into(),
            message: "not on main".into(),
            ..Default::default()
        };
        assert_eq!(
            response(answer(&request, &deny))["response"],
            json!({"behavior": "deny", "message": "not on main"})
        );
        assert_eq!(
            response(error("r9", "unsupported")),
            json!({"subtype": "error", "request_id": "r9", "error": "unsupported"})
        );
        assert_eq!(
            parse(&user_message("hi \"there\"")),
            json!({"type": "user", "message": {"role": "user", "content": [
                {"type": "text", "text": "hi \"there\""}]}, "parent_tool_use_id": null})
        );
        assert_eq!(
            parse(&interrupt("i1")),
            json!({"type": "control_request", "request_id": "i1", "request": {"subtype": "interrupt"}})
        );
    }
}
