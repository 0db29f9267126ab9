//! Jobs on a VM (preview deploys): a script run with `sh -c`, its output's tail kept, and the
//! HTTP check of the port the script's app serves. The vm-connector runs them for VMs on its
//! own machine and `vm-agent daemon` for VMs that dial in, so both behave the same.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The most of a job's output that is kept.
pub const JOB_TAIL_BYTES: usize = 64 * 1024;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// -1 when it was stopped at its time limit or killed by a signal.
    pub exit_code: i32,
    /// The end of what it printed (stdout and stderr together).
    pub output_tail: String,
}

/// Runs `script` with `sh -c` in `dir`, stdout and stderr together, stopped after `timeout`.
/// Processes the script detaches (`setsid`) outlive it: that is how a deploy leaves its app
/// running.
pub async fn run_script(
    script: &str,
    dir: &Path,
    timeout: Duration,
) -> std::io::Result<JobOutcome> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let work = async {
        let tail = read_tail(stdout, JOB_TAIL_BYTES).await;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(JobOutcome {
            exit_code: status.code().unwrap_or(-1),
            output_tail: tail,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Ok(JobOutcome {
            exit_code: -1,
            output_tail: format!(
                "the job ran past its {} s limit and was stopped",
                timeout.as_secs()
            ),
        }),
    }
}

/// Reads `reader` to its end, keeping the last `max` bytes.
pub async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, max: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * max {
            kept.drain(..kept.len() - max);
        }
    }
    if kept.len() > max {
        kept.drain(..kept.len() - max);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Whether `http://host:port{path}` answers with a status below 400 within `within`, tried
/// every quarter second (an app takes a moment to listen).
pub async fn http_healthy(host: &str, port: u16, path: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if http_check_once(host, port, path).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn http_check_once(host: &str, port: u16, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: covibe-preview\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 32];
        let n = stream.read(&mut head).await.ok()?;
        let line = std::str::from_utf8(&head[..n]).ok()?;
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(status < 400)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_keeps_the_end_of_its_output_and_its_exit_code() {
        let dir = std::env::temp_dir();
        let outcome = run_script(
            "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; echo oops >&2; exit 3",
            &dir,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!(outcome.exit_code, 3);
        assert!(outcome.output_tail.len() <= JOB_TAIL_BYTES);
        assert!(outcome.output_tail.ends_with("line 19999\noops\n"));
        assert!(!outcome.output_tail.contains("line 0\n"));
    }

    #[tokio::test]
    async fn a_job_past_its_limit_is_stopped() {
        let outcome = run_script(
            "sleep 30",
            &std::env::temp_dir(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(outcome.exit_code, -1);
        assert!(outcome.output_tail.contains("limit"));
    }

    #[tokio::test]
    async fn the_check_wants_an_http_status_below_400() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let status = if ok { "200 OK" } else { "503 Busy" };
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let within = Duration::from_millis(300);
        assert!(http_healthy("127.0.0.1", port, "/ok", within).await);
        assert!(!http_healthy("127.0.0.1", port, "/down", within).await);
        let closed = crate::job::tests::free_port();
        assert!(!http_healthy("127.0.0.1", closed, "/", within).await);
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
