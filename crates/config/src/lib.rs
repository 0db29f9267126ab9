//! CoVibe's configuration, one struct for every component, layered as
//! defaults < TOML file < `COVIBE_*` environment < command-line flags, validated at load and
//! printable with `--print-config`. Unknown keys are errors, wherever they come from.
//!
//! Nested keys use a double underscore in the environment: `COVIBE_ENDPOINTS__AUTH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The command a vm-agent runs by default; `{task}` becomes the task, as one argument.
/// Claude Code reading its task and follow-ups as stream-json on stdin and asking for each tool
/// use that needs permission over the control protocol (answered by the team's policy or the
/// agent's owner).
pub const DEFAULT_AGENT_COMMAND: &str = "claude -p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio";

/// The most threads `workers` may ask for.
pub const MAX_WORKERS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the gateway listens for REST and Socket.io (`127.0.0.1:0` picks a free port).
    pub http_addr: SocketAddr,
    /// Where a single service listens for gRPC in multi-process mode.
    pub grpc_addr: SocketAddr,
    /// Holds the SQLite database, signing keys and vm-agent spools in standalone mode.
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; unset means SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// `redis://...`; unset means the in-process hot store (one process only).
    pub redis_url: Option<String>,
    /// Starts every Redis key and channel of this deployment, so several deployments (or test
    /// meshes) can share one Redis without seeing each other's events.
    pub redis_key_prefix: String,
    /// The agent command run by vm-agent; `{task}` is replaced by the task as one argument.
    pub agent_command: String,
    /// Where the local strategy's vm-agent runs agents.
    pub project_dir: Option<PathBuf>,
    /// Path of the `vm-agent` binary for the local strategy; unset means next to this binary.
    pub vm_agent_bin: Option<PathBuf>,
    /// How the orchestrator is reached by vm-agents; unset means its bound gRPC address.
    pub link_url: Option<String>,
    /// How members' dial-in daemons reach the vm-connector, as the client shows it in the
    /// daemon command; unset means the address the gateway uses for it.
    pub dial_in_url: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Threads running the process's tasks. With one (the default) every task runs on the
    /// main thread: no task is ever handed to another thread, whose wake-ups cost the fan-out
    /// path dearly on a busy machine (BENCHMARKS.md has the figures). Scale out with replicas,
    /// or raise this for a process that has a machine to itself. Blocking work (SQLite, files)
    /// has threads of its own.
    pub workers: usize,
    /// Browser origins allowed to call gRPC-web (`*` for any); empty means same-origin only.
    pub cors_allowed_origins: Vec<String>,
    /// The web client's files, served by the gateway at `/`; unset means a JSON pointer to the API.
    pub static_dir: Option<PathBuf>,
    /// gRPC endpoints of the other services, used in multi-process mode.
    pub endpoints: Endpoints,
    pub auth: AuthConfig,
    pub limits: Limits,
    /// The versioned master keys that seal members' VM credentials (a file, or a mounted
    /// Kubernetes Secret); unset means `data_dir/keys/master.key`. Standalone creates it; a
    /// vm-connector alone refuses to start without it (`covibe admin rotate-master-key`).
    pub master_key_file: Option<PathBuf>,
    pub ssh: SshConfig,
    pub preview: PreviewSettings,
}

/// The team previews' deploys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewSettings {
    /// For one deploy's job on the VM: fetch, build and start.
    pub deploy_timeout_secs: u64,
    /// How long a started app has to answer its health check.
    pub health_timeout_secs: u64,
    /// Attempts for a deploy that failed for a passing reason.
    pub deploy_attempts: u32,
    /// Whether this process runs deploys (every replica does by default; the queue is shared).
    pub run_deploys: bool,
}

impl Default for PreviewSettings {
    fn default() -> Self {
        Self {
            deploy_timeout_secs: 900,
            health_timeout_secs: 30,
            deploy_attempts: 3,
            run_deploys: true,
        }
    }
}

