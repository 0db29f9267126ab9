//! Starting the stacks under test on this machine, each with its own `redis-server` on a free
//! port (so Redis CPU is attributable): the seed's Node server, CoVibe in one process
//! (`standalone`, SQLite and the in-process hot store) and CoVibe as one process per service over
//! a throwaway PostgreSQL database.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::procstat::Servers;
use crate::target::Kind;

/// The workspace's root (bench/..).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The seed's server: `../shared/peers/seed-node` next to the workspace, unless
/// `COVIBE_BENCH_SEED_DIR` says otherwise.
pub fn default_seed_dir() -> PathBuf {
    std::env::var_os("COVIBE_BENCH_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/peers/seed-node"))
}

/// The PostgreSQL the multi-process stack creates its throwaway database on.
pub fn pg_admin_url() -> String {
    std::env::var("COVIBE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A port free now, never handed out twice in this process (see `covibe_testkit::free_port`).
pub fn free_port() -> Result<u16> {
    Ok(covibe_testkit::free_port())
}

/// A child process whose stdout and stderr go to a log file; killed on drop.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = OpenOptions::new().append(true).open(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("no pid")?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            log,
            child,
        })
    }

    /// Waits for a log line containing `needle`; returns it.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before printing {needle:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&text)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `http://HOST:PORT` of a `... listening on http://HOST:PORT` line.
    pub async fn wait_for_url(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let line = self.wait_for(needle, timeout).await?;
        let at = line.find("http://").context("no url in the line")?;
        Ok(line[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A private `redis-server` without persistence.
pub async fn redis(dir: &Path, name: &str) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    command.current_dir(dir);
    let mut proc = Proc::spawn(name, command, dir)?;
    proc.wait_for("Ready to accept connections", Duration::from_secs(30))
        .await?;
    Ok((proc, port))
}

/// Which stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StackKind {
    /// The seed's Node server over its own Redis.
    Seed,
    /// CoVibe, one process per service, PostgreSQL and its own Redis.
    Multi,
    /// CoVibe in one process over SQLite.
    Standalone,
}

impl StackKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Multi => "covibe-multi",
            Self::Standalone => "covibe-standalone",
        }
    }

    pub fn target(self) -> Kind {
        match self {
            Self::Seed => Kind::Seed,
            Self::Multi | Self::Standalone => Kind::Covibe,
        }
    }
}

/// What the stacks need from this machine.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub covibe: PathBuf,
    pub agent: PathBuf,
    pub seed_dir: PathBuf,
}

/// A running stack; everything stops (and the throwaway database is dropped) on drop.
pub struct Stack {
    pub kind: StackKind,
    pub url: String,
    pub servers: Servers,
    pub dir: PathBuf,
    procs: Vec<Proc>,
    database: Option<String>,
}

/// Limits a real deployment keeps low, raised so a benchmark from one address is not refused.
const BENCH_LIMITS: &[(&str, &str)] = &[
    ("COVIBE_LIMITS__MAX_RUNNING_AGENTS", "100000"),
    ("COVIBE_LIMITS__SPAWNS_PER_MINUTE", "100000"),
    ("COVIBE_LIMITS__RATE_PER_IP_PER_SEC", "1000000"),
    ("COVIBE_LIMITS__BURST_PER_IP", "1000000"),
    ("COVIBE_LIMITS__RATE_PER_USER_PER_SEC", "1000000"),
    ("COVIBE_LIMITS__BURST_PER_USER", "1000000"),
    ("COVIBE_LIMITS__LOGIN_PER_IP_PER_MIN", "1000000"),
    ("COVIBE_LIMITS__LOGIN_BURST_PER_IP", "1000000"),
    ("COVIBE_LIMITS__MAX_CONCURRENT_REQUESTS", "100000"),
    ("COVIBE_LIMITS__MAX_SOCKETS_PER_ADDRESS", "1000000"),
];

