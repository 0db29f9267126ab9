//! The `ssh_proxy` strategy: the connector logs in to a member's VM with the system `ssh`,
//! through one multiplexed master connection per VM (reused across spawns, closed by `ssh`
//! itself when idle, opened again after a failure), makes sure the VM has this connector's
//! `covibe` (by checksum), and starts `vm-agent run` there, which dials back to the
//! orchestrator like any other vm-agent.
//!
//! Secrets never touch a disk: a private key goes to a short-lived `ssh-agent` over `ssh-add`'s
//! standard input, and a password or passphrase reaches `ssh`/`ssh-add` through a named pipe
//! read by an askpass script (the pipe's bytes live in the kernel only). The host key is pinned
//! on first contact, and a changed one is refused until the owner accepts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use covibe_types::VmId;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use zeroize::Zeroizing;

use crate::local::{Launch, VmAgentCommand};

/// How the proxy behaves; every field has a default fit for production.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Where `covibe` and the vm-agents' spools and logs go on the VM, relative to the login's
    /// home directory unless absolute.
    pub remote_dir: String,
    pub connect_timeout: Duration,
    /// For one command on the VM (copying `covibe` included).
    pub command_timeout: Duration,
    /// A master connection with no command for this long is closed by `ssh`.
    pub idle: Duration,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            remote_dir: ".covibe".to_owned(),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            idle: Duration::from_secs(300),
        }
    }
}

/// A VM's login secret, in memory only and wiped when dropped.
pub enum Secret {
    Key {
        pem: Zeroizing<String>,
        passphrase: Zeroizing<String>,
    },
    Password(Zeroizing<String>),
}

/// Where to log in.
#[derive(Debug, Clone)]
pub struct Target {
    pub vm_id: VmId,
    pub host: String,
    pub port: u16,
    pub username: String,
    /// The pinned host key (`TYPE BASE64`); empty to pin whatever the VM presents first.
    pub host_key: String,
}

impl Target {
    /// What a master connection was made for: a change makes a new one.
    fn identity(&self) -> String {
        format!(
            "{}@{}:{} {}",
            self.username, self.host, self.port, self.host_key
        )
    }
}

/// Why the VM could not be reached or used. Every message is meant for the VM's owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error(
        "the VM's host key has changed (it now presents {fingerprint}); if you reinstalled or re-keyed the VM, accept the new key in the VM's settings"
    )]
    HostKeyChanged {
        /// `TYPE BASE64`, empty when it could not be read.
        presented: String,
        fingerprint: String,
    },
    #[error("the VM refused the login: {0}")]
    Auth(String),
    #[error("could not reach the VM: {0}")]
    Unreachable(String),
    #[error("the VM did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("on the VM: {0}")]
    Remote(String),
    #[error("on the connector: {0}")]
    Local(String),
}

/// What a start did, for the audit log and the VM's record.
#[derive(Debug, Clone, Default)]
pub struct Started {
    /// The host key pinned by this first contact, if any.
    pub pinned_host_key: Option<String>,
    /// Whether a master connection was opened for it (rather than reused).
    pub connected: bool,
    /// Whether `covibe` was copied to the VM.
    pub installed: bool,
    /// Hex SHA-256 of the command that started the vm-agent.
    pub command_digest: String,
}

struct Master {
    session: openssh::Session,
    identity: String,
    dir: PathBuf,
}

/// The local program copied to VMs, and its checksum.
struct Binary {
    path: PathBuf,
    sha256: String,
}

/// Master connections by VM, and what starting a vm-agent over one takes.
pub struct SshPool {
    root: tempfile::TempDir,
    settings: SshSettings,
    program: VmAgentCommand,
    agent_command: String,
    masters: std::sync::Mutex<HashMap<VmId, Arc<tokio::sync::Mutex<Option<Master>>>>>,
    binary: tokio::sync::OnceCell<Binary>,
    connects: AtomicU64,
    dirs: AtomicU64,
}