/// The `ssh_proxy` strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Where `covibe` and vm-agent spools and logs go on members' VMs (relative to the login's
    /// home directory unless absolute).
    pub remote_dir: String,
    pub connect_timeout_secs: u64,
    /// For one command on a VM, copying `covibe` there included.
    pub command_timeout_secs: u64,
    /// A VM's master connection unused this long is closed.
    pub idle_secs: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            remote_dir: ".covibe".to_owned(),
            connect_timeout_secs: 10,
            command_timeout_secs: 120,
            idle_secs: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    pub auth: String,
    pub team: String,
    pub orchestrator: String,
    pub vm_connector: String,
    pub preview: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Ed25519 signing key (PKCS#8 PEM); unset means `data_dir/keys/jwt-signing.pem`.
    pub signing_key_file: Option<PathBuf>,
    /// Ed25519 public key (SPKI PEM); unset means `data_dir/keys/jwt-signing.pub.pem`.
    pub verifying_key_file: Option<PathBuf>,
    /// This service's own Ed25519 key (PKCS#8 PEM, `covibe admin add-service-key`): it signs
    /// only this service's service tokens, where the signing key is not mounted (the
    /// orchestrator reading team policies on Kubernetes). Unset means none.
    pub service_key_file: Option<PathBuf>,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub invite_ttl_secs: u64,
    pub invite_max_uses: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest task a member may submit, in bytes.
    pub max_task_bytes: usize,
    /// Largest REST request body, in bytes.
    pub max_body_bytes: usize,
    /// Output chunks kept per agent in the hot ring buffer.
    pub ring_buffer_chunks: usize,
    /// Agents one member may have pending, starting or running at once.
    pub max_running_agents: u32,
    /// Spawns one member may make per minute.
    pub spawns_per_minute: u32,
    /// Milliseconds a killed agent gets between SIGTERM and SIGKILL.
    pub kill_grace_ms: u32,
    /// Seconds a running agent's vm-agent may stay silent before the agent is marked `lost`.
    pub lost_after_secs: u64,
    /// Gateway requests per second from one address (IPv6: one /64), refilled continuously.
    pub rate_per_ip_per_sec: u32,
    /// Gateway requests one address may make at once after a quiet spell.
    pub burst_per_ip: u32,
    /// Gateway requests per second from one member (by their access token).
    pub rate_per_user_per_sec: u32,
    pub burst_per_user: u32,
    /// Sign-ins (`POST /api/auth/login`, `/api/auth/device/redeem`) per minute from one
    /// address: stops code guessing.
    pub login_per_ip_per_min: u32,
    pub login_burst_per_ip: u32,
    /// New members one team takes per minute through invites (and at once after a quiet
    /// spell): a leaked code cannot fill a team in a burst.
    pub team_joins_per_minute: u32,
    /// Milliseconds a gateway request may take before it is answered 503.
    pub request_timeout_ms: u64,
    /// Socket.io connections one gateway accepts at once.
    pub max_sockets: usize,
    /// Socket.io connections one address (IPv6: one /64) may hold at once on a gateway.
    pub max_sockets_per_address: usize,
    /// Milliseconds a Socket.io connection may stay without joining a team before it is closed.
    pub socket_join_timeout_ms: u64,
    /// Largest Socket.io message a client may send, in bytes.
    pub max_socket_message_bytes: u64,
    /// Gateway requests in flight at once; past that, requests are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Key rate limits by the last `X-Forwarded-For` entry: set only behind a proxy that sets it.
    pub trust_forwarded_for: bool,
    /// Seconds a member's presence lives after a gateway last repeated it (the team service's
    /// and every gateway's setting must agree). Gateways repeat it every third of that, so the
    /// members of a gateway that died turn offline for the others within about 4/3 of it.
    pub presence_ttl_secs: u64,
    /// Seconds a tool use an agent asked its owner about may wait for an answer; then it is
    /// denied and the agent goes on.
    pub approval_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::from(".covibe"),
            database_url: None,
            redis_url: None,
            redis_key_prefix: "covibe:".to_owned(),
            agent_command: DEFAULT_AGENT_COMMAND.to_owned(),
            project_dir: None,
            vm_agent_bin: None,
            link_url: None,
            dial_in_url: None,
            log_format: "text".to_owned(),
            workers: 1,
            static_dir: None,
            cors_allowed_origins: Vec::new(),
            endpoints: Endpoints::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            master_key_file: None,
            ssh: SshConfig::default(),
            preview: PreviewSettings::default(),
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            auth: "http://127.0.0.1:50051".to_owned(),
            team: "http://127.0.0.1:50052".to_owned(),
            orchestrator: "http://127.0.0.1:50053".to_owned(),
            vm_connector: "http://127.0.0.1:50054".to_owned(),
            preview: "http://127.0.0.1:50055".to_owned(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            verifying_key_file: None,
            service_key_file: None,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            invite_ttl_secs: 7 * 24 * 3600,
            invite_max_uses: 50,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_task_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            ring_buffer_chunks: 10_000,
            max_running_agents: 5,
            spawns_per_minute: 10,
            kill_grace_ms: 5_000,
            lost_after_secs: 120,
            // Generous: a whole team behind one NAT shares an address.
            rate_per_ip_per_sec: 50,
            burst_per_ip: 200,
            rate_per_user_per_sec: 20,
            burst_per_user: 100,
            login_per_ip_per_min: 20,
            login_burst_per_ip: 20,
            team_joins_per_minute: 20,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 1024,
            max_sockets: 50_000,
            // A team behind one NAT shares an address: a few sockets per member.
            max_sockets_per_address: 256,
            socket_join_timeout_ms: 10_000,
            max_socket_message_bytes: 256 * 1024,
            trust_forwarded_for: false,
            presence_ttl_secs: 90,
            approval_timeout_secs: 300,
        }
    }
}

