//! The `local` strategy: the vm-agent runs as a child process of this machine.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;

/// How to start a vm-agent here: a program and the arguments before `run`.
#[derive(Debug, Clone)]
pub struct VmAgentCommand {
    pub program: PathBuf,
    pub prefix_args: Vec<String>,
}

impl VmAgentCommand {
    /// The `vm-agent` subcommand of the running `covibe` binary.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            prefix_args: vec!["vm-agent".to_owned()],
        })
    }
}

pub struct LocalLauncher {
    command: VmAgentCommand,
    agent_command: String,
    project_dir: PathBuf,
    spool_dir: PathBuf,
}

/// What one launch needs.
pub struct Launch<'a> {
    pub agent_id: &'a str,
    pub agent_token: &'a str,
    pub task: &'a str,
    pub link_url: &'a str,
}

impl LocalLauncher {
    pub fn new(
        command: VmAgentCommand,
        agent_command: String,
        project_dir: PathBuf,
        spool_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            command,
            agent_command,
            project_dir,
            spool_dir,
        })
    }

    /// Runs a job's `script` with `sh` in the project directory: its exit code and the end of
    /// its output (stdout and stderr together). A job past `timeout` is killed.
    pub async fn run_job(
        &self,
        script: &str,
        timeout: std::time::Duration,
    ) -> std::io::Result<crate::model::JobOutcome> {
        covibe_vm_agent::job::run_script(script, &self.project_dir, timeout).await
    }

    /// Starts the vm-agent and reaps it in the background. The agent token travels in the
    /// environment, never on the command line.
    pub fn launch(&self, launch: &Launch<'_>) -> std::io::Result<u32> {
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.prefix_args)
            .arg("run")
            .arg("--link-url")
            .arg(launch.link_url)
            .arg("--agent-id")
            .arg(launch.agent_id)
            .arg("--command")
            .arg(&self.agent_command)
            .arg("--task")
            .arg(launch.task)
            .arg("--workdir")
            .arg(&self.project_dir)
            .arg("--spool-dir")
            .arg(&self.spool_dir)
            .env("COVIBE_AGENT_TOKEN", launch.agent_token)
            // The vm-agent's work joins the trace of the spawn that started it.
            .env("TRACEPARENT", covibe_telemetry::current_traceparent())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or(0);
        let agent_id = launch.agent_id.to_owned();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(agent_id, pid, %status, "vm-agent exited"),
                Err(err) => tracing::warn!(agent_id, pid, error = %err, "vm-agent wait failed"),
            }
        });
        Ok(pid)
    }
}