/// `COVIBE_BENCH_WRAP_<ROLE>` (e.g. `COVIBE_BENCH_WRAP_GATEWAY="valgrind --tool=callgrind"`)
/// runs that service under the given command, for profiling.
fn covibe_command(bins: &Binaries, role: &str, dir: &Path) -> Command {
    let wrap_key = format!(
        "COVIBE_BENCH_WRAP_{}",
        role.to_uppercase().replace('-', "_")
    );
    let mut command = match std::env::var(&wrap_key)
        .ok()
        .filter(|w| !w.trim().is_empty())
    {
        Some(wrap) => {
            let mut words = wrap.split_whitespace();
            let mut command = Command::new(words.next().unwrap_or("env"));
            command.args(words).arg(&bins.covibe);
            command
        }
        None => Command::new(&bins.covibe),
    };
    command.arg(role);
    let log_filter =
        || std::env::var("COVIBE_BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COVIBE_") {
            command.env_remove(&key);
        }
    }
    // The servers log at `info` unless `COVIBE_BENCH_RUST_LOG` says otherwise (read before the
    // COVIBE_* variables are cleared above).
    command
        .env("RUST_LOG", log_filter())
        .env("COVIBE_DATA_DIR", dir.join("data"))
        .env("COVIBE_PROJECT_DIR", dir)
        .env("COVIBE_VM_AGENT_BIN", &bins.agent)
        .envs(BENCH_LIMITS.iter().copied())
        .current_dir(dir);
    command
}