/// Values given on the command line: the last layer, set only where a flag was passed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

/// Whether an agent command reads Claude Code's stream-json input (`--input-format stream-json`,
/// or `=stream-json`): the vm-agent sends it the task on stdin, so it needs no `{task}`.
fn reads_stream_json(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.iter().enumerate().any(|(i, word)| {
        *word == "--input-format=stream-json"
            || (*word == "--input-format" && words.get(i + 1) == Some(&"stream-json"))
    })
}

/// `COVIBE_*` variables that are not configuration (the build's, the tests'): a process
/// started with one set is not refused for an unknown key.
const NOT_CONFIG: &[&str] = &["SKIP_WEB", "WEB_DIST", "UPDATE_OPENAPI"];

impl Config {
    /// Loads defaults < `file` < `COVIBE_*` environment < `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Error> {
        Self::load_from_env(
            file,
            overrides,
            Env::prefixed("COVIBE_").ignore(NOT_CONFIG).split("__"),
        )
    }

    fn load_from_env(file: Option<&Path>, overrides: &Overrides, env: Env) -> Result<Self, Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::Invalid(format!(
                    "file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| Error::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::Invalid(msg));
        if !self.agent_command.contains("{task}") && !reads_stream_json(&self.agent_command) {
            return invalid(
                "agent_command must contain {task} (or read --input-format stream-json)".to_owned(),
            );
        }
        if self.agent_command.split_whitespace().next().is_none() {
            return invalid("agent_command is empty".to_owned());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return invalid("database_url must start with postgres:// or sqlite:".to_owned());
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("redis_url must start with redis:// or rediss://".to_owned());
        }
        if self.redis_key_prefix.is_empty()
            || self.redis_key_prefix.len() > 64
            || !self.redis_key_prefix.chars().all(|c| c.is_ascii_graphic())
        {
            return invalid(
                "redis_key_prefix must be 1 to 64 printable ASCII characters, no spaces".to_owned(),
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid("log_format must be text or json".to_owned());
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return invalid(format!("workers must be 1 to {MAX_WORKERS}"));
        }
        for (name, url) in [
            ("auth", &self.endpoints.auth),
            ("team", &self.endpoints.team),
            ("orchestrator", &self.endpoints.orchestrator),
            ("vm_connector", &self.endpoints.vm_connector),
            ("preview", &self.endpoints.preview),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "endpoints.{name} must be an http:// or https:// url"
                ));
            }
        }
        if self.auth.access_ttl_secs == 0 || self.auth.refresh_ttl_secs == 0 {
            return invalid("auth token lifetimes must be positive".to_owned());
        }
        if self.limits.max_task_bytes == 0
            || self.limits.ring_buffer_chunks == 0
            || self.limits.max_running_agents == 0
            || self.limits.spawns_per_minute == 0
            || self.limits.lost_after_secs == 0
            || self.limits.max_body_bytes == 0
            || self.limits.rate_per_ip_per_sec == 0
            || self.limits.burst_per_ip == 0
            || self.limits.rate_per_user_per_sec == 0
            || self.limits.burst_per_user == 0
            || self.limits.login_per_ip_per_min == 0
            || self.limits.login_burst_per_ip == 0
            || self.limits.team_joins_per_minute == 0
            || self.limits.request_timeout_ms == 0
            || self.limits.max_concurrent_requests == 0
            || self.limits.max_sockets == 0
            || self.limits.max_sockets_per_address == 0
            || self.limits.socket_join_timeout_ms == 0
            || self.limits.max_socket_message_bytes == 0
            || self.limits.presence_ttl_secs == 0
            || self.limits.approval_timeout_secs == 0
        {
            return invalid("limits must be positive".to_owned());
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return invalid(format!("static_dir {} is not a directory", dir.display()));
        }
        Ok(())
    }

    /// The database to use: the configured URL, or SQLite under the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("covibe.db").display()
            ),
        }
    }

    /// How long a member's presence lives after a gateway last repeated it.
    pub fn presence_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.limits.presence_ttl_secs)
    }

    /// How often a gateway repeats the presence of its members: a third of the TTL, so an
    /// entry survives two missed repeats.
    pub fn presence_heartbeat(&self) -> std::time::Duration {
        self.presence_ttl() / 3
    }

    pub fn signing_key_file(&self) -> PathBuf {
        self.auth
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("jwt-signing.pem"))
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("master.key"))
    }

    pub fn verifying_key_file(&self) -> PathBuf {
        self.auth
            .verifying_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("jwt-signing.pub.pem"))
    }

    /// The configuration as TOML, for `--print-config`.
    /// Passwords in URLs are shown as `***`.
    pub fn to_toml(&self) -> Result<String, Error> {
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact_url);
        shown.redis_url = shown.redis_url.as_deref().map(redact_url);
        toml::to_string_pretty(&shown).map_err(|e| Error::Invalid(e.to_string()))
    }
}

