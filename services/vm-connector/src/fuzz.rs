//! Fuzz targets (property tests on the stable toolchain) for what a dial-in daemon sends:
//! `DaemonFrame`s as protobuf (what tonic hands the `Dial` stream), the VM id its hello names,
//! and the control messages replicas pass each other about it. Each feeds random bytes and
//! valid encodings mutated, and checks that nothing panics, that what decodes re-encodes to
//! the same message, and that a declared length never outgrows its input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use covibe_proto::events::v1::control_message::Message as Control;
use covibe_proto::events::v1::{ControlMessage, VmJobResult, VmSpawnResult};
use covibe_proto::prost::Message;
use covibe_proto::vmconnector::v1::daemon_frame::Frame;
use covibe_proto::vmconnector::v1::{
    DaemonFrame, DaemonHeartbeat, DaemonHello, JobResult, SpawnResult,
};
use covibe_testkit::fuzz::{config, edits, huge_length, mutate};
use covibe_types::VmId;
use proptest::prelude::*;

fn spawn_result() -> impl Strategy<Value = SpawnResult> {
    ("[ -~]{0,40}", any::<bool>(), "\\PC{0,40}").prop_map(|(agent_id, ok, message)| SpawnResult {
        agent_id,
        ok,
        message,
    })
}

fn job_result() -> impl Strategy<Value = JobResult> {
    ("[ -~]{0,40}", any::<i32>(), "\\PC{0,80}", any::<bool>()).prop_map(
        |(job_id, exit_code, output_tail, healthy)| JobResult {
            job_id,
            exit_code,
            output_tail,
            healthy,
        },
    )
}

fn daemon_frame() -> impl Strategy<Value = DaemonFrame> {
    let vm_id = prop_oneof![
        Just(VmId::new().to_string()),
        Just(format!(" {}\n", VmId::new())),
        "[ -~]{0,40}",
    ];
    prop_oneof![
        (vm_id, "[ -~]{0,43}", "[ -~]{0,10}", "[ -~]{0,20}").prop_map(
            |(vm_id, vm_token, version, hostname)| Frame::Hello(DaemonHello {
                vm_id,
                vm_token,
                version,
                hostname,
            })
        ),
        any::<i64>().prop_map(|sent_at_ms| Frame::Heartbeat(DaemonHeartbeat { sent_at_ms })),
        spawn_result().prop_map(Frame::SpawnResult),
        job_result().prop_map(Frame::JobResult),
    ]
    .prop_map(|frame| DaemonFrame { frame: Some(frame) })
}

/// Decodes `bytes` as `M`: a decoded message encodes and decodes to itself, and is no larger
/// than its input allows (varints may grow, a negative int32 to ten bytes; contents never).
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<Option<M>, TestCaseError> {
    let Ok(message) = M::decode(bytes) else {
        return Ok(None);
    };
    let again = message.encode_to_vec();
    prop_assert!(again.len() <= bytes.len() * 2 + 16);
    let decoded = M::decode(again.as_slice()).ok();
    prop_assert_eq!(decoded.as_ref(), Some(&message));
    Ok(Some(message))
}

/// `DaemonFrame` bytes, random or a valid frame mutated: each decodes (and round-trips) or is
/// refused, a declared length past the input is refused rather than allocated, and the VM id
/// of a hello parses (after trimming, as `dial` does) or is refused.
#[test]
fn fuzz_daemon_frame_decode() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (daemon_frame(), edits(0..6)).prop_map(|(frame, e)| mutate(
            frame.encode_to_vec(),
            &e,
            Some(huge_length)
        )),
    ];
    proptest!(config(5000), |(bytes in input)| {
        if let Some(DaemonFrame { frame: Some(Frame::Hello(hello)) }) =
            round_trip::<DaemonFrame>(&bytes)?
            && let Ok(vm) = hello.vm_id.trim().parse::<VmId>()
        {
            prop_assert_eq!(vm.to_string().parse::<VmId>().ok(), Some(vm));
        }
    });
}

/// Control messages about daemons (spawn and job results passed between replicas), random or
/// valid and mutated: each decodes and round-trips, or is refused.
#[test]
fn fuzz_control_message_decode() {
    let message = prop_oneof![
        ("[ -~]{0,40}", spawn_result()).prop_map(|(vm_id, result)| {
            Control::VmSpawnResult(VmSpawnResult {
                vm_id,
                result: Some(result),
            })
        }),
        (
            "[ -~]{0,40}",
            prop::option::of(job_result()),
            any::<bool>(),
            "[ -~]{0,20}"
        )
            .prop_map(|(vm_id, result, accepted, job_id)| Control::VmJobResult(
                VmJobResult {
                    vm_id,
                    result,
                    accepted,
                    job_id,
                }
            )),
    ]
    .prop_map(|message| ControlMessage {
        message: Some(message),
    });
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (message, edits(0..6)).prop_map(|(message, e)| mutate(
            message.encode_to_vec(),
            &e,
            Some(huge_length)
        )),
    ];
    proptest!(config(3000), |(bytes in input)| {
        round_trip::<ControlMessage>(&bytes)?;
    });
}
