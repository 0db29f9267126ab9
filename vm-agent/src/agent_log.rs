//! The human-readable log of an agent's output: `<spool-dir>/agent_logs/<agent-id>.log`, one line
//! per chunk, stdout and stderr interleaved as they were read. Once it reaches its size limit it
//! becomes `<agent-id>.log.1` (replacing an older one) and a new log starts, so at most about twice
//! the limit is kept.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufWriter};

use crate::Error;

#[derive(Debug)]
pub(crate) struct AgentLog {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
    /// `None` when disabled or after a write failed: the log is for humans and must not stop
    /// the streaming.
    file: Option<BufWriter<tokio::fs::File>>,
}

impl AgentLog {
    /// Opens the log for appending; a `max_bytes` of 0 disables it.
    pub(crate) async fn open(
        spool_dir: &Path,
        agent_id: &str,
        max_bytes: u64,
    ) -> Result<Self, Error> {
        let dir = spool_dir.join("agent_logs");
        let path = dir.join(format!("{agent_id}.log"));
        let mut log = Self {
            path,
            max_bytes,
            written: 0,
            file: None,
        };
        if max_bytes > 0 {
            let spool_error = |source| Error::Spool {
                path: log.path.clone(),
                source,
            };
            tokio::fs::create_dir_all(&dir).await.map_err(spool_error)?;
            let file = open_append(&log.path).await.map_err(spool_error)?;
            log.written = file.metadata().await.map_or(0, |m| m.len());
            log.file = Some(BufWriter::new(file));
        }
        Ok(log)
    }

    pub(crate) async fn append(&mut self, data: &[u8]) {
        if let Some(file) = &mut self.file {
            let written = async {
                file.write_all(data).await?;
                file.write_all(b"\n").await
            };
            if let Err(err) = written.await {
                return self.fail(err);
            }
            self.written += data.len() as u64 + 1;
            if self.written >= self.max_bytes
                && let Err(err) = self.rotate().await
            {
                self.fail(err);
            }
        }
    }

    pub(crate) async fn flush(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(err) = file.flush().await
        {
            self.fail(err);
        }
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush().await?;
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        tokio::fs::rename(&self.path, &old).await?;
        let file = open_append(&self.path).await?;
        self.file = Some(BufWriter::new(file));
        self.written = 0;
        tracing::debug!(path = %self.path.display(), "agent log rotated");
        Ok(())
    }

    fn fail(&mut self, err: std::io::Error) {
        tracing::warn!(path = %self.path.display(), error = %err, "writing the agent log failed, no longer writing it");
        self.file = None;
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}