impl Drop for SshPool {
    /// Master connections end with the pool rather than lingering until their idle timeout.
    fn drop(&mut self) {
        let masters = self
            .masters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in masters.values() {
            if let Ok(master) = slot.try_lock()
                && let Some(master) = master.as_ref()
            {
                let _ = std::process::Command::new("ssh")
                    .arg("-S")
                    .arg(master.session.control_socket())
                    .args(["-O", "exit", "none"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `s` as one word for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `SHA256:...` of a `TYPE BASE64` public key, as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &str) -> String {
    let blob = key.split_whitespace().nth(1).unwrap_or_default();
    match B64.decode(blob) {
        Ok(bytes) if !bytes.is_empty() => {
            format!("SHA256:{}", B64_NO_PAD.encode(sha2::Sha256::digest(bytes)))
        }
        _ => String::new(),
    }
}

/// Hex SHA-256 of a command, as the audit log records it.
pub(crate) fn digest(command: &str) -> String {
    hex(&sha2::Sha256::digest(command.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `uname -sm` says on a machine that can run this build of `covibe`.
fn expected_uname() -> Option<String> {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        _ => return None,
    };
    Some(format!("{os} {}", std::env::consts::ARCH))
}

/// The last meaningful line `ssh` wrote, without its `ssh:` prefix.
fn last_line(log: &str) -> String {
    log.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .unwrap_or("ssh failed without saying why")
        .trim_start_matches("ssh: ")
        .chars()
        .take(300)
        .collect()
}

impl SshPool {
    pub fn new(
        settings: SshSettings,
        program: VmAgentCommand,
        agent_command: String,
    ) -> std::io::Result<Arc<Self>> {
        // Control sockets need a short path: a private directory under the system's temp dir.
        let root = tempfile::Builder::new().prefix("covibe-ssh-").tempdir()?;
        Ok(Arc::new(Self {
            root,
            settings,
            program,
            agent_command,
            masters: std::sync::Mutex::default(),
            binary: tokio::sync::OnceCell::new(),
            connects: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
        }))
    }

    /// How many master connections were opened since start.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn slot(&self, vm: VmId) -> Arc<tokio::sync::Mutex<Option<Master>>> {
        let mut masters = self
            .masters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        masters.entry(vm).or_default().clone()
    }

    /// Whether a master connection to the VM is up (asked of the master itself: `ssh` closes
    /// an idle one on its own). One busy connecting or starting counts as up.
    pub async fn is_connected(&self, vm: VmId) -> bool {
        let slot = {
            let masters = self
                .masters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match masters.get(&vm) {
                Some(slot) => slot.clone(),
                None => return false,
            }
        };
        let Ok(mut master) = slot.try_lock() else {
            return true;
        };
        let alive = match master.as_ref() {
            Some(m) => m.session.check().await.is_ok(),
            None => return false,
        };
        if !alive && let Some(gone) = master.take() {
            close(gone).await;
        }
        alive
    }

    /// Closes the VM's master connection (its credential, address or key changed, or it went).
    pub async fn disconnect(&self, vm: VmId) {
        let slot = self.slot(vm);
        let mut master = slot.lock().await;
        if let Some(master) = master.take() {
            close(master).await;
        }
    }

    /// Runs a job's `script` with `sh` on the VM over its master connection (opened if needed),
    /// without holding the connection against spawns meanwhile. Returns the job's outcome and
    /// the host key pinned by a first contact.
    pub async fn run_job<F>(
        &self,
        target: &Target,
        secret: F,
        script: &str,
        timeout: Duration,
    ) -> Result<(crate::model::JobOutcome, Option<String>), SshError>
    where
        F: FnOnce() -> Result<Secret, SshError>,
    {
        let (ctl, pinned) = {
            let slot = self.slot(target.vm_id);
            let mut guard = slot.lock().await;
            let reusable = match guard.as_ref() {
                Some(m) if m.identity == target.identity() => m.session.check().await.is_ok(),
                _ => false,
            };
            let mut pinned = None;
            if !reusable {
                if let Some(old) = guard.take() {
                    close(old).await;
                }
                let (master, learned) = self.connect(target, secret()?).await?;
                pinned = learned;
                *guard = Some(master);
            }
            let Some(master) = guard.as_ref() else {
                return Err(SshError::Local("no master connection".to_owned()));
            };
            (master.session.control_socket().to_owned(), pinned)
        };
        // A second handle on the same master: the job does not hold the slot.
        let session = openssh::Session::resume(ctl.into_boxed_path(), None);
        let work = async {
            let mut child = session
                .raw_command(format!("sh -c {}", quote(&format!("exec 2>&1\n{script}"))))
                .stdin(openssh::Stdio::null())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::null())
                .spawn()
                .await
                .map_err(|e| SshError::Unreachable(e.to_string()))?;
            let stdout = child
                .stdout()
                .take()
                .ok_or_else(|| SshError::Local("no stdout".to_owned()))?;
            let tail = crate::model::read_tail(stdout, crate::model::JOB_TAIL_BYTES).await;
            let status = child
                .wait()
                .await
                .map_err(|e| SshError::Unreachable(e.to_string()))?;
            Ok(crate::model::JobOutcome {
                exit_code: status.code().unwrap_or(-1),
                output_tail: tail,
            })
        };
        let outcome = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| SshError::Timeout("running the job"))??;
        Ok((outcome, pinned))
    }

    /// Starts a vm-agent on the VM. `secret` is asked for only when a new master connection is
    /// needed.
    pub async fn start<F>(
        &self,
        target: &Target,
        secret: F,
        launch: &Launch<'_>,
        project_dir: &str,
    ) -> Result<Started, SshError>
    where
        F: FnOnce() -> Result<Secret, SshError>,
    {
        let slot = self.slot(target.vm_id);
        let mut guard = slot.lock().await;
        let mut started = Started::default();
        let reusable = match guard.as_ref() {
            Some(m) if m.identity == target.identity() => m.session.check().await.is_ok(),
            _ => false,
        };
        if !reusable {
            if let Some(old) = guard.take() {
                close(old).await;
            }
            let (master, pinned) = self.connect(target, secret()?).await?;
            started.connected = true;
            started.pinned_host_key = pinned;
            *guard = Some(master);
        }
        let Some(master) = guard.as_ref() else {
            return Err(SshError::Local("no master connection".to_owned()));
        };
        let result = self.install_and_run(master, launch, project_dir).await;
        match result {
            Ok((installed, digest)) => {
                started.installed = installed;
                started.command_digest = digest;
                Ok(started)
            }
            Err(err) => {
                // A broken connection is made again next time; a remote error keeps it.
                if master.session.check().await.is_err()
                    && let Some(master) = guard.take()
                {
                    close(master).await;
                }
                Err(err)
            }
        }
    }

    async fn new_dir(&self) -> Result<PathBuf, SshError> {
        let n = self.dirs.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.path().join(n.to_string());
        tokio::fs::create_dir(&dir).await.map_err(local)?;
        set_mode(&dir, 0o700).await?;
        Ok(dir)
    }

    /// Opens a master connection; returns the host key it pinned on first contact.
    async fn connect(
        &self,
        target: &Target,
        secret: Secret,
    ) -> Result<(Master, Option<String>), SshError> {
        let dir = self.new_dir().await?;
        let result = self.connect_in(&dir, target, secret).await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        result
    }

    async fn connect_in(
        &self,
        dir: &Path,
        target: &Target,
        secret: Secret,
    ) -> Result<(Master, Option<String>), SshError> {
        let alias = format!("covibe-vm-{}", target.vm_id);
        let known_hosts = dir.join("known_hosts");
        let pinned = !target.host_key.is_empty();
        let line = if pinned {
            format!("{alias} {}\n", target.host_key)
        } else {
            String::new()
        };
        tokio::fs::write(&known_hosts, line).await.map_err(local)?;

        let mut askpass = Askpass::new(dir).await?;
        let mut agent = None;
        let mut command = Command::new("ssh");
        let ctl = dir.join("ctl");
        let log = dir.join("log");
        command
            .arg("-F")
            .arg("/dev/null")
            .args(["-M", "-f", "-N"])
            .arg("-S")
            .arg(&ctl)
            .arg("-E")
            .arg(&log)
            .arg("-p")
            .arg(target.port.to_string())
            .arg("-l")
            .arg(&target.username);
        let mut option = |o: String| {
            command.arg("-o").arg(o);
        };
        option(format!(
            "ControlPersist={}s",
            self.settings.idle.as_secs().max(1)
        ));
        option(format!("UserKnownHostsFile={}", known_hosts.display()));
        option("GlobalKnownHostsFile=/dev/null".to_owned());
        option(format!(
            "StrictHostKeyChecking={}",
            if pinned { "yes" } else { "accept-new" }
        ));
        option(format!("HostKeyAlias={alias}"));
        option("UpdateHostKeys=no".to_owned());
        option("CheckHostIP=no".to_owned());
        option(format!(
            "ConnectTimeout={}",
            self.settings.connect_timeout.as_secs().max(1)
        ));
        option("ServerAliveInterval=15".to_owned());
        option("ServerAliveCountMax=3".to_owned());
        option("NumberOfPasswordPrompts=1".to_owned());
        option("IdentityFile=none".to_owned());
        option("IdentitiesOnly=no".to_owned());
        option("ForwardAgent=no".to_owned());
        option("ClearAllForwardings=yes".to_owned());
        match &secret {
            Secret::Key { pem, passphrase } => {
                let started = Agent::start(dir, pem, passphrase, &mut askpass).await?;
                option(format!("IdentityAgent={}", started.socket.display()));
                option("PreferredAuthentications=publickey".to_owned());
                option("BatchMode=yes".to_owned());
                agent = Some(started);
            }
            Secret::Password(password) => {
                askpass.offer(password)?;
                option("IdentityAgent=none".to_owned());
                option("PreferredAuthentications=password,keyboard-interactive".to_owned());
                command
                    .env("SSH_ASKPASS", &askpass.script)
                    .env("SSH_ASKPASS_REQUIRE", "force");
            }
        }
        drop(secret);
        command
            .arg("--")
            .arg(&target.host)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let wait = self.settings.connect_timeout + Duration::from_secs(5);
        let outcome = tokio::time::timeout(wait, command.output()).await;
        // Authentication is over either way: the agent and the pipe go at once.
        drop(agent);
        drop(askpass);
        let output = match outcome {
            Ok(output) => output.map_err(|e| SshError::Local(format!("running ssh: {e}")))?,
            Err(_) => return Err(SshError::Timeout("connecting")),
        };
        if !output.status.success() {
            let mut text = tokio::fs::read_to_string(&log).await.unwrap_or_default();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(self.classify(&text, target).await);
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        let learned = if pinned {
            None
        } else {
            let text = tokio::fs::read_to_string(&known_hosts)
                .await
                .unwrap_or_default();
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{alias} ")))
                .map(|k| k.trim().to_owned())
        };
        let session = openssh::Session::resume(ctl.into_boxed_path(), Some(log.into_boxed_path()));
        let mut identity_target = target.clone();
        if let Some(key) = &learned {
            identity_target.host_key = key.clone();
        }
        Ok((
            Master {
                session,
                identity: identity_target.identity(),
                dir: dir.to_owned(),
            },
            learned,
        ))
    }

    /// Turns what `ssh` said into an error its owner can act on.
    async fn classify(&self, log: &str, target: &Target) -> SshError {
        if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || log.contains("Host key verification failed")
        {
            let presented = self.scan_host_key(target).await.unwrap_or_default();
            return SshError::HostKeyChanged {
                fingerprint: if presented.is_empty() {
                    "a key that could not be read".to_owned()
                } else {
                    fingerprint(&presented)
                },
                presented,
            };
        }
        if log.contains("Permission denied") || log.contains("Too many authentication failures") {
            return SshError::Auth(last_line(log));
        }
        SshError::Unreachable(last_line(log))
    }

    /// The VM's current host key of the pinned key's type, read with `ssh-keyscan`.
    async fn scan_host_key(&self, target: &Target) -> Option<String> {
        let kind = target.host_key.split_whitespace().next()?.to_owned();
        let mut command = Command::new("ssh-keyscan");
        command
            .arg("-p")
            .arg(target.port.to_string())
            .arg("-t")
            .arg(key_type_name(&kind))
            .arg("-T")
            .arg(self.settings.connect_timeout.as_secs().max(1).to_string())
            .arg("--")
            .arg(&target.host)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(
            self.settings.connect_timeout + Duration::from_secs(5),
            command.output(),
        )
        .await
        .ok()?
        .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let mut parts = l.split_whitespace().skip(1);
                let (t, k) = (parts.next()?, parts.next()?);
                (t == kind).then(|| format!("{t} {k}"))
            })
    }

    async fn binary(&self) -> Result<&Binary, SshError> {
        self.binary
            .get_or_try_init(|| async {
                let path = self.program.program.clone();
                let hash =
                    tokio::task::spawn_blocking(move || -> std::io::Result<(PathBuf, String)> {
                        let mut file = std::fs::File::open(&path)?;
                        let mut hasher = sha2::Sha256::new();
                        std::io::copy(&mut file, &mut hasher)?;
                        Ok((path, hex(&hasher.finalize())))
                    })
                    .await
                    .map_err(|e| SshError::Local(e.to_string()))?
                    .map_err(|e| SshError::Local(format!("reading the vm-agent program: {e}")))?;
                Ok(Binary {
                    path: hash.0,
                    sha256: hash.1,
                })
            })
            .await
    }

    /// Runs `script` with `sh` on the VM, feeding `stdin`; its standard output on success.
    async fn run(
        &self,
        master: &Master,
        script: &str,
        stdin: Input<'_>,
        what: &'static str,
    ) -> Result<String, SshError> {
        let work = async {
            let mut child = master
                .session
                .raw_command(format!("sh -c {}", quote(script)))
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::piped())
                .spawn()
                .await
                .map_err(|e| SshError::Unreachable(e.to_string()))?;
            let mut input = child
                .stdin()
                .take()
                .ok_or_else(|| SshError::Local("no stdin".to_owned()))?;
            let mut stdout = child
                .stdout()
                .take()
                .ok_or_else(|| SshError::Local("no stdout".to_owned()))?;
            let mut stderr = child
                .stderr()
                .take()
                .ok_or_else(|| SshError::Local("no stderr".to_owned()))?;
            let feed = async {
                match stdin {
                    Input::None => {}
                    Input::Line(line) => {
                        input.write_all(line.as_bytes()).await?;
                        input.write_all(b"\n").await?;
                    }
                    Input::File(path) => {
                        let mut file = tokio::fs::File::open(path).await?;
                        tokio::io::copy(&mut file, &mut input).await?;
                    }
                }
                input.shutdown().await?;
                drop(input);
                Ok::<_, std::io::Error>(())
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (fed, _, _) = tokio::join!(
                feed,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            let status = child
                .wait()
                .await
                .map_err(|e| SshError::Unreachable(e.to_string()))?;
            if !status.success() {
                let said = String::from_utf8_lossy(&err);
                return Err(SshError::Remote(format!("{what}: {}", last_line(&said))));
            }
            fed.map_err(|e| SshError::Remote(format!("{what}: {e}")))?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(self.settings.command_timeout, work)
            .await
            .map_err(|_| SshError::Timeout(what))?
    }

    /// Makes sure the VM has this `covibe` (copying it if not), then starts the vm-agent.
    /// Returns whether it copied, and the digest of the start command.
    async fn install_and_run(
        &self,
        master: &Master,
        launch: &Launch<'_>,
        project_dir: &str,
    ) -> Result<(bool, String), SshError> {
        let binary = self.binary().await?;
        let root = self.settings.remote_dir.trim_end_matches('/');
        let remote_bin = format!("{root}/bin/covibe-{}", &binary.sha256[..16]);
        let check = format!(
            "uname -sm; (sha256sum -- {bin} 2>/dev/null || shasum -a 256 -- {bin} 2>/dev/null) | cut -d' ' -f1",
            bin = quote(&remote_bin)
        );
        let answer = self
            .run(master, &check, Input::None, "checking covibe")
            .await?;
        let mut lines = answer.lines();
        let uname = lines.next().unwrap_or_default().trim().to_owned();
        if let Some(expected) = expected_uname()
            && uname != expected
        {
            return Err(SshError::Remote(format!(
                "the VM is {uname:?} but this connector's covibe is built for {expected:?}; run `covibe vm-agent daemon` on the VM instead"
            )));
        }
        let installed = lines.next().map(str::trim) != Some(binary.sha256.as_str());
        if installed {
            let upload = format!(
                "set -e; umask 077; mkdir -p {dir}; tmp={bin}.part.$$; cat > \"$tmp\"; chmod 700 \"$tmp\"; mv -f \"$tmp\" {bin}",
                dir = quote(&format!("{root}/bin")),
                bin = quote(&remote_bin),
            );
            self.run(master, &upload, Input::File(&binary.path), "copying covibe")
                .await?;
            tracing::info!(path = %remote_bin, "copied covibe to the VM");
        }
        let mut args: Vec<String> = self.program.prefix_args.clone();
        args.extend(
            [
                "run",
                "--link-url",
                launch.link_url,
                "--agent-id",
                launch.agent_id,
                "--command",
                &self.agent_command,
                "--task",
                launch.task,
                "--workdir",
                if project_dir.is_empty() {
                    "."
                } else {
                    project_dir
                },
                "--spool-dir",
                &format!("{root}/spool"),
            ]
            .map(str::to_owned),
        );
        let words: Vec<String> = args.iter().map(|a| quote(a)).collect();
        // The agent's token arrives on standard input, never on a command line.
        let script = format!(
            "umask 077; mkdir -p {spool} {logs} || exit 1; \
             {cd}\
             IFS= read -r COVIBE_AGENT_TOKEN || exit 1; export COVIBE_AGENT_TOKEN; \
             TRACEPARENT={tp}; export TRACEPARENT; \
             nohup {bin} {args} </dev/null >>{log} 2>&1 & echo started",
            spool = quote(&format!("{root}/spool")),
            logs = quote(&format!("{root}/logs")),
            cd = if project_dir.is_empty() {
                String::new()
            } else {
                format!(
                    "test -d {d} || {{ echo \"the project directory {d} does not exist on the VM\" >&2; exit 1; }}; ",
                    d = quote(project_dir)
                )
            },
            tp = quote(&covibe_telemetry::current_traceparent()),
            bin = quote(&remote_bin),
            args = words.join(" "),
            log = quote(&format!("{root}/logs/{}.log", launch.agent_id)),
        );
        let digest = hex(&sha2::Sha256::digest(script.as_bytes()));
        let token = Zeroizing::new(launch.agent_token.to_owned());
        let answer = self
            .run(master, &script, Input::Line(&token), "starting vm-agent")
            .await?;
        if !answer.contains("started") {
            return Err(SshError::Remote("the vm-agent did not start".to_owned()));
        }
        Ok((installed, digest))
    }
}

enum Input<'a> {
    None,
    Line(&'a str),
    File(&'a Path),
}

/// Closes a master connection and forgets its directory.
async fn close(master: Master) {
    let dir = master.dir.clone();
    if let Err(err) = master.session.close().await {
        tracing::debug!(error = %err, "closing an ssh master");
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
}

/// `ssh-keyscan -t` names key types its own way.
fn key_type_name(kind: &str) -> &str {
    match kind {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        k if k.starts_with("ecdsa-") => "ecdsa",
        k => k,
    }
}

fn local(e: std::io::Error) -> SshError {
    SshError::Local(e.to_string())
}

async fn set_mode(path: &Path, mode: u32) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(local)
}

/// A one-answer askpass: a script that prints the first line of a named pipe, and the pipe,
/// held open for reading and writing by us so that the answer sits in the kernel until read.
struct Askpass {
    script: PathBuf,
    fifo: PathBuf,
    held: Option<std::fs::File>,
}

impl Askpass {
    async fn new(dir: &Path) -> Result<Self, SshError> {
        let fifo = dir.join("answer");
        let script = dir.join("askpass");
        let status = Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .await
            .map_err(local)?;
        if !status.success() {
            return Err(SshError::Local("mkfifo failed".to_owned()));
        }
        // One answer only: asked again (a wrong passphrase or password), it fails at once.
        let asked = dir.join("asked");
        tokio::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ -e {asked} ] && exit 1\n: > {asked}\nexec head -n 1 {fifo}\n",
                asked = quote(&asked.display().to_string()),
                fifo = quote(&fifo.display().to_string())
            ),
        )
        .await
        .map_err(local)?;
        set_mode(&script, 0o700).await?;
        Ok(Self {
            script,
            fifo,
            held: None,
        })
    }

    /// Puts the answer in the pipe for the next reader.
    fn offer(&mut self, answer: &str) -> Result<(), SshError> {
        use std::io::Write;
        if answer.contains('\n') {
            return Err(SshError::Local(
                "a password or passphrase cannot hold a line break".to_owned(),
            ));
        }
        // Opening a pipe for reading and writing never blocks on Linux.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.fifo)
            .map_err(local)?;
        let mut line = Zeroizing::new(answer.as_bytes().to_vec());
        line.push(b'\n');
        file.write_all(&line).map_err(local)?;
        // Kept open so the bytes stay until read; dropping `self` discards them.
        self.held = Some(file);
        Ok(())
    }
}

/// A private `ssh-agent` holding one key, for one login.
struct Agent {
    socket: PathBuf,
    child: tokio::process::Child,
}

impl Agent {
    async fn start(
        dir: &Path,
        pem: &str,
        passphrase: &str,
        askpass: &mut Askpass,
    ) -> Result<Self, SshError> {
        let socket = dir.join("agent");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SshError::Local(format!("starting ssh-agent: {e}")))?;
        let agent = Self { socket, child };
        for _ in 0..200 {
            if tokio::fs::try_exists(&agent.socket).await.unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut add = Command::new("ssh-add");
        add.arg("-q")
            .arg("-")
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if passphrase.is_empty() {
            // A key that needs one fails at once instead of waiting for an answer.
            add.env("SSH_ASKPASS", "/bin/false")
                .env("SSH_ASKPASS_REQUIRE", "force");
        } else {
            askpass.offer(passphrase)?;
            add.env("SSH_ASKPASS", &askpass.script)
                .env("SSH_ASKPASS_REQUIRE", "force");
        }
        let mut child = add
            .spawn()
            .map_err(|e| SshError::Local(format!("running ssh-add: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let mut key = Zeroizing::new(pem.as_bytes().to_vec());
            if !key.ends_with(b"\n") {
                key.push(b'\n');
            }
            stdin.write_all(&key).await.map_err(local)?;
        }
        let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .map_err(|_| SshError::Timeout("loading the private key"))?
            .map_err(local)?;
        if !output.status.success() {
            return Err(SshError::Auth(
                "the private key could not be loaded: a wrong passphrase, or not a private key"
                    .to_owned(),
            ));
        }
        Ok(agent)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
