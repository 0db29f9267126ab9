//! Fuzz targets (property tests on the stable toolchain) for what a vm-agent sends over its
//! link: `AgentFrame`s as protobuf (what tonic hands the link after its size limit), the ids
//! a hello names, and the output lines read as Claude Code's stream-json. Each feeds random
//! bytes and valid encodings mutated, and checks that nothing panics, that what decodes
//! re-encodes to the same frame, and that a declared length never outgrows its input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::prost::Message;
use covibe_proto::vmagent::v1::agent_frame::Frame;
use covibe_proto::vmagent::v1::{AgentFrame, Heartbeat, Hello, Output, StatusChange};
use covibe_testkit::fuzz::{config, edits, huge_length, mutate};
use covibe_types::AgentId;
use proptest::prelude::*;

use crate::stream_json::parse;

fn frame() -> impl Strategy<Value = AgentFrame> {
    let text = "[ -~]{0,40}";
    prop_oneof![
        (text, text, any::<u64>(), text).prop_map(|(agent_id, agent_token, acked_seq, v)| {
            Frame::Hello(Hello {
                agent_id,
                agent_token,
                acked_seq,
                agent_version: v,
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            })
        }),
        (
            any::<u64>(),
            0..4i32,
            prop::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(seq, stream, data)| Frame::Output(Output {
                seq,
                stream,
                data: data.into(),
            })),
        (0..10i32, any::<Option<i32>>(), any::<u64>(), text).prop_map(
            |(status, exit_code, final_seq, message)| Frame::Status(StatusChange {
                status,
                exit_code,
                final_seq,
                message,
            })
        ),
        any::<i64>().prop_map(|sent_at_ms| Frame::Heartbeat(Heartbeat { sent_at_ms })),
    ]
    .prop_map(|frame| AgentFrame { frame: Some(frame) })
}

/// `AgentFrame` bytes, random or a valid frame mutated: each decodes or is refused; a decoded
/// frame encodes and decodes to itself, is no larger than its input allows (a declared length
/// past the input is refused, not allocated), and its hello's ids parse or are refused.
#[test]
fn fuzz_agent_frame_decode() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (frame(), edits(0..6)).prop_map(|(frame, e)| mutate(
            frame.encode_to_vec(),
            &e,
            Some(huge_length)
        )),
    ];
    proptest!(config(5000), |(bytes in input)| {
        let Ok(frame) = AgentFrame::decode(bytes.as_slice()) else {
            return Ok(());
        };
        let again = frame.encode_to_vec();
        let decoded = AgentFrame::decode(again.as_slice()).ok();
        prop_assert_eq!(decoded.as_ref(), Some(&frame));
        // Varints may grow (a negative int32 takes ten bytes), contents never.
        prop_assert!(again.len() <= bytes.len() * 2 + 16);
        match &frame.frame {
            Some(Frame::Hello(hello)) => {
                let _ = hello.agent_id.parse::<AgentId>();
            }
            Some(Frame::Output(output)) => {
                prop_assert!(output.data.len() <= bytes.len());
                let _ = OutputStream::try_from(output.stream);
            }
            Some(Frame::Status(change)) => {
                let _ = AgentStatus::try_from(change.status)
                    .ok()
                    .and_then(covibe_types::AgentStatus::from_proto);
            }
            Some(Frame::Heartbeat(_) | Frame::Permission(_)) | None => {}
        }
    });
}

const LINES: &[&str] = &[
    r#"{"type":"system","subtype":"init","session_id":"s","model":"m","cwd":"/w","tools":["Bash"],"mcp_servers":[],"permissionMode":"default","apiKeySource":"none"}"#,
    r#"{"type":"assistant","message":{"id":"m1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}},"session_id":"s"}"#,
    r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a\nb","is_error":false}]},"session_id":"s"}"#,
    r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":10,"duration_api_ms":5,"num_turns":3,"result":"done","session_id":"s","total_cost_usd":0.01,"usage":{"input_tokens":1,"output_tokens":1}}"#,
    "plain text from a build tool",
];

/// An output line, random or a stream-json line mutated: each becomes an event with a kind
/// (raw when it is not ours to read), never a panic; an outcome only comes with a result.
#[test]
fn fuzz_stream_json_lines() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (prop::sample::select(LINES), edits(0..6)).prop_map(|(line, e)| mutate(
            line.as_bytes().to_vec(),
            &e,
            Some(huge_length)
        )),
    ];
    proptest!(config(3000), |(line in input)| {
        let parsed = parse(&line);
        let kind = parsed.event["kind"].as_str();
        prop_assert!(kind.is_some(), "an event without a kind: {}", parsed.event);
        if parsed.outcome.is_some() {
            prop_assert_eq!(kind, Some("result"));
        }
    });
}
