//! The human-readable log of an agent's output: `<spool-dir>/agent_logs/<agent-id>.log`, one line
//! per chunk, stdout and stderr interleaved as they were read.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufWriter};

use crate::Error;

#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    /// `None` after a write failed: the log is for humans and must not stop the streaming.
    file: Option<BufWriter<tokio::fs::File>>,
}

impl Spool {
    pub(crate) async fn open(spool_dir: &Path, agent_id: &str) -> Result<Self, Error> {
        let dir = spool_dir.join("agent_logs");
        let path = dir.join(format!("{agent_id}.log"));
        let spool_error = |source| Error::Spool {
            path: path.clone(),
            source,
        };
        tokio::fs::create_dir_all(&dir).await.map_err(spool_error)?;
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(spool_error)?;
        Ok(Self {
            file: Some(BufWriter::new(file)),
            path,
        })
    }

    pub(crate) async fn append(&mut self, data: &[u8]) {
        if let Some(file) = &mut self.file {
            let written = async {
                file.write_all(data).await?;
                file.write_all(b"\n").await
            };
            if let Err(err) = written.await {
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

    fn fail(&mut self, err: std::io::Error) {
        tracing::warn!(path = %self.path.display(), error = %err, "writing the agent log failed, no longer writing it");
        self.file = None;
    }
}
