//! The Node Socket.io client (`js/sio-driver.mjs`), driven over its stdin and stdout.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the driver's npm packages once per machine (`npm ci`), safe across test processes.
pub fn ensure_node_modules() {
    let dir = js_dir();
    if dir.join("node_modules/socket.io-client").exists() {
        return;
    }
    let lock = dir.join(".install-lock");
    // mkdir is atomic: one process installs, the others wait for it.
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if dir.join("node_modules/socket.io-client").exists() => return,
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status();
    let _ = std::fs::remove_dir(&lock);
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "npm ci in {} failed",
        dir.display()
    );
}

/// One client's `agent_output` of one agent, counted by the driver in tally mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Events received.
    pub count: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// UTF-8 bytes of their `data`, summed.
    pub bytes: u64,
    /// Events whose seq was not the previous one plus one: a gap, a duplicate or out of order.
    pub anomalies: u64,
    /// The first of those, as `{after, got}`; `null` if none.
    pub first_anomaly: Value,
}

impl Tally {
    /// Asserts the client got seqs `0..total`, each once, in order (`what` says which client).
    pub fn assert_every_line_once(&self, total: u64, what: &str) {
        assert_eq!(
            (self.count, self.first_seq, self.last_seq, self.anomalies),
            (total, Some(0), Some(total.saturating_sub(1)), 0),
            "{what}: every line exactly once, in order: {self:?}"
        );
    }
}

/// Real Socket.io clients in one Node process.
pub struct SioClient {
    _child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    pending: VecDeque<Value>,
    next_ref: u64,
}

const WAIT: Duration = Duration::from_secs(60);

impl SioClient {
    pub async fn start() -> Self {
        ensure_node_modules();
        let mut child = Command::new("node")
            .arg(js_dir().join("sio-driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Self {
            _child: child,
            stdin,
            lines,
            pending: VecDeque::new(),
            next_ref: 0,
        }
    }

    /// Sends the driver a command as is (see `sio-driver.mjs`).
    pub async fn send_raw(&mut self, cmd: Value) {
        self.send(cmd).await;
    }

    async fn send(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to node");
        self.stdin.flush().await.expect("flush node");
    }

    /// Waits for the first line matching `pred`, keeping the others for later calls.
    pub async fn recv_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.pending.iter().position(&pred) {
            return self.pending.remove(at).expect("present");
        }
        let found = tokio::time::timeout(WAIT, async {
            while let Some(value) = self.lines.recv().await {
                if pred(&value) {
                    return Some(value);
                }
                self.pending.push_back(value);
            }
            None
        })
        .await;
        match found {
            Ok(Some(value)) => value,
            _ => panic!("socket.io driver: no {what}; pending: {:?}", self.pending),
        }
    }

    pub async fn connect(&mut self, client: &str, url: &str) {
        let reply = self.try_connect(client, url).await;
        assert_eq!(
            reply["op"], "connected",
            "{client} could not connect: {reply}"
        );
    }

    /// Connects and returns the driver's answer: `{op: "connected"}` or `{op: "connect_error", error}`.
    pub async fn try_connect(&mut self, client: &str, url: &str) -> Value {
        self.try_connect_with(client, url, json!({})).await
    }

    /// Connects with socket.io-client `options` (WebSocket only unless they say otherwise).
    pub async fn try_connect_with(&mut self, client: &str, url: &str, options: Value) -> Value {
        self.send(json!({"op": "connect", "client": client, "url": url, "options": options}))
            .await;
        let c = client.to_owned();
        self.recv_where("connect", move |v| {
            v["client"] == c.as_str() && (v["op"] == "connected" || v["op"] == "connect_error")
        })
        .await
    }

    /// The transport `client` is on now: `polling` or `websocket`.
    pub async fn transport(&mut self, client: &str) -> String {
        self.next_ref += 1;
        let r = self.next_ref;
        self.send(json!({"op": "transport", "client": client, "ref": r}))
            .await;
        let reply = self
            .recv_where("transport", |v| v["op"] == "transport" && v["ref"] == r)
            .await;
        reply["name"].as_str().unwrap_or_default().to_owned()
    }

