//! The agent side of Claude Code's control protocol (see `control.rs`), for an agent command
//! reading stream-json input: the task is its first user message, each `Input` a further one;
//! its tool requests wait in [`Permissions`] for the orchestrator's answers; other control
//! requests get an error answer, so it never waits on something nobody serves.
//!
//! Stdin stays open while the agent may still need it: once it has answered every user message
//! (as many `result` lines as turns sent), it is closed, which is how Claude Code knows that no
//! more turns are coming and exits.

use std::sync::{Arc, Mutex, MutexGuard};

use covibe_proto::vmagent::v1::PermissionAnswer;
use tokio::sync::mpsc;

use crate::control::{self, Line};
use crate::permissions::{Permissions, Refused};

/// How a chunk of output sits in its line: the whole line, or the first or a later piece of a
/// line cut for being too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Whole,
    Head,
    Tail,
}

#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    state: Arc<Mutex<State>>,
    permissions: Permissions,
    /// Where the agent works (absolute), sent with each tool request.
    project_dir: Arc<str>,
}

#[derive(Debug)]
struct State {
    stdin: mpsc::Sender<Vec<u8>>,
    /// User messages written.
    turns: u64,
    /// `result` lines read.
    results: u64,
    closed: bool,
    interrupts: u64,
}

impl Conversation {
    /// Writes `task` as the first user message.
    pub(crate) fn start(
        stdin: mpsc::Sender<Vec<u8>>,
        permissions: Permissions,
        task: &str,
        project_dir: String,
    ) -> Self {
        let conversation = Self {
            state: Arc::new(Mutex::new(State {
                stdin,
                turns: 0,
                results: 0,
                closed: false,
                interrupts: 0,
            })),
            permissions,
            project_dir: project_dir.into(),
        };
        conversation.lock().user_message(task);
        conversation
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks at a chunk of the agent's stdout; `true` when it is a control message, not output.
    pub(crate) fn on_stdout(&self, data: &[u8], cut: Cut) -> bool {
        match cut {
            Cut::Whole => {}
            Cut::Head => {
                // Too long to be read whole, so it cannot be asked: refused, and shown as output.
                if let Some(request_id) = control::oversized_request_id(data) {
                    tracing::warn!(request_id, "control request too large, refused");
                    self.lock().write(control::error(
                        &request_id,
                        "the request is too large to be forwarded for approval",
                    ));
                }
                return false;
            }
            Cut::Tail => return false,
        }
        match control::classify(data) {
            Line::Output { result: false } => false,
            Line::Output { result: true } => {
                let mut state = self.lock();
                state.results += 1;
                state.close_when_idle();
                false
            }
            Line::Permission(mut request) => {
                request.project_dir = self.project_dir.to_string();
                let request_id = request.request_id.clone();
                tracing::info!(request_id, tool = %request.tool, "the agent asks to use a tool");
                match self.permissions.add(request) {
                    Ok(()) => {}
                    Err(Refused::Duplicate) => {
                        tracing::warn!(request_id, "tool request repeated, ignored");
                    }
                    Err(Refused::Full) => {
                        tracing::warn!(request_id, "too many tool requests waiting, refused");
                        self.lock().write(control::deny(
                            &request_id,
                            "too many tool requests are waiting for an answer",
                        ));
                    }
                }
                true
            }
            Line::Unsupported {
                request_id,
                subtype,
            } => {
                tracing::warn!(request_id, subtype, "unsupported control request refused");
                self.lock().write(control::error(
                    &request_id,
                    &format!("unsupported control request {subtype:?}"),
                ));
                true
            }
            Line::Cancel { request_id } => {
                let known = self.permissions.take(&request_id).is_some();
                tracing::info!(request_id, known, "the agent cancelled a tool request");
                true
            }
            Line::Response => {
                tracing::debug!("the agent answered a control request");
                true
            }
        }
    }

    /// Input from the owner: a user message with its text (without its final newline); empty
    /// input closes stdin.
    pub(crate) fn input(&self, data: &[u8]) {
        let mut state = self.lock();
        if data.is_empty() {
            state.close();
            return;
        }
        let text = String::from_utf8_lossy(data);
        let text = text
            .strip_suffix('\n')
            .map_or(&*text, |t| t.strip_suffix('\r').unwrap_or(t));
        if text.is_empty() {
            tracing::debug!("empty input ignored");
        } else if state.closed {
            tracing::warn!("the agent takes no more input, input dropped");
        } else {
            state.user_message(text);
        }
    }

    /// The orchestrator's answer to a tool request.
    pub(crate) fn answer(&self, answer: &PermissionAnswer) {
        let Some(request) = self.permissions.take(&answer.request_id) else {
            tracing::debug!(request_id = %answer.request_id, "answer for no waiting tool request ignored");
            return;
        };
        tracing::info!(request_id = %request.request_id, tool = %request.tool, allow = answer.allow, "tool request answered");
        self.lock().write(control::answer(&request, answer));
    }

    /// Asks the agent to stop its turn; `false` when it can no longer be asked (stdin closed).
    pub(crate) fn interrupt(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.interrupts += 1;
        let id = format!("covibe-interrupt-{}", state.interrupts);
        state.write(control::interrupt(&id));
        true
    }
}

impl State {
    fn user_message(&mut self, text: &str) {
        self.turns += 1;
        self.write(control::user_message(text));
    }