/// `scheme://user:secret@host/...` without the secret.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment layer no real variable matches, so the test ignores the process env.
    fn no_env() -> Env {
        Env::prefixed("COVIBE_TEST_CFG_UNUSED_").split("__")
    }

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("covibe.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\nredis_url = \"redis://file\"\n[limits]\nmax_task_bytes = 10\n",
        )
        .unwrap();
        let cfg = Config::load_from_env(Some(&file), &Overrides::default(), no_env()).unwrap();
        assert_eq!(cfg.http_addr.port(), 9000);
        assert_eq!(cfg.limits.max_task_bytes, 10);
        assert_eq!(cfg.redis_url.as_deref(), Some("redis://file"));

        let flags = Overrides {
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let cfg = Config::load_from_env(Some(&file), &flags, no_env()).unwrap();
        assert_eq!(cfg.http_addr.port(), 0, "flags win over the file");

        std::fs::write(&file, "htp_addr = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load_from_env(Some(&file), &Overrides::default(), no_env());
        assert!(err.unwrap_err().to_string().contains("htp_addr"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail error type, not ours
    fn environment_overrides_file_and_is_validated() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "agent_command = \"x {task}\"\n")?;
            jail.set_env("COVIBE_AGENT_COMMAND", "fake-agent --task {task}");
            jail.set_env("COVIBE_HTTP_ADDR", "127.0.0.1:0");
            jail.set_env("COVIBE_ENDPOINTS__AUTH", "http://127.0.0.1:1");
            let cfg = Config::load(Some(Path::new("c.toml")), &Overrides::default()).unwrap();
            assert_eq!(cfg.agent_command, "fake-agent --task {task}");
            assert_eq!(cfg.http_addr.port(), 0);
            assert_eq!(cfg.endpoints.auth, "http://127.0.0.1:1");

            jail.set_env("COVIBE_AGENT_COMMAND", "no-placeholder");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("{task}"));
            // The task goes on stdin to a command reading stream-json.
            let stdin = "claude -p --input-format stream-json --output-format stream-json";
            jail.set_env("COVIBE_AGENT_COMMAND", stdin);
            let cfg = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(cfg.agent_command, stdin);
            jail.set_env("COVIBE_AGENT_COMMAND", "claude --input-format text");
            assert!(Config::load(None, &Overrides::default()).is_err());

            // The build's own variables are not configuration.
            jail.set_env("COVIBE_AGENT_COMMAND", "a {task}");
            jail.set_env("COVIBE_SKIP_WEB", "1");
            assert!(Config::load(None, &Overrides::default()).is_ok());
            jail.set_env("COVIBE_NO_SUCH_KEY", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("no_such_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid_and_printable() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        assert!(cfg.to_toml().unwrap().contains("agent_command"));
        assert!(cfg.database_url().starts_with("sqlite://"));

        let secret = Config {
            database_url: Some("postgres://app:hunter2@db:5432/covibe".to_owned()),
            ..Config::default()
        };
        let shown = secret.to_toml().unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/covibe"));
        assert_eq!(cfg.presence_ttl().as_secs(), 90);
        assert_eq!(cfg.presence_heartbeat().as_secs(), 30);
        let mut bad = cfg.clone();
        bad.limits.presence_ttl_secs = 0;
        assert!(bad.validate().is_err(), "presence would never live");
        let mut bad = cfg.clone();
        bad.limits.login_burst_per_ip = 0;
        assert!(
            bad.validate().is_err(),
            "a zero rate limit locks everyone out"
        );
        for workers in [0, MAX_WORKERS + 1] {
            let bad = Config {
                workers,
                ..cfg.clone()
            };
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("workers must be 1 to 256"), "{workers}: {err}");
        }
        for prefix in ["", "two words:", "é:"] {
            let bad = Config {
                redis_key_prefix: prefix.to_owned(),
                ..cfg.clone()
            };
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("redis_key_prefix"), "{prefix:?}: {err}");
        }
        let mut bad = cfg;
        bad.static_dir = Some(PathBuf::from("/no/such/covibe/site"));
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("static_dir")
        );
    }
}