    /// Emits `event` and returns the server's acknowledgement.
    pub async fn emit_ack(&mut self, client: &str, event: &str, data: Value) -> Value {
        self.next_ref += 1;
        let r = self.next_ref;
        self.send(json!({"op": "emit", "client": client, "ref": r, "event": event, "data": data}))
            .await;
        let reply = self.recv_where("ack", |v| v["ref"] == r).await;
        assert_eq!(reply["op"], "ack", "no ack for {event}: {reply}");
        reply["data"].clone()
    }

    /// The next event named `event` received by `client`.
    pub async fn next_event(&mut self, client: &str, event: &str) -> Value {
        let (c, e) = (client.to_owned(), event.to_owned());
        let v = self
            .recv_where(event, |v| {
                v["op"] == "event" && v["client"] == c.as_str() && v["event"] == e.as_str()
            })
            .await;
        v["data"].clone()
    }

    /// Every event `client` has received so far, without waiting.
    pub fn drain_events(&mut self, client: &str) -> Vec<(String, Value)> {
        while let Ok(value) = self.lines.try_recv() {
            self.pending.push_back(value);
        }
        let mut taken = Vec::new();
        self.pending.retain(|v| {
            if v["op"] == "event" && v["client"] == client {
                taken.push((
                    v["event"].as_str().unwrap_or_default().to_owned(),
                    v["data"].clone(),
                ));
                false
            } else {
                true
            }
        });
        taken
    }
    /// Closes one client's connection.
    pub async fn close(&mut self, client: &str) {
        self.send(json!({"op": "close", "client": client})).await;
        let c = client.to_owned();
        self.recv_where("close", move |v| {
            v["op"] == "closed" && v["client"] == c.as_str()
        })
        .await;
    }

    /// From now on the driver counts `client`'s `agent_output` events instead of passing them
    /// here (see [`Tally`]); its other events still arrive as usual. For floods of output that
    /// the test should not hold in memory.
    pub async fn tally(&mut self, client: &str) {
        self.send(json!({"op": "tally", "client": client})).await;
        let c = client.to_owned();
        self.recv_where("tallying", move |v| {
            v["op"] == "tallying" && v["client"] == c.as_str()
        })
        .await;
    }

    /// From now on `client` rejoins (with `join`, the `join_team` data, plus `since`) whenever
    /// it is told to `resync`, as a real client does.
    pub async fn resume_on_resync(&mut self, client: &str, join: Value) {
        self.send(json!({"op": "resume", "client": client, "join": join}))
            .await;
        let c = client.to_owned();
        self.recv_where("resuming", move |v| {
            v["op"] == "resuming" && v["client"] == c.as_str()
        })
        .await;
    }

    /// What the driver has counted so far of `client`'s `agent_output` for `agent`.
    pub async fn tally_of(&mut self, client: &str, agent: &str) -> Tally {
        self.next_ref += 1;
        let r = self.next_ref;
        self.send(json!({"op": "tally_get", "client": client, "ref": r}))
            .await;
        let reply = self
            .recv_where("tally", |v| v["op"] == "tally" && v["ref"] == r)
            .await;
        let t = &reply["agents"][agent];
        Tally {
            count: t["count"].as_u64().unwrap_or(0),
            first_seq: t["firstSeq"].as_u64(),
            last_seq: t["lastSeq"].as_u64(),
            bytes: t["bytes"].as_u64().unwrap_or(0),
            anomalies: t["anomalies"].as_u64().unwrap_or(0),
            first_anomaly: t["firstAnomaly"].clone(),
        }
    }

    /// The Node process's pid (to pause it with SIGSTOP: a client that stops reading).
    pub fn pid(&self) -> u32 {
        self._child.id().unwrap_or(0)
    }

    /// Connects `count` clients one after another, each emitting `event` at once on connect;
    /// returns how many were acknowledged with `{ok: true}`.
    pub async fn stress(
        &mut self,
        url: &str,
        count: usize,
        event: &str,
        data: Value,
    ) -> (u64, Value) {
        self.next_ref += 1;
        let r = self.next_ref;
        self.send(json!({"op": "stress", "ref": r, "url": url, "count": count, "event": event, "data": data}))
            .await;
        let reply = tokio::time::timeout(
            Duration::from_secs(600),
            self.recv_where("stress", |v| v["ref"] == r),
        )
        .await
        .expect("stress run finished");
        (
            reply["acked"].as_u64().unwrap_or(0),
            reply["failed"].clone(),
        )
    }
}