    /// Closes stdin once every user message is answered.
    fn close_when_idle(&mut self) {
        if self.results >= self.turns && !self.closed {
            tracing::debug!(
                turns = self.turns,
                "every turn answered, closing the agent's stdin"
            );
            self.close();
        }
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            // Empty data closes the agent's stdin.
            self.write(Vec::new());
        }
    }

    fn write(&mut self, line: Vec<u8>) {
        if let Err(err) = self.stdin.try_send(line) {
            tracing::warn!(error = %err, "writing to the agent's stdin failed, line dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn written(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|line| {
                if line.is_empty() {
                    Value::String("<close>".into())
                } else {
                    serde_json::from_slice(&line).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn turns_requests_and_answers() {
        let (tx, mut rx) = mpsc::channel(16);
        let permissions = Permissions::new();
        let conversation =
            Conversation::start(tx, permissions.clone(), "fix it", "/work/app".into());
        let first = written(&mut rx);
        assert_eq!(first[0]["message"]["content"][0]["text"], "fix it");

        let request = br#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#;
        assert!(conversation.on_stdout(request, Cut::Whole));
        assert!(!conversation.on_stdout(br#"{"type":"assistant"}"#, Cut::Whole));
        assert!(written(&mut rx).is_empty());
        // The start of a request too long to read whole: refused, and shown as output.
        let big = br#"{"type":"control_request","request_id":"big","request":{"#;
        assert!(!conversation.on_stdout(big, Cut::Head));
        assert!(!conversation.on_stdout(b"xxx", Cut::Tail));
        let refused = written(&mut rx);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0]["response"]["request_id"], "big");
        assert_eq!(refused[0]["response"]["subtype"], "error");
        conversation.input(b"and the tests\r\n");
        conversation.answer(&PermissionAnswer {
            request_id: "r1".into(),
            message: "no".into(),
            ..Default::default()
        });
        // A second answer finds nothing waiting.
        conversation.answer(&PermissionAnswer {
            request_id: "r1".into(),
            allow: true,
            ..Default::default()
        });
        let hook = br#"{"type":"control_request","request_id":"h1","request":{"subtype":"hook_callback"}}"#;
        assert!(conversation.on_stdout(hook, Cut::Whole));
        let lines = written(&mut rx);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["message"]["content"][0]["text"], "and the tests");
        assert_eq!(lines[1]["response"]["response"]["message"], "no");
        assert_eq!(lines[2]["response"]["subtype"], "error");

        // Two turns: stdin closes after the second result, and later input is dropped.
        let result = br#"{"type":"result","subtype":"success"}"#;
        assert!(!conversation.on_stdout(result, Cut::Whole));
        assert!(written(&mut rx).is_empty());
        assert!(conversation.interrupt());
        assert!(!conversation.on_stdout(result, Cut::Whole));
        conversation.input(b"late\n");
        assert!(!conversation.interrupt());
        let lines = written(&mut rx);
        assert_eq!(lines[0]["request"]["subtype"], "interrupt");
        assert_eq!(lines[1], "<close>");
        assert_eq!(lines.len(), 2);
    }
}
