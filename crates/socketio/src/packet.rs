//! The wire: Engine.IO v4 packets (one character of type, then the payload) carrying Socket.IO v5
//! packets (type, optional namespace, optional ack id, JSON).

use bytes::Bytes;
use serde_json::value::RawValue;

/// What a client sent, as Engine.IO sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Engine<'a> {
    /// `1`: the client is leaving.
    Close,
    /// `2`: a ping (only `2probe` during an upgrade is expected from a client).
    Ping(&'a str),
    /// `3`: the answer to our ping.
    Pong,
    /// `4`: a Socket.IO packet.
    Message(&'a str),
    /// `5`: the client moved to the WebSocket it probed.
    Upgrade,
    /// `6`: nothing.
    Noop,
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

pub(crate) fn engine(text: &str) -> Result<Engine<'_>, Malformed> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(Malformed("empty packet"))?;
    let rest = chars.as_str();
    Ok(match kind {
        '1' => Engine::Close,
        '2' => Engine::Ping(rest),
        '3' => Engine::Pong,
        '4' => Engine::Message(rest),
        '5' => Engine::Upgrade,
        '6' => Engine::Noop,
        _ => return Err(Malformed("unknown engine.io packet type")),
    })
}

/// A Socket.IO packet from a client, on the default namespace.
#[derive(Debug)]
pub(crate) enum Socket<'a> {
    /// `0`: connect (its auth payload is not used).
    Connect,
    /// `1`: disconnect.
    Disconnect,
    /// `2`: an event: its name, its first argument, and the ack id if the client wants an answer.
    Event {
        name: String,
        data: Option<&'a RawValue>,
        ack: Option<u64>,
    },
    /// `3`: an answer to an ack we asked for (we never ask).
    Ack,
    /// `5`/`6`: binary packets (attachments follow as binary frames); not supported.
    Binary,
    /// A packet for another namespace than `/`.
    OtherNamespace(&'a str),
}

pub(crate) fn socket(text: &str) -> Result<Socket<'_>, Malformed> {
    let kind = *text
        .as_bytes()
        .first()
        .ok_or(Malformed("empty socket.io packet"))?;
    // A type that is not one byte (not ASCII) is no type at all.
    let mut rest = text
        .get(1..)
        .ok_or(Malformed("unknown socket.io packet type"))?;
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let namespace = &rest[..end];
        if namespace != "/" {
            return Ok(Socket::OtherNamespace(namespace));
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits == 0 {
        None
    } else {
        Some(
            rest[..digits]
                .parse()
                .map_err(|_| Malformed("ack id out of range"))?,
        )
    };
    rest = &rest[digits..];
    Ok(match kind {
        b'0' => Socket::Connect,
        b'1' => Socket::Disconnect,
        b'2' => {
            let args: Vec<&RawValue> = serde_json::from_str(rest)
                .map_err(|_| Malformed("an event must be a JSON array"))?;
            let mut args = args.into_iter();
            let name = args
                .next()
                .and_then(|name| serde_json::from_str::<String>(name.get()).ok())
                .ok_or(Malformed("an event must start with its name"))?;
            Socket::Event {
                name,
                data: args.next(),
                ack,
            }
        }
        b'3' => Socket::Ack,
        b'5' | b'6' => Socket::Binary,
        _ => return Err(Malformed("unknown socket.io packet type")),
    })
}

/// One packet ready to send: Engine.IO text, the same bytes for every socket it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(pub(crate) Bytes);

impl Frame {
    /// `42["name",payload]`: an event with one argument, serialized straight into the frame.
    pub fn event(name: &str, payload: &impl serde::Serialize) -> Self {
        let mut text = Vec::with_capacity(256);
        text.extend_from_slice(b"42[");
        write_json(&mut text, name, b"\"\"");
        text.push(b',');
        write_json(&mut text, payload, b"null");
        text.push(b']');
        Self(Bytes::from(text))
    }

    /// `43<id>[payload]`: the answer to an event.
    pub(crate) fn ack(id: u64, payload: &impl serde::Serialize) -> Self {
        let mut text = format!("43{id}[").into_bytes();
        write_json(&mut text, payload, b"null");
        text.push(b']');
        Self(Bytes::from(text))
    }

    /// A frame from its Engine.IO text (e.g. an event frame edited by the application).
    pub fn from_text(text: String) -> Self {
        Self(Bytes::from(text))
    }

    /// The Engine.IO text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Bytes on the wire (before WebSocket framing).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends the JSON of `value`, or `fallback` (logged) if it cannot be serialized (a map with
/// non-string keys, a failing `Serialize`).
fn write_json(text: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized), fallback: &[u8]) {
    let start = text.len();
    if let Err(err) = serde_json::to_writer(&mut *text, value) {
        tracing::error!(error = %err, "socket.io payload could not be serialized");
        text.truncate(start);
        text.extend_from_slice(fallback);
    }
}

pub(crate) const PING: Frame = Frame(Bytes::from_static(b"2"));
pub(crate) const NOOP: Frame = Frame(Bytes::from_static(b"6"));
pub(crate) const CLOSE: Frame = Frame(Bytes::from_static(b"1"));
pub(crate) const DISCONNECT: Frame = Frame(Bytes::from_static(b"41"));
/// Separates packets in one polling body.
pub(crate) const SEPARATOR: u8 = 0x1e;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(engine("2probe"), Ok(Engine::Ping("probe")));
        assert_eq!(engine("3"), Ok(Engine::Pong));
        assert_eq!(engine("42[\"a\"]"), Ok(Engine::Message("2[\"a\"]")));
        assert_eq!(engine("5"), Ok(Engine::Upgrade));
        assert!(engine("").is_err());
        assert!(engine("9").is_err());
    }

    #[test]
    fn socket_events_with_and_without_acks() {
        let Ok(Socket::Event { name, data, ack }) = socket(r#"217["join_team",{"a":1}]"#) else {
            panic!("an event");
        };
        assert_eq!(
            (name.as_str(), data.map(RawValue::get), ack),
            ("join_team", Some(r#"{"a":1}"#), Some(17))
        );
        let Ok(Socket::Event { data, ack, .. }) = socket(r#"2["ping"]"#) else {
            panic!("an event");
        };
        assert!(data.is_none() && ack.is_none());
        let Ok(Socket::Event { ack, .. }) = socket(r#"2/,3["x",1]"#) else {
            panic!("the default namespace spelled out");
        };
        assert_eq!(ack, Some(3));
        assert!(matches!(
            socket("0/admin,"),
            Ok(Socket::OtherNamespace("/admin"))
        ));
        assert!(matches!(socket(r#"0{"token":"x"}"#), Ok(Socket::Connect)));
        assert!(socket("2{}").is_err(), "not an array");
        assert!(socket("é[]").is_err(), "a type that is not one byte");
        assert!(socket("2[1]").is_err(), "no name");
        assert!(socket("299999999999999999999999[\"a\"]").is_err());
    }

    #[test]
    fn frames_are_engine_io_text() {
        let payload = serde_json::json!({"x": "y"});
        assert_eq!(
            &Frame::event("agent\"output", &payload).0[..],
            br#"42["agent\"output",{"x":"y"}]"#
        );
        assert_eq!(&Frame::ack(5, &payload).0[..], br#"435[{"x":"y"}]"#);
        let unserializable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(
            &Frame::event("e", &unserializable).0[..],
            br#"42["e",null]"#
        );
    }

    /// Random and mutated packets: every one is parsed or refused, never a panic.
    #[test]
    fn arbitrary_text_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let seeds = [
            r#"42["join_team",{"teamId":"t","since":{"a":1}}]"#,
            r#"4217["chat_message",{"message":"é"}]"#,
            "40",
            r#"40{"token":"x"}"#,
            "2probe",
            r#"451-["x",{"_placeholder":true,"num":0}]"#,
        ];
        let alphabet = b"0123456789[]{}\",:/-\\ ae\xc3";
        for round in 0..50_000 {
            let mut text: Vec<u8> = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(0..6) {
                let at = rng.gen_range(0..=text.len());
                match rng.gen_range(0..4) {
                    0 => text.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
                    1 => {
                        text.splice(at..at, "é".bytes());
                    }
                    2 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.truncate(at),
                }
            }
            let Ok(text) = std::str::from_utf8(&text) else {
                continue;
            };
            if let Ok(Engine::Message(message)) = engine(text) {
                let _ = socket(message);
            }
        }
    }
}
