//! A private PostgreSQL server from the machine's binaries, on a free loopback port, that a
//! test may stop and start again (the machine's shared server must never be restarted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::process::{Proc, free_port};

/// How the server is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStop {
    /// SIGINT: open transactions are rolled back, clients disconnected, a clean checkpoint.
    Fast,
    /// SIGQUIT: the server stops at once, as in a crash; the next start replays the WAL.
    Immediate,
}

/// A PostgreSQL cluster of its own in a temporary directory (trust authentication, user
/// `postgres`), run as the `postgres` system user when the test runs as root.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `postgres` uid and gid when running as root.
    owner: Option<(u32, u32)>,
    proc: Option<Proc>,
}

impl PgServer {
    /// `initdb` and start; panics if the machine has no PostgreSQL binaries.
    pub async fn start() -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = if is_root() {
            let ids = postgres_ids().await;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1)).expect("chown");
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            port: free_port(),
            bin,
            dir,
            owner,
            proc: None,
        };
        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        let out = initdb.output().await.expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server.launch().await;
        server
    }

    /// A URL for the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the PostgreSQL binaries, as the `postgres` user when running as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.owner {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    async fn launch(&mut self) {
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=200"]);
        let mut proc = Proc::spawn("postgres", postgres);
        proc.wait_for_line(
            "database system is ready to accept connections",
            Duration::from_secs(60),
        )
        .await;
        self.proc = Some(proc);
    }

    /// Stops the server and waits until it is gone.
    pub async fn stop(&mut self, how: PgStop) {
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        let signal = match how {
            PgStop::Fast => "-INT",
            PgStop::Immediate => "-QUIT",
        };
        if let Some(pid) = proc.child.id() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .await
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
        let _ = proc.child.wait().await;
    }

    /// Starts the stopped server again on the same port, with its data.
    pub async fn start_again(&mut self) {
        assert!(self.proc.is_none(), "the server is running");
        self.launch().await;
    }

    /// Whether the server runs now.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGQUIT: the postmaster takes its children down with it (SIGKILL would leave them).
        if let Some(pid) = self.proc.as_ref().and_then(|p| p.child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
        }
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` (override with `COVIBE_TEST_PG_BIN`).
fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COVIBE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no PostgreSQL binaries under {}", root.display()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` system user.
async fn postgres_ids() -> (u32, u32) {
    let id = |flag: &'static str| async move {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .await
            .expect("run id");
        assert!(
            out.status.success(),
            "no postgres user to run PostgreSQL as"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("a numeric id")
    };
    (id("-u").await, id("-g").await)
}
