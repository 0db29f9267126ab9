//! Fuzz targets (property tests on the stable toolchain) for what a client sends: Socket.IO
//! packets, Engine.IO polling bodies, and WebSocket frames reassembled over a real connection.
//! Each feeds fully random input and valid input mutated (bytes flipped, inserted, removed,
//! truncated), and checks that nothing panics, that bad input gets a typed refusal, and that
//! what parses re-encodes to the same thing. The frame parser itself is fuzzed in `ws::fuzz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use covibe_testkit::fuzz::{config, edits, mutate};
use futures::future::BoxFuture;
use proptest::prelude::*;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::config::Config;
use crate::handler::Handler;
use crate::io::Io;
use crate::packet::{self, Engine, Frame};
use crate::socket::{Event, Socket};

/// Panics raised by this crate's own code (not by a test's assertion) while the targets run:
/// the server's tasks catch a panic, so a test would not see it otherwise.
static CRATE_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_crate_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|at| {
                at.file().contains("socketio/src/") && !at.file().contains("fuzz")
            }) {
                CRATE_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Answers every event with its data, as an application would.
struct Echo;

impl Handler<()> for Echo {
    fn connect(&self, _socket: &Arc<Socket<()>>) -> Result<(), String> {
        Ok(())
    }

    fn event(&self, _socket: Arc<Socket<()>>, event: Event<()>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let data = event.data.clone();
            event.ack.send(&data);
        })
    }

    fn disconnect(&self, _socket: Arc<Socket<()>>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

const MAX_PAYLOAD: usize = 4096;

fn io() -> Io<()> {
    Io::new(
        Config {
            max_payload: MAX_PAYLOAD,
            ..Config::default()
        },
        Arc::new(Echo),
    )
}

const PACKETS: &[&str] = &[
    r#"42["join_team",{"teamId":"t","since":{"a":1}}]"#,
    r#"4217["chat_message",{"message":"é\u0000"}]"#,
    r#"42/,3["x",1,2]"#,
    r#"40{"token":"x"}"#,
    "40/admin,",
    "41",
    "43[1]",
    r#"451-["x",{"_placeholder":true,"num":0}]"#,
    "2probe",
    "3",
    "5",
    "6",
];

fn valid_packet() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(PACKETS).prop_map(|p| p.as_bytes().to_vec())
}

/// Engine.IO then Socket.IO packet text: every one is parsed or refused with a reason; an event
/// that parses encodes back (name, data and ack id) to text that parses to the same event.
#[test]
fn fuzz_socketio_packets() {
    let text = prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        "[0-6][0-9/,\\[\\]{}\":a-z\\\\-]{0,40}".prop_map(String::into_bytes),
        (valid_packet(), edits(0..6)).prop_map(|(p, e)| mutate(p, &e, None)),
    ];
    proptest!(config(4000), |(bytes in text)| {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Ok(());
        };
        let Ok(engine) = packet::engine(text) else {
            return Ok(());
        };
        let Engine::Message(message) = engine else {
            return Ok(());
        };
        if let Ok(packet::Socket::Event { name, data, ack }) = packet::socket(message) {
            // As a client would write it again...
            let again = format!(
                "2{}[{}{}]",
                ack.map(|id| id.to_string()).unwrap_or_default(),
                serde_json::to_string(&name).unwrap(),
                data.map(|d| format!(",{}", d.get())).unwrap_or_default(),
            );
            let Ok(packet::Socket::Event { name: n, data: d, ack: a }) = packet::socket(&again)
            else {
                panic!("a re-encoded event is refused: {again:?}");
            };
            prop_assert_eq!(&n, &name);
            prop_assert_eq!(a, ack);
            prop_assert_eq!(d.map(RawValue::get), data.map(RawValue::get));
            // ...and as the server sends one.
            let frame = Frame::event(&name, &data);
            let Ok(Engine::Message(sent)) = packet::engine(frame.as_str()) else {
                panic!("an event frame is an engine.io message: {:?}", frame.as_str());
            };
            let Ok(packet::Socket::Event { name: n, data: d, ack: None }) = packet::socket(sent)
            else {
                panic!("an event frame is refused: {sent:?}");
            };
            prop_assert_eq!(&n, &name);
            let expected = data.map_or("null", RawValue::get);
            prop_assert_eq!(d.map(RawValue::get), Some(expected));
        }
    });
}