impl Stack {
    pub async fn start(kind: StackKind, bins: &Binaries, dir: &Path) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir.join("data"))?;
        let dir = dir.to_path_buf();
        match kind {
            StackKind::Seed => Self::seed(bins, dir).await,
            StackKind::Standalone => Self::standalone(bins, dir).await,
            StackKind::Multi => Self::multi(bins, dir).await,
        }
    }

    async fn seed(bins: &Binaries, dir: PathBuf) -> Result<Self> {
        ensure_seed_packages(&bins.seed_dir)?;
        let (redis, redis_port) = redis(&dir, "redis").await?;
        let port = free_port()?;
        let mut command = Command::new("node");
        command
            .arg(bins.seed_dir.join("server.js"))
            .env("PORT", port.to_string())
            .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
            .current_dir(&dir);
        let mut node = Proc::spawn("node", command, &dir)?;
        node.wait_for("baseline listening", Duration::from_secs(60))
            .await?;
        let servers = Servers {
            fixed: vec![
                ("node".to_owned(), node.pid),
                ("redis".to_owned(), redis.pid),
            ],
            postgres: None,
            socket_holder: Some(node.pid),
        };
        Ok(Self {
            kind: StackKind::Seed,
            url: format!("http://127.0.0.1:{port}"),
            servers,
            dir,
            procs: vec![node, redis],
            database: None,
        })
    }

    async fn standalone(bins: &Binaries, dir: PathBuf) -> Result<Self> {
        let mut command = covibe_command(bins, "standalone", &dir);
        command.env("COVIBE_HTTP_ADDR", "127.0.0.1:0");
        let mut proc = Proc::spawn("covibe", command, &dir)?;
        let url = proc
            .wait_for_url("gateway listening on", Duration::from_secs(120))
            .await?;
        let servers = Servers {
            fixed: vec![("covibe".to_owned(), proc.pid)],
            postgres: None,
            socket_holder: Some(proc.pid),
        };
        Ok(Self {
            kind: StackKind::Standalone,
            url,
            servers,
            dir,
            procs: vec![proc],
            database: None,
        })
    }

    async fn multi(bins: &Binaries, dir: PathBuf) -> Result<Self> {
        let admin = pg_admin_url();
        let db = format!(
            "covibe_bench_{}_{:x}",
            std::process::id(),
            crate::marker::now_us()
        );
        psql(&admin, &format!("CREATE DATABASE {db}"))?;
        let mut stack = Self {
            kind: StackKind::Multi,
            url: String::new(),
            servers: Servers::default(),
            dir: dir.clone(),
            procs: Vec::new(),
            database: Some(db.clone()),
        };
        let database_url = match admin.rfind('/') {
            Some(i) => format!("{}/{db}", &admin[..i]),
            None => bail!("bad COVIBE_BENCH_PG {admin}"),
        };
        let (redis, redis_port) = redis(&dir, "redis").await?;
        stack.procs.push(redis);
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect::<Result<_>>()?;
        let grpc = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let http = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let keys = dir.join("data/keys");
        let configure = |command: &mut Command| {
            command
                .env("COVIBE_DATABASE_URL", &database_url)
                .env(
                    "COVIBE_REDIS_URL",
                    format!("redis://127.0.0.1:{redis_port}"),
                )
                .env("COVIBE_LINK_URL", http(2))
                .env("COVIBE_ENDPOINTS__AUTH", http(0))
                .env("COVIBE_ENDPOINTS__TEAM", http(1))
                .env("COVIBE_ENDPOINTS__ORCHESTRATOR", http(2))
                .env("COVIBE_ENDPOINTS__VM_CONNECTOR", http(3))
                .env("COVIBE_ENDPOINTS__PREVIEW", http(4))
                .env(
                    "COVIBE_AUTH__SIGNING_KEY_FILE",
                    keys.join("jwt-signing.pem"),
                )
                .env(
                    "COVIBE_AUTH__VERIFYING_KEY_FILE",
                    keys.join("jwt-signing.pub.pem"),
                );
        };
        // A service alone never makes up a signing key: create it first, as an operator does.
        let mut keygen = covibe_command(bins, "admin", &dir);
        configure(&mut keygen);
        let status = keygen
            .args(["rotate-signing-key", "--if-missing"])
            .status()
            .await?;
        if !status.success() {
            bail!("covibe admin rotate-signing-key failed: {status}");
        }
        let roles = ["auth", "team", "orchestrator", "vm-connector", "preview"];
        for (i, role) in roles.iter().enumerate() {
            let mut command = covibe_command(bins, role, &dir);
            configure(&mut command);
            command.env("COVIBE_GRPC_ADDR", grpc(i));
            let mut proc = Proc::spawn(role, command, &dir)?;
            proc.wait_for(&format!("{role} listening on"), Duration::from_secs(120))
                .await?;
            stack.procs.push(proc);
        }
        let mut command = covibe_command(bins, "gateway", &dir);
        configure(&mut command);
        command.env("COVIBE_HTTP_ADDR", "127.0.0.1:0");
        let mut gateway = Proc::spawn("gateway", command, &dir)?;
        stack.url = gateway
            .wait_for_url("gateway listening on", Duration::from_secs(120))
            .await?;
        stack.servers = Servers {
            fixed: stack
                .procs
                .iter()
                .map(|p| (p.name.clone(), p.pid))
                .chain([("gateway".to_owned(), gateway.pid)])
                .collect(),
            postgres: Some((admin, db)),
            socket_holder: Some(gateway.pid),
        };
        stack.procs.push(gateway);
        Ok(stack)
    }

    /// Stops every process (SIGTERM first, so profilers write their output).
    pub async fn stop(mut self) {
        for proc in self.procs.iter_mut().rev() {
            proc.stop(Duration::from_secs(10)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The processes die with their `Child` (kill on drop); the database needs them gone.
        for proc in &mut self.procs {
            let _ = proc.child.start_kill();
        }
        if let Some(db) = self.database.take() {
            let _ = psql(
                &pg_admin_url(),
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
}

fn psql(admin_url: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .args([admin_url, "-XAtqc", sql])
        .output()
        .context("running psql (the PostgreSQL client)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The seed's npm packages: installed with `npm ci` when missing.
pub fn ensure_seed_packages(seed_dir: &Path) -> Result<()> {
    if seed_dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!(
        "covibe-bench: installing the seed's packages (npm ci --prefix {})",
        seed_dir.display()
    );
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(seed_dir)
        .status()
        .context("running npm")?;
    if !status.success() {
        bail!("npm ci in {} failed", seed_dir.display());
    }
    Ok(())
}

/// `covibe` and `covibe-bench-agent` in `exe_dir` (`target/<profile>/`), built first with
/// `cargo build [--release] --bin covibe --bin covibe-bench-agent` when `build` is set (a no-op
/// when they are up to date) or when one is missing.
pub fn workspace_binaries(exe_dir: &Path, build: bool) -> Result<(PathBuf, PathBuf)> {
    let covibe = exe_dir.join("covibe");
    let agent = exe_dir.join("covibe-bench-agent");
    if build || !covibe.exists() || !agent.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(workspace_root()).args([
            "build",
            "--bin",
            "covibe",
            "--bin",
            "covibe-bench-agent",
        ]);
        let profile = exe_dir
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("debug");
        match profile {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        if let Some(target_dir) = exe_dir.parent() {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = command.status().context("running cargo build")?;
        if !status.success() || !covibe.exists() || !agent.exists() {
            bail!(
                "could not build {} and {}",
                covibe.display(),
                agent.display()
            );
        }
    }
    Ok((covibe, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_handed_out_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..500).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        let held: Vec<_> = ports
            .iter()
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", *port)))
            .collect();
        assert!(
            held.iter().all(Result::is_ok),
            "a port handed out was taken"
        );
    }
}
