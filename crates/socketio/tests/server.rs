//! The server against real clients over loopback: Node's socket.io-client (polling, WebSocket,
//! and the upgrade between them) and a raw WebSocket for what a well-behaved client never sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use covibe_socketio::{Config, Event, Frame, Handler, Io, Sid, Socket};
use covibe_testkit::SioClient;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Seen {
    events: u64,
}

struct Echo {
    refuse: AtomicBool,
    /// `hold` events wait here until the test lets them go.
    gate: Arc<tokio::sync::Semaphore>,
    gone: mpsc::UnboundedSender<Sid>,
    io: OnceLock<Io<Seen>>,
}

impl Handler<Seen> for Echo {
    fn connect(&self, _socket: &Arc<Socket<Seen>>) -> Result<(), String> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err("the server is full, try again shortly".to_owned());
        }
        Ok(())
    }

    fn event(&self, socket: Arc<Socket<Seen>>, event: Event<Seen>) -> BoxFuture<'static, ()> {
        let io = self.io.get().cloned();
        let gate = self.gate.clone();
        Box::pin(async move {
            socket.state().events += 1;
            match event.name.as_str() {
                "echo" => {
                    let data: Value = event.data().unwrap_or(Value::Null);
                    event.ack.send(&data);
                }
                "burst" => {
                    let n: u64 = event.data().unwrap_or(0);
                    for i in 0..n {
                        socket.wait_for_room().await;
                        socket.emit("tick", &i).unwrap();
                    }
                    event.ack.send(&json!({"sent": n}));
                }
                "shout" => {
                    let frame = Frame::event("shout", &event.data);
                    for other in io.map(|io| io.sockets()).unwrap_or_default() {
                        let _ = other.send(frame.clone());
                    }
                    event.ack.send(&json!({"ok": true}));
                }
                "kick" => socket.disconnect(),
                "hold" => {
                    let _pass = gate.acquire().await.unwrap();
                    event.ack.send(&"held");
                }
                "count" => {
                    let events = socket.state().events;
                    event.ack.send(&events);
                }
                _ => event.ack.send(&json!({"error": "unknown event"})),
            }
        })
    }

    fn overloaded(&self, event: Event<Seen>) {
        event.ack.send(&"overloaded");
    }

    fn disconnect(&self, socket: Arc<Socket<Seen>>) -> BoxFuture<'static, ()> {
        let _ = self.gone.send(socket.id);
        Box::pin(async {})
    }
}

struct Server {
    url: String,
    io: Io<Seen>,
    handler: Arc<Echo>,
    gone: mpsc::UnboundedReceiver<Sid>,
}

async fn serve(config: Config) -> Server {
    let (tx, gone) = mpsc::unbounded_channel();
    let handler = Arc::new(Echo {
        refuse: AtomicBool::new(false),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        gone: tx,
        io: OnceLock::new(),
    });
    let io = Io::new(config, handler.clone());
    let _ = handler.io.set(io.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app: axum::Router = io.router();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Server {
        url,
        io,
        handler,
        gone,
    }
}

async fn ticks(sio: &mut SioClient, client: &str, n: u64) {
    for i in 0..n {
        assert_eq!(
            sio.next_event(client, "tick").await,
            json!(i),
            "in order, none lost"
        );
    }
}

/// A browser starts polling and moves to a WebSocket: events flow both ways before, during and
/// after the move, in order, and nothing is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_upgrades_to_websocket_and_loses_nothing() {
    let server = serve(Config::default()).await;
    let mut sio = SioClient::start().await;
    let reply = sio
        .try_connect_with(
            "b",
            &server.url,
            json!({"transports": ["polling", "websocket"]}),
        )
        .await;
    assert_eq!(reply["op"], "connected", "{reply}");
    // Right away, while the upgrade may be under way.
    assert_eq!(
        sio.emit_ack("b", "burst", json!(300)).await,
        json!({"sent": 300})
    );
    ticks(&mut sio, "b", 300).await;
    let mut upgraded = false;
    for _ in 0..100 {
        if sio.transport("b").await == "websocket" {
            upgraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(upgraded, "the client moved to the WebSocket");
    assert_eq!(
        sio.emit_ack("b", "echo", json!({"x": "é"})).await,
        json!({"x": "é"})
    );
    assert_eq!(
        sio.emit_ack("b", "burst", json!(300)).await,
        json!({"sent": 300})
    );
    ticks(&mut sio, "b", 300).await;
    assert_eq!(sio.emit_ack("b", "count", json!(null)).await, json!(4));
}

/// A client that never upgrades (a proxy that blocks WebSockets) is served by polling alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_carries_events_and_acks() {
    let mut server = serve(Config::default()).await;
    let mut sio = SioClient::start().await;
    let reply = sio
        .try_connect_with("p", &server.url, json!({"transports": ["polling"]}))
        .await;
    assert_eq!(reply["op"], "connected", "{reply}");
    assert_eq!(sio.transport("p").await, "polling");
    assert_eq!(
        sio.emit_ack("p", "echo", json!([1, "two"])).await,
        json!([1, "two"])
    );
    assert_eq!(
        sio.emit_ack("p", "burst", json!(500)).await,
        json!({"sent": 500})
    );
    ticks(&mut sio, "p", 500).await;
    sio.close("p").await;
    let gone = tokio::time::timeout(Duration::from_secs(10), server.gone.recv()).await;
    assert!(
        matches!(gone, Ok(Some(_))),
        "the server saw the polling client leave"
    );
}

/// One frame, encoded once, reaches every socket; a client that leaves is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_socket_and_leavers_are_forgotten() {
    let mut server = serve(Config::default()).await;
    let mut sio = SioClient::start().await;
    for name in ["a", "b", "c"] {
        sio.connect(name, &server.url).await;
    }
    assert_eq!(server.io.sockets().len(), 3);
    assert_eq!(
        sio.emit_ack("a", "shout", json!({"hi": 1})).await,
        json!({"ok": true})
    );
    for name in ["a", "b", "c"] {
        assert_eq!(sio.next_event(name, "shout").await, json!({"hi": 1}));
    }
    sio.close("b").await;
    let gone = tokio::time::timeout(Duration::from_secs(10), server.gone.recv()).await;
    assert!(matches!(gone, Ok(Some(_))));
    assert_eq!(server.io.sockets().len(), 2);
}