async fn handshake(router: &axum::Router) -> String {
    let response = router
        .clone()
        .oneshot(
            Request::get("/socket.io/?EIO=4&transport=polling")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_slice(&body[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

fn polling_body() -> impl Strategy<Value = Vec<u8>> {
    let packets = prop::collection::vec(valid_packet(), 0..6)
        .prop_map(|packets| packets.join(&packet::SEPARATOR));
    prop_oneof![
        any::<Vec<u8>>(),
        (packets, edits(0..6)).prop_map(|(body, e)| mutate(body, &e, None)),
        // Past the payload limit, by a little or a lot.
        (MAX_PAYLOAD + 1..MAX_PAYLOAD * 4).prop_map(|len| vec![b'6'; len]),
    ]
}

/// Polling POST bodies through the real router: each is taken (`ok`), or refused with an
/// Engine.IO error (400, or 413 past the payload limit, before it is read whole); the session's
/// server goes on answering.
#[test]
fn fuzz_polling_bodies() {
    count_crate_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let io = io();
    let router: axum::Router = io.router();
    proptest!(config(2000), |(body in polling_body())| {
        let too_big = body.len() > MAX_PAYLOAD;
        let utf8 = std::str::from_utf8(&body).is_ok();
        let status = runtime.block_on(async {
            let sid = handshake(&router).await;
            let response = router
                .clone()
                .oneshot(
                    Request::post(format!("/socket.io/?EIO=4&transport=polling&sid={sid}"))
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            response.status()
        });
        let expected = if too_big {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if utf8 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        prop_assert_eq!(status, expected);
    });
    assert_eq!(
        CRATE_PANICS.load(Ordering::SeqCst),
        0,
        "the server panicked"
    );
}

/// A client frame (masked), as `tests::masked` in `ws` but with any length encoding.
fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len if len < 126 => out.push(0x80 | len as u8),
        len if len <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// Server frames: each whole, unmasked, final, of a known opcode. Returns the payloads of the
/// text frames and the close code, if any.
fn server_frames(mut bytes: &[u8]) -> (Vec<Vec<u8>>, Option<u16>) {
    let mut texts = Vec::new();
    while !bytes.is_empty() {
        // A reset (the server closed with unread bytes of ours) may cut the tail off.
        if bytes.len() < 2 {
            break;
        }
        let (b0, b1) = (bytes[0], bytes[1]);
        assert_eq!(b0 & 0xf0, 0x80, "final, no extension bits");
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, at) = match b1 & 0x7f {
            126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(bytes[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            126 | 127 => break,
            len => (usize::from(len), 2),
        };
        let Some(payload) = bytes.get(at..at + len) else {
            break;
        };
        match b0 & 0x0f {
            0x1 => texts.push(payload.to_vec()),
            0xA => {}
            0x8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(
                    [1000, 1002, 1007, 1009].contains(&code),
                    "unexpected close code {code}"
                );
                assert_eq!(at + len, bytes.len(), "nothing after the close frame");
                return (texts, Some(code));
            }
            other => panic!("unexpected server opcode {other}"),
        }
        bytes = &bytes[at + len..];
    }
    (texts, None)
}

/// A message split in fragments (text, then continuations), with a ping frame in between.
fn fragmented(message: &[u8], splits: &[usize], mask: [u8; 4]) -> Vec<u8> {
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (message.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for cut in cuts {
        pieces.push(&message[start..cut]);
        start = cut;
    }
    pieces.push(&message[start..]);
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        out.extend(client_frame(opcode, i + 1 == pieces.len(), piece, mask));
        if i == 0 {
            out.extend(client_frame(0x9, true, b"p", mask));
        }
    }
    out
}

/// One client's bytes over a real WebSocket, written in the given chunk sizes, then a closed
/// write side; returns all the server wrote after the handshake.
async fn websocket_session(addr: std::net::SocketAddr, bytes: &[u8], chunks: &[usize]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: fuzz\r\n\
              Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgraded");
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        let mut rest = bytes;
        for &chunk in chunks.iter().chain(std::iter::repeat(&usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let n = chunk.clamp(1, rest.len());
            // The server may have closed already: what it wrote is still read.
            if writer.write_all(&rest[..n]).await.is_err() {
                break;
            }
            rest = &rest[n..];
            tokio::task::yield_now().await;
        }
        let _ = writer.shutdown().await;
    };
    // Read while writing, so that a close is seen before a reset of unread bytes can drop it.
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    };
    let guarded = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(write, read).1
    });
    guarded
        .await
        .expect("the server neither answered nor closed")
}

/// WebSocket frames over a real connection: messages split in fragments (a ping between them)
/// and read in arbitrary chunks come out whole; any mutation of them, or random bytes, ends in
/// an answer or a close with a protocol code, never a panic or a hang; fragments adding up past
/// the payload limit are refused.
#[test]
fn fuzz_websocket_fragments() {
    count_crate_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let io = io();
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: axum::Router = io.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let input = (
        // A ping packet whose data the server echoes: `2<data>` answered by `3<data>`.
        prop::collection::vec(any::<u8>(), 0..MAX_PAYLOAD * 2),
        prop::collection::vec(any::<usize>(), 0..5),
        any::<[u8; 4]>(),
        prop_oneof![2 => Just(Vec::new()), 1 => edits(0..6)],
        prop::collection::vec(1usize..300, 0..8),
        prop::bool::weighted(0.1),
    );
    proptest!(config(1000), |((data, splits, mask, edits, chunks, random) in input)| {
        let ping: Vec<u8> = b"2".iter().copied().chain(data.iter().map(|b| b'a' + b % 26)).collect();
        let valid = fragmented(&ping, &splits, mask);
        let sentinel = client_frame(0x1, true, b"2sentinel", mask);
        let bytes = if random {
            data.clone()
        } else {
            let mut bytes = mutate(valid.clone(), &edits, None);
            bytes.extend_from_slice(&sentinel);
            bytes
        };
        let out = runtime.block_on(websocket_session(addr, &bytes, &chunks));
        let (texts, close) = server_frames(&out);
        let mut pong = ping.clone();
        pong[0] = b'3';
        if !random && edits.is_empty() {
            prop_assert!(texts.first().is_some_and(|open| open.starts_with(b"0{")), "the open packet first");
            if ping.len() <= MAX_PAYLOAD {
                prop_assert!(texts.contains(&pong), "the reassembled ping is answered");
                prop_assert!(texts.iter().any(|t| t == b"3sentinel"));
                prop_assert_eq!(close, None);
            } else {
                // (a reset may drop the close frame, never turn it into another)
                prop_assert!(matches!(close, Some(1009) | None), "fragments past the limit are refused");
                prop_assert!(!texts.contains(&pong));
            }
        }
    });
    assert_eq!(
        CRATE_PANICS.load(Ordering::SeqCst),
        0,
        "the server panicked"
    );
}
