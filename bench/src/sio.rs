//! A minimal Socket.io v5 client (engine.io v4) over one WebSocket: what a phone does, and no
//! more. Open packet `0{...}`, namespace connect `40`, events `42[...]`, emits with an ack id
//! `42<id>[...]` answered by `43<id>[...]`, engine.io ping `2` answered with pong `3`.
//!
//! Packets are handed out as the text frame they came in (no JSON parsing here): the load
//! generator only looks for a marker inside `agent_output`, so reading an event costs one scan.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// How long connecting (TCP, WebSocket upgrade, engine.io open, namespace connect) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One packet from the server.
#[derive(Debug)]
pub enum Packet {
    /// `42[...]`: an event; the whole frame (the JSON array starts at byte 2).
    Event(Utf8Bytes),
    /// `43<id>[...]`: the answer to an emit; the frame and where its JSON array starts.
    Ack(u64, Utf8Bytes, usize),
    /// The server disconnected the socket or closed the connection.
    Closed,
}

impl Packet {
    /// Whether this is the event `name`.
    pub fn is_event(&self, name: &str) -> bool {
        match self {
            Self::Event(text) => event_is(text.as_bytes(), name),
            _ => false,
        }
    }
}

/// Whether the `42[...]` frame `frame` carries the event `name`.
pub fn event_is(frame: &[u8], name: &str) -> bool {
    let rest = frame.get(2..).unwrap_or_default();
    rest.len() > name.len() + 3
        && rest[0] == b'['
        && rest[1] == b'"'
        && rest[2..].starts_with(name.as_bytes())
        && rest[2 + name.len()] == b'"'
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn host_port(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} is not an http:// URL"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// A WebSocket to `path` on the server at `base` (`http://host:port`).
pub async fn websocket(base: &str, path: &str) -> Result<WebSocketStream<TcpStream>> {
    let host = host_port(base)?;
    let stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    stream.set_nodelay(true)?;
    // Small read chunks: thousands of idle client sockets should not cost the load generator
    // 128 KiB each. Larger messages still arrive whole.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = client_async_with_config(format!("ws://{host}{path}"), stream, Some(config))
        .await
        .with_context(|| format!("WebSocket upgrade at ws://{host}{path}"))?;
    Ok(ws)
}

pub struct Socket {
    ws: WebSocketStream<TcpStream>,
    next_ack: u64,
}

impl Socket {
    /// Connects to the default namespace of the Socket.io server at `base`.
    pub async fn connect(base: &str) -> Result<Self> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(base))
            .await
            .context("Socket.io connect timed out")?
    }

    async fn connect_inner(base: &str) -> Result<Self> {
        let mut ws = websocket(base, "/socket.io/?EIO=4&transport=websocket").await?;
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            bail!("expected the engine.io open packet, got {open:?}");
        }
        ws.send(Message::text("40")).await?;
        loop {
            let text = next_text(&mut ws).await?;
            match text.as_bytes() {
                [b'4', b'0', ..] => break,
                [b'4', b'4', ..] => bail!("namespace connect refused: {text}"),
                [b'2'] => ws.send(Message::text("3")).await?,
                _ => {}
            }
        }
        Ok(Self { ws, next_ack: 0 })
    }

    /// Emits `event` with `data` and an ack id; returns the id.
    pub async fn emit_with_ack(&mut self, event: &str, data: &Value) -> Result<u64> {
        let id = self.next_ack;
        self.next_ack += 1;
        let body = serde_json::to_string(&serde_json::json!([event, data]))?;
        self.ws.send(Message::text(format!("42{id}{body}"))).await?;
        Ok(id)
    }

    /// Emits and waits for the answer, dropping any event that arrives meanwhile.
    pub async fn call(&mut self, event: &str, data: &Value, timeout: Duration) -> Result<Value> {
        let id = self.emit_with_ack(event, data).await?;
        let wait = async {
            loop {
                match self.next().await? {
                    Packet::Ack(got, text, at) if got == id => {
                        let mut args: Vec<Value> = serde_json::from_str(&text[at..])?;
                        return Ok(if args.is_empty() {
                            Value::Null
                        } else {
                            args.swap_remove(0)
                        });
                    }
                    Packet::Closed => bail!("socket closed while waiting for the {event} ack"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .with_context(|| format!("no {event} ack within {timeout:?}"))?
    }

    /// The next event or ack; answers pings on the way.
    pub async fn next(&mut self) -> Result<Packet> {
        loop {
            let text = match self.ws.next().await {
                None => return Ok(Packet::Closed),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) => return Ok(Packet::Closed),
                Some(Ok(_)) => continue,
            };
            let bytes = text.as_bytes();
            match bytes {
                [b'2'] => self.ws.send(Message::text("3")).await?,
                [b'4', b'2', ..] => return Ok(Packet::Event(text)),
                [b'4', b'3', rest @ ..] => {
                    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                    let id = std::str::from_utf8(&rest[..digits])
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(u64::MAX);
                    return Ok(Packet::Ack(id, text, 2 + digits));
                }
                [b'4', b'1', ..] | [b'1', ..] => return Ok(Packet::Closed),
                _ => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            None => bail!("connection closed during the Socket.io handshake"),
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(_))) => {
                bail!("connection closed during the Socket.io handshake")
            }
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_events_by_name() {
        assert!(event_is(br#"42["agent_output",{"a":1}]"#, "agent_output"));
        assert!(!event_is(br#"42["agent_outputs",{}]"#, "agent_output"));
        assert!(!event_is(br#"42["agent_status",{}]"#, "agent_output"));
        assert!(!event_is(b"42", "agent_output"));
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("http://127.0.0.1:80/").ok(), Some("127.0.0.1:80"));
        assert!(host_port("https://x").is_err());
    }
}
