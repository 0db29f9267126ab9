//! Child processes for end-to-end tests: started, their output watched line by line, killed on
//! drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && !dir.join("proto").exists() {
        if !dir.pop() {
            break;
        }
    }
    dir
}

/// A running child with its stdout and stderr merged into one line channel.
pub struct Proc {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub name: String,
}

impl Proc {
    /// Starts `command` with its output piped; stdin is closed.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, lines) = mpsc::unbounded_channel();
        let echo = std::env::var_os("COVIBE_TEST_ECHO").is_some();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            let label = name.to_owned();
            tokio::spawn(async move {
                let mut reader = BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let label = name.to_owned();
            tokio::spawn(async move {
                let mut reader = BufReader::new(err).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    /// Waits (at most `timeout`, a hang guard) for a line containing `needle`; returns it.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let name = self.name.clone();
        let mut seen = Vec::new();
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "{name} never printed {needle:?}; it printed:\n{}",
                seen.join("\n")
            ),
        }
    }

    /// Every line printed so far and not yet read.
    pub fn drain(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// The `http://HOST:PORT` at the end of a `... listening on http://HOST:PORT` line.
    pub async fn wait_for_url(&mut self, needle: &str) -> String {
        let line = self.wait_for_line(needle, Duration::from_secs(60)).await;
        let at = line
            .find("http://")
            .unwrap_or_else(|| panic!("no url in {line:?}"));
        line[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A command for one of the workspace's binaries, with no `COVIBE_*` variable inherited from
/// the test's environment (the configuration rejects keys it does not know).
pub fn clean_command(program: &std::path::Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COVIBE_") {
            command.env_remove(&key);
        }
    }
    command
}

/// The fake agent command tests run instead of Claude Code.
pub fn fake_agent_command() -> String {
    format!(
        "{} -p {{task}} --output-format stream-json --verbose",
        workspace_root().join("scripts/fake-claude").display()
    )
}

/// Ports below the kernel's ephemeral range (32768 and up), where no outgoing connection takes
/// one between our choosing it and a server binding it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port free now that this process has not handed out before, for a server told its address
/// (or one that must come back on the same address). Asking the kernel for port 0 and letting
/// go can hand out the same port twice, or one an outgoing connection then takes: the server
/// then fails with "Address already in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Where this process starts looking: apart from other processes' (tests run in parallel).
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).expect("the span fits a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}")
}

/// A private `redis-server` (no persistence) the test may kill and start again.
pub struct RedisServer {
    pub port: u16,
    proc: Option<Proc>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            proc: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await;
            let _ = proc.child.wait().await;
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let mut proc = Proc::spawn("redis", command);
        proc.wait_for_line("Ready to accept connections", Duration::from_secs(30))
            .await;
        self.proc = Some(proc);
    }
}
