//! A real OpenSSH server on a loopback port, for the `ssh_proxy` tests: its own host key, one
//! authorized client key, and a log the test reads (logins accepted, commands run).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::free_port;

/// A running `sshd` that logs in the user running the tests.
pub struct SshServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The authorized client key (OpenSSH private key, no passphrase).
    pub client_key: String,
    /// The same public key, with a private key protected by `PASSPHRASE`.
    pub client_key_with_passphrase: String,
    /// A key the server does not know.
    pub stranger_key: String,
    /// The login name that works.
    pub user: String,
    child: Option<Child>,
    generation: u32,
}

/// The passphrase of [`SshServer::client_key_with_passphrase`].
pub const PASSPHRASE: &str = "correct horse battery staple";

fn keygen(path: &Path, passphrase: &str) {
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "covibe-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("ssh-keygen (install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}

/// Where the machine's `sshd` is.
pub fn sshd_program() -> PathBuf {
    for candidate in ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("sshd is not installed: `apt-get install openssh-server` (.ci/run does)");
}

impl SshServer {
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("covibe-sshd-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        keygen(&path.join("client"), "");
        keygen(&path.join("client_pp"), PASSPHRASE);
        keygen(&path.join("stranger"), "");
        let mut authorized = std::fs::read_to_string(path.join("client.pub")).expect("pub");
        authorized.push_str(&std::fs::read_to_string(path.join("client_pp.pub")).expect("pub"));
        std::fs::write(path.join("authorized_keys"), authorized).expect("authorized_keys");
        // sshd's privilege separation directory, missing on a machine that never ran it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let read = |name: &str| std::fs::read_to_string(path.join(name)).expect("key");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        let mut server = Self {
            port: free_port(),
            client_key: read("client"),
            client_key_with_passphrase: read("client_pp"),
            stranger_key: read("stranger"),
            user,
            dir,
            child: None,
            generation: 0,
        };
        server.new_host_key();
        server.run().await;
        server
    }

    /// The host key the server presents now (`TYPE BASE64`).
    pub fn host_key(&self) -> String {
        let text =
            std::fs::read_to_string(self.host_key_path().with_extension("pub")).expect("host key");
        let mut parts = text.split_whitespace();
        format!(
            "{} {}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        )
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.path().join(format!("host{}", self.generation))
    }

    fn new_host_key(&mut self) {
        self.generation += 1;
        keygen(&self.host_key_path(), "");
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many logins the server accepted.
    pub fn logins(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("Accepted ") && l.contains(" for "))
            .count()
    }

    async fn run(&mut self) {
        let path = self.dir.path();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
             PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n\
             MaxStartups 100\nMaxSessions 100\n",
            port = self.port,
            host = self.host_key_path().display(),
            keys = path.join("authorized_keys").display(),
        );
        std::fs::write(path.join("sshd_config"), config).expect("sshd_config");
        let child = Command::new(sshd_program())
            .arg("-D")
            .arg("-f")
            .arg(path.join("sshd_config"))
            .arg("-E")
            .arg(path.join("sshd.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sshd did not listen on {}: {}", self.port, self.log());
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Restarts the server on the same port with a new host key: the machine was re-keyed
    /// (or someone is in the middle).
    pub async fn rekey(&mut self) {
        self.stop().await;
        self.new_host_key();
        self.run().await;
    }
}
