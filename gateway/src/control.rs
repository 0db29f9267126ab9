//! The agent commands a client may send, from their JSON names.

use covibe_proto::vmagent::v1::{Command, Input, Interrupt, Kill, command};
use covibe_types::ApiError;

/// Largest input a client may type into an agent at once.
const MAX_INPUT_BYTES: usize = 64 * 1024;

pub fn command(name: &str, data: Option<String>) -> Result<Command, ApiError> {
    let command = match name {
        "kill" => command::Command::Kill(Kill { grace_ms: 0 }),
        "interrupt" => command::Command::Interrupt(Interrupt {}),
        "input" => {
            let mut data = data.ok_or_else(|| ApiError::invalid("input needs data"))?;
            if data.len() > MAX_INPUT_BYTES {
                return Err(ApiError::invalid(format!(
                    "input is longer than {MAX_INPUT_BYTES} bytes"
                )));
            }
            if !data.ends_with('\n') {
                data.push('\n');
            }
            command::Command::Input(Input {
                data: data.into_bytes(),
            })
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown command {other:?}: use kill, interrupt or input"
            )));
        }
    };
    Ok(Command {
        command: Some(command),
    })
}