/// A refused connect reaches the client as `connect_error` with the server's message; a kicked
/// client hears `io server disconnect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_kicks_say_so() {
    let server = serve(Config::default()).await;
    let mut sio = SioClient::start().await;
    server.handler.refuse.store(true, Ordering::Relaxed);
    let refused = sio.try_connect("r", &server.url).await;
    assert_eq!(refused["op"], "connect_error", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("server is full"),
        "{refused}"
    );
    server.handler.refuse.store(false, Ordering::Relaxed);
    sio.connect("k", &server.url).await;
    sio.send_raw(json!({"op": "emit", "client": "k", "ref": 999, "event": "kick", "data": null, "noAck": true}))
        .await;
    let bye = sio
        .recv_where("disconnect", |v| {
            v["op"] == "disconnected" && v["client"] == "k"
        })
        .await;
    assert_eq!(bye["reason"], "io server disconnect", "{bye}");
}

async fn raw_ws(url: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let host = url.strip_prefix("http://").unwrap();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let ws_url = format!("ws://{host}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
    ws
}

/// A raw WebSocket client connected to the namespace (the open packet checked).
async fn connected_raw_ws(url: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut ws = raw_ws(url).await;
    let open = next_text(&mut ws).await.unwrap();
    assert!(open.starts_with(r#"0{"sid":""#), "{open}");
    ws.send(Message::text("40")).await.unwrap();
    let connected = next_text(&mut ws).await.unwrap();
    assert!(connected.starts_with("40{"), "{connected}");
    ws
}

async fn next_text<
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
>(
    ws: &mut S,
) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Garbage costs a client that packet, not its connection; a message over the limit closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_are_dropped_and_oversized_ones_close_the_socket() {
    let server = serve(Config {
        max_payload: 1000,
        ..Config::default()
    })
    .await;
    let mut ws = connected_raw_ws(&server.url).await;
    for garbage in ["42{not json", "42[]", "42[7]", "4x", "47"] {
        ws.send(Message::text(garbage)).await.unwrap();
    }
    ws.send(Message::text(r#"4212["echo","still here"]"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await.unwrap(), r#"4312["still here"]"#);
    ws.send(Message::text(format!(
        r#"42["echo","{}"]"#,
        "x".repeat(2000)
    )))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await, None, "closed");
}

/// A client that stops answering pings is dropped; one that answers stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_by_the_heartbeat() {
    let mut server = serve(Config {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(150),
        ..Config::default()
    })
    .await;
    let mut sio = SioClient::start().await;
    sio.connect("alive", &server.url).await;
    let ws = connected_raw_ws(&server.url).await;
    // The raw client reads nothing more and answers nothing.
    let gone = tokio::time::timeout(Duration::from_secs(10), server.gone.recv()).await;
    assert!(matches!(gone, Ok(Some(_))), "the silent client was dropped");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.io.sockets().len(), 1, "the answering one stays");
    assert_eq!(sio.emit_ack("alive", "echo", json!(1)).await, json!(1));
    drop(ws);
}

/// A client that sends events faster than they are handled gets, past the limit in flight, an
/// answer saying so at once; the ones taken are all answered, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_limit_in_flight_are_refused_with_an_answer() {
    let server = serve(Config {
        max_events_in_flight: 4,
        ..Config::default()
    })
    .await;
    let mut ws = connected_raw_ws(&server.url).await;
    for id in 0..10 {
        ws.send(Message::text(format!(r#"42{id}["hold"]"#)))
            .await
            .unwrap();
    }
    let mut refused = Vec::new();
    while refused.len() < 6 {
        let text = next_text(&mut ws).await.unwrap();
        if text.ends_with(r#"["overloaded"]"#) {
            refused.push(text);
        }
    }
    server.handler.gate.add_permits(10);
    let mut held = 0;
    while held < 4 {
        let text = next_text(&mut ws).await.unwrap();
        assert!(text.ends_with(r#"["held"]"#), "{text}");
        held += 1;
    }
    ws.send(Message::text(r#"4299["echo","after"]"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await.unwrap(), r#"4399["after"]"#);
}

/// A long-polling session's client, raw: what it posts and what the server answers.
struct Polling {
    http: reqwest::Client,
    url: String,
}

impl Polling {
    /// Opens a session: `Ok(sid)`, or the refusal's status and body.
    async fn open(server: &Server) -> Result<Polling, (u16, Value)> {
        let http = reqwest::Client::new();
        let response = http
            .get(format!("{}/socket.io/?EIO=4&transport=polling", server.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status != 200 {
            return Err((status, serde_json::from_str(&text).unwrap()));
        }
        let open: Value = serde_json::from_str(text.strip_prefix('0').unwrap()).unwrap();
        let url = format!(
            "{}/socket.io/?EIO=4&transport=polling&sid={}",
            server.url,
            open["sid"].as_str().unwrap()
        );
        Ok(Polling { http, url })
    }

    /// Posts packets; the status of the answer.
    async fn post(&self, packets: &[String]) -> u16 {
        self.http
            .post(&self.url)
            .body(packets.join("\u{1e}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Waits (bounded) until the server holds `n` sessions.
async fn sessions_become(server: &Server, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.io.sessions() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions, not {n}",
            server.io.sessions()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A polling client that posts pings and events asking for answers, and never fetches them:
/// the answers fill its own queue, which is bounded like any, and the session is closed;
/// another client is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_client_never_reads_are_bounded_and_close_it() {
    let mut server = serve(Config {
        queue_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut sio = SioClient::start().await;
    sio.connect("bystander", &server.url).await;
    let payload = "p".repeat(1000);
    for asks in [
        vec![format!("2{payload}"); 20],
        (0..20)
            .map(|id| format!(r#"42{id}["echo","{payload}"]"#))
            .collect(),
    ] {
        let client = Polling::open(&server).await.unwrap();
        assert_eq!(client.post(&["40".to_owned()]).await, 200);
        let mut posted = 0;
        // 20 KiB of answers a post: the 64 KiB queue is full after a few. (The session's end
        // comes a moment after, from its own task: the posts stop at a bound, and the test
        // waits for the end below.)
        while posted < 100 && client.post(&asks).await == 200 {
            posted += 1;
        }
        assert!(
            posted >= 3,
            "closed after {posted} posts: before its queue was full"
        );
        let gone = tokio::time::timeout(Duration::from_secs(10), server.gone.recv()).await;
        assert!(matches!(gone, Ok(Some(_))), "the application heard it left");
    }
    sessions_become(&server, 1).await;
    assert_eq!(
        sio.emit_ack("bystander", "echo", json!("fine")).await,
        json!("fine")
    );
}

/// One address holds at most its number of sessions, over polling and WebSocket alike; a
/// place it gives back can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_sessions() {
    let server = serve(Config {
        max_sessions_per_address: 3,
        ..Config::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Polling::open(&server).await.unwrap());
    }
    let Err((status, body)) = Polling::open(&server).await else {
        panic!("a fourth session was opened");
    };
    assert_eq!(status, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{body}"
    );
    let host = server.url.strip_prefix("http://").unwrap();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let ws = tokio_tungstenite::client_async(
        format!("ws://{host}/socket.io/?EIO=4&transport=websocket"),
        tcp,
    )
    .await;
    assert!(ws.is_err(), "a WebSocket past the limit was accepted");
    assert_eq!(
        held[0].post(&["1".to_owned()]).await,
        200,
        "closed by the client"
    );
    sessions_become(&server, 2).await;
    held.push(Polling::open(&server).await.unwrap());
}

/// A client that opens a session and never connects to the namespace is dropped at the connect
/// timeout, long before the first ping would have found it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_is_dropped_at_the_connect_timeout() {
    let server = serve(Config {
        connect_timeout: Duration::from_millis(300),
        ping_interval: Duration::from_secs(600),
        ..Config::default()
    })
    .await;
    let _idle = Polling::open(&server).await.unwrap();
    let _raw = raw_ws(&server.url).await;
    sessions_become(&server, 0).await;
}
