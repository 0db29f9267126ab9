//! WebSocket (RFC 6455, no extensions) for Engine.IO: the handshake, the framing, and the task
//! that owns a socket's WebSocket: it reads the client's frames, writes the socket's queue, and
//! keeps the heartbeat.
//!
//! An idle socket holds no buffer here: a read is polled with a buffer on the stack (a pending
//! read has taken nothing), and the write buffer lives only while frames are written.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::protocol::{Flow, Heartbeat, on_packet};
use crate::registry::Registry;
use crate::socket::Socket;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` for a valid upgrade request, or why it is not one.
pub(crate) fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err("a websocket transport needs a WebSocket upgrade request");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("unsupported WebSocket version (13 is)");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("Sec-WebSocket-Key is missing")?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    HeaderValue::from_str(&accept).map_err(|_| "bad Sec-WebSocket-Key")
}

pub(crate) fn switching_protocols(accept: HeaderValue) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes.
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Writes a frame's header (server frames are never masked).
fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

pub(crate) fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// One frame from the client, unmasked in place.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    fin: bool,
    opcode: u8,
    payload: std::ops::Range<usize>,
    /// Bytes of the buffer the frame took.
    len: usize,
}

/// Parses the first frame of `buf`, if it is all there.
fn parse(buf: &mut [u8], max_payload: usize) -> Result<Option<Received>, u16> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(PROTOCOL_ERROR); // no extension was agreed
    }
    if b1 & 0x80 == 0 {
        return Err(PROTOCOL_ERROR); // a client masks every frame
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    if opcode >= CLOSE && (!fin || len > 125) {
        return Err(PROTOCOL_ERROR);
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= max_payload)
        .ok_or(TOO_BIG)?;
    let Some(mask) = buf
        .get(at..at + 4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok())
    else {
        return Ok(None);
    };
    at += 4;
    // Without a payload limit a declared length may reach past the end of memory.
    let end = at.checked_add(len).ok_or(TOO_BIG)?;
    let Some(payload) = buf.get_mut(at..end) else {
        return Ok(None);
    };
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    Ok(Some(Received {
        fin,
        opcode,
        payload: at..end,
        len: end,
    }))
}

/// Reads what is there, with a buffer that exists only while the read is polled.
async fn read_some<T: AsyncRead + Unpin>(io: &mut T) -> std::io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        // Not zeroed: this runs at every wake-up of the socket's task, mostly to find nothing.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().to_vec())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What woke the socket's task.
enum Step {
    Read(std::io::Result<Vec<u8>>),
    Write,
    Tick,
}

/// Frames written per write call, about.
const WRITE_BATCH: usize = 64 * 1024;

/// What the client has sent of a message split over frames, and what is left of the buffer.
#[derive(Default)]
struct Incoming {
    buf: Vec<u8>,
    message: Vec<u8>,
    /// The opcode of the message being assembled, if any.
    opcode: Option<u8>,
}

/// Runs a socket over its WebSocket until either side ends it. `upgraded` is false while a
/// polling session probes: the queue is then still the polling requests' to take. Returns
/// whether the socket had moved to the WebSocket (a failed probe leaves it polling).
pub(crate) async fn run<S: Default + Send + 'static>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
    io: hyper::upgrade::Upgraded,
    heartbeat: &mut Heartbeat,
    mut upgraded: bool,
) -> bool {
    let mut io = TokioIo::new(io);
    let mut incoming = Incoming::default();
    // One timer for the socket's life, moved at each tick (not a new one at every wake-up).
    let beat = tokio::time::sleep_until(heartbeat.deadline());
    tokio::pin!(beat);
    let close_code = loop {
        let step = {
            let wake = socket.wake.notified();
            tokio::select! {
                read = read_some(&mut io) => Step::Read(read),
                () = wake, if upgraded => Step::Write,
                () = &mut beat => Step::Tick,
            }
        };
        match step {
            Step::Read(Ok(bytes)) if bytes.is_empty() => break None,
            Step::Read(Err(err)) => {
                tracing::debug!(sid = socket.id, error = %err, "websocket read failed");
                break None;
            }
            Step::Read(Ok(bytes)) => {
                match on_bytes(
                    registry,
                    socket,
                    &mut io,
                    &mut incoming,
                    bytes,
                    &mut upgraded,
                )
                .await
                {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) => break Some(NORMAL),
                    Err(code) => break Some(code),
                }
                if upgraded && write_queue(socket, &mut io).await.is_err() {
                    break None;
                }
            }
            Step::Write => match write_queue(socket, &mut io).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break Some(NORMAL),
                Err(_) => break None,
            },
            Step::Tick => {
                if heartbeat.tick(&registry.config, socket) == Flow::Close {
                    break Some(NORMAL);
                }
                beat.as_mut().reset(heartbeat.deadline());
                if !upgraded {
                    continue;
                }
                if write_queue(socket, &mut io).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(code) = close_code {
        let mut out = Vec::with_capacity(4);
        frame(&mut out, CLOSE, &code.to_be_bytes());
        let _ = io.write_all(&out).await;
    }
    let _ = io.shutdown().await;
    upgraded
}

/// Writes everything queued. `Close` once the socket is closing and all is written.
async fn write_queue<S, T: tokio::io::AsyncWrite + Unpin>(
    socket: &Socket<S>,
    io: &mut T,
) -> std::io::Result<Flow> {
    loop {
        let (frames, closing) = socket.take(WRITE_BATCH);
        if frames.is_empty() {
            return Ok(if closing { Flow::Close } else { Flow::Continue });
        }
        let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 4).sum());
        for queued in &frames {
            frame(&mut out, TEXT, &queued.0);
        }
        drop(frames);
        io.write_all(&out).await?;
        if closing {
            return Ok(Flow::Close);
        }
    }
}

/// Handles what was read: whole frames are acted on, a partial one is kept for the next read.
async fn on_bytes<S: Default + Send + 'static, T: tokio::io::AsyncWrite + Unpin>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
    io: &mut T,
    incoming: &mut Incoming,
    bytes: Vec<u8>,
    upgraded: &mut bool,
) -> Result<Flow, u16> {
    let mut buf = if incoming.buf.is_empty() {
        bytes
    } else {
        let mut buf = std::mem::take(&mut incoming.buf);
        buf.extend_from_slice(&bytes);
        buf
    };
    let max = registry.config.max_payload;
    let mut at = 0;
    let mut flow = Flow::Continue;
    while flow == Flow::Continue {
        let Some(received) = parse(&mut buf[at..], max)? else {
            break;
        };
        let payload = at + received.payload.start..at + received.payload.end;
        at += received.len;
        let (opcode, whole) = match (received.opcode, incoming.opcode) {
            (CONTINUATION, Some(opcode)) => {
                if incoming.message.len() + payload.len() > max {
                    return Err(TOO_BIG);
                }
                incoming.message.extend_from_slice(&buf[payload]);
                if !received.fin {
                    continue;
                }
                incoming.opcode = None;
                (opcode, std::mem::take(&mut incoming.message))
            }
            (CONTINUATION, None) => return Err(PROTOCOL_ERROR),
            (TEXT | BINARY, Some(_)) => return Err(PROTOCOL_ERROR),
            (opcode @ (TEXT | BINARY), None) if !received.fin => {
                incoming.opcode = Some(opcode);
                incoming.message = buf[payload].to_vec();
                continue;
            }
            (opcode, _) => (opcode, buf[payload].to_vec()),
        };
        flow = match opcode {
            TEXT => {
                let text = String::from_utf8(whole).map_err(|_| INVALID_DATA)?;
                on_text(registry, socket, io, &text, upgraded)
                    .await
                    .map_err(|_| NORMAL)?
            }
            BINARY => {
                tracing::debug!(sid = socket.id, "binary frame ignored (not supported)");
                Flow::Continue
            }
            PING => {
                let mut out = Vec::with_capacity(whole.len() + 2);
                frame(&mut out, PONG, &whole);
                io.write_all(&out).await.map_err(|_| NORMAL)?;
                Flow::Continue
            }
            PONG => Flow::Continue,
            CLOSE => Flow::Close,
            _ => return Err(PROTOCOL_ERROR),
        };
    }
    if at < buf.len() {
        buf.drain(..at);
        incoming.buf = buf;
    }
    Ok(flow)
}

async fn on_text<S: Default + Send + 'static, T: tokio::io::AsyncWrite + Unpin>(
    registry: &Arc<Registry<S>>,
    socket: &Arc<Socket<S>>,
    io: &mut T,
    text: &str,
    upgraded: &mut bool,
) -> std::io::Result<Flow> {
    if !*upgraded {
        match text {
            // The probe of a polling session: answered here, and the waiting poll is let go.
            "2probe" => {
                let mut out = Vec::with_capacity(8);
                frame(&mut out, TEXT, b"3probe");
                io.write_all(&out).await?;
                socket.send_control(crate::packet::NOOP);
                return Ok(Flow::Continue);
            }
            "5" => {
                socket.websocket.store(true, Ordering::Release);
                *upgraded = true;
                return Ok(Flow::Continue);
            }
            _ => {}
        }
    }
    Ok(on_packet(registry, socket, text))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len if len < 126 => out.push(0x80 | len as u8),
            len => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn frames_parse_only_when_whole_and_masked() {
        let mut buf = masked(TEXT, true, b"42[\"x\"]");
        let received = parse(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&buf[received.payload.clone()], b"42[\"x\"]");
        assert_eq!(received.len, buf.len());
        let mut partial = masked(TEXT, true, b"hello")[..5].to_vec();
        assert_eq!(parse(&mut partial, 100), Ok(None));
        let mut long = masked(TEXT, true, &[b'a'; 300]);
        assert_eq!(parse(&mut long, 100), Err(TOO_BIG));
        let mut unmasked = vec![0x81, 1, b'a'];
        assert_eq!(parse(&mut unmasked, 100), Err(PROTOCOL_ERROR));
        let mut fragmented_ping = masked(PING, false, b"");
        assert_eq!(parse(&mut fragmented_ping, 100), Err(PROTOCOL_ERROR));
    }

    /// Found by `fuzz_websocket_frame_header`: with no payload limit, a header declaring
    /// 2^64 - 1 bytes overflowed the end of the frame.
    #[test]
    fn a_huge_declared_length_without_a_limit_is_refused() {
        let mut buf = vec![0x81, 0x80 | 127];
        buf.extend_from_slice(&u64::MAX.to_be_bytes());
        buf.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&mut buf, usize::MAX), Err(TOO_BIG));
    }

    #[test]
    fn server_frames_carry_their_length() {
        let mut out = Vec::new();
        frame(&mut out, TEXT, &[b'x'; 200]);
        assert_eq!(&out[..4], &[0x81, 126, 0, 200]);
        assert_eq!(out.len(), 204);
        out.clear();
        frame(&mut out, TEXT, &[b'x'; 70_000]);
        assert_eq!(out[1], 127);
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            accept_key(&headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        headers.remove(header::SEC_WEBSOCKET_KEY);
        assert!(accept_key(&headers).is_err());
    }

    /// Random and mutated bytes: a frame is found whole within the buffer, or none is, or the
    /// connection is refused with a close code; never a panic, never more than the limit.
    #[test]
    fn arbitrary_bytes_never_panic_or_overrun() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..50_000 {
            let mut buf = if round % 2 == 0 {
                let len = rng.gen_range(0..300);
                masked(TEXT, rng.r#gen(), &vec![b'x'; len])
            } else {
                (0..rng.gen_range(0..40)).map(|_| rng.r#gen()).collect()
            };
            for _ in 0..rng.gen_range(0..4) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..buf.len());
                buf[at] = rng.r#gen();
            }
            if let Ok(Some(received)) = parse(&mut buf, 200) {
                assert!(received.len <= buf.len());
                assert!(received.payload.end <= received.len);
                assert!(received.payload.len() <= 200);
            }
        }
    }
}
