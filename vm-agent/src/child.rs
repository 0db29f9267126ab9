//! The agent process: started in its own process group, its pipes read line by line into the
//! spool and then the outbox (waiting while the outbox has no room, which stops the pipes being
//! read), and orchestrator commands turned into signals and stdin writes. An agent speaking the
//! control protocol has a [`Conversation`]: its control lines are not output, and its input,
//! answers and interrupts are protocol lines.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use covibe_proto::common::v1::{AgentStatus, OutputStream};
use covibe_proto::vmagent::v1::{Command, StatusChange, command};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::AGENT_TOKEN_ENV;
use crate::agent_log::AgentLog;
use crate::conversation::{Conversation, Cut};
use crate::permissions::Permissions;
use crate::queue::Outbox;
use crate::spool::SpoolWriter;

/// Longest chunk: a longer line is cut into pieces of at most this size, each ending at a UTF-8
/// character boundary (what the orchestrator accepts, so lines up to it arrive whole).
pub(crate) const MAX_CHUNK: usize = covibe_proto::limits::MAX_OUTPUT_CHUNK_BYTES;
/// Grace between SIGTERM and SIGKILL when a `Kill` asks for none.
const DEFAULT_KILL_GRACE: Duration = Duration::from_millis(5000);
/// How long the agent's pipes may stay open after it exited before its process group is killed.
const PIPE_LINGER: Duration = Duration::from_secs(2);
/// Output gathered into one spool write, at most (plus one chunk).
const BATCH_BYTES: usize = 1024 * 1024;
/// Pause before retrying a failed spool write (the disk may be full until acks free segments).
const SPOOL_RETRY: Duration = Duration::from_secs(1);

type Line = (OutputStream, Bytes, Cut);

/// A started agent: the process, its process group, and the task collecting its output.
pub(crate) struct Agent {
    child: Child,
    group: Pid,
    stdin: mpsc::Sender<Vec<u8>>,
    conversation: Option<Conversation>,
    collector: JoinHandle<()>,
    readers: [JoinHandle<()>; 2],
}

/// How the agent ended.
#[derive(Debug)]
pub(crate) struct Exit {
    status: std::io::Result<ExitStatus>,
    killed: bool,
}

/// How the agent is told its task.
pub(crate) enum Task<'a> {
    /// On its command line: stdin is only for `Input`.
    InCommand,
    /// As the first user message on stdin: it speaks the control protocol.
    Conversation(&'a str, Permissions),
}

/// Starts `argv` in `workdir` in a new process group, without the agent token in its environment.
pub(crate) fn spawn(
    argv: &[String],
    workdir: Option<&Path>,
    task: Task<'_>,
    outbox: Outbox,
    spool: SpoolWriter,
    log: AgentLog,
) -> std::io::Result<Agent> {
    let (program, args) = argv.split_first().ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_remove(AGENT_TOKEN_ENV)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or(std::io::ErrorKind::NotFound)?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::ErrorKind::BrokenPipe.into());
    };
    let (lines_tx, lines_rx) = mpsc::channel(16);
    let readers = [
        tokio::spawn(read_chunks(
            BufReader::new(stdout),
            OutputStream::Stdout,
            lines_tx.clone(),
        )),
        tokio::spawn(read_chunks(
            BufReader::new(stderr),
            OutputStream::Stderr,
            lines_tx,
        )),
    ];
    let (stdin_tx, stdin_rx) = mpsc::channel(256);
    tokio::spawn(feed_stdin(stdin, stdin_rx));
    let conversation = match task {
        Task::InCommand => None,
        Task::Conversation(task, permissions) => {
            // Where the agent works: the policy's path rules are read from there.
            let project_dir = workdir
                .map(Path::to_path_buf)
                .or_else(|| std::env::current_dir().ok())
                .and_then(|dir| std::path::absolute(dir).ok())
                .map(|dir| dir.display().to_string())
                .unwrap_or_default();
            Some(Conversation::start(
                stdin_tx.clone(),
                permissions,
                task,
                project_dir,
            ))
        }
    };
    let collector = tokio::spawn(collect(lines_rx, conversation.clone(), outbox, spool, log));
    Ok(Agent {
        child,
        group: Pid::from_raw(pid),
        stdin: stdin_tx,
        conversation,
        collector,
        readers,
    })
}

impl Agent {
    pub(crate) fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    /// Waits for the agent to exit while acting on `commands`.
    pub(crate) async fn supervise(&mut self, commands: &mut mpsc::Receiver<Command>) -> Exit {
        let mut killed = false;
        let mut kill_at: Option<Instant> = None;
        let mut commands_open = true;
        loop {
            tokio::select! {
                status = self.child.wait() => return Exit { status, killed },
                command = commands.recv(), if commands_open => match command.and_then(|c| c.command) {
                    Some(command::Command::Kill(kill)) => {
                        let grace = match kill.grace_ms {
                            0 => DEFAULT_KILL_GRACE,
                            ms => Duration::from_millis(ms.into()),
                        };
                        tracing::info!(grace_ms = grace.as_millis(), "killing the agent");
                        killed = true;
                        self.signal(Signal::SIGTERM);
                        let deadline = Instant::now() + grace;
                        kill_at = Some(kill_at.map_or(deadline, |at| at.min(deadline)));
                    }
                    Some(command::Command::Interrupt(_)) => {
                        tracing::info!("interrupting the agent");
                        if !self.conversation.as_ref().is_some_and(Conversation::interrupt) {
                            self.signal(Signal::SIGINT);
                        }
                    }
                    Some(command::Command::Input(input)) => match &self.conversation {
                        Some(conversation) => conversation.input(&input.data),
                        None => {
                            if let Err(err) = self.stdin.try_send(input.data) {
                                tracing::warn!(error = %err, "agent input dropped");
                            }
                        }
                    },
                    Some(command::Command::PermissionAnswer(answer)) => match &self.conversation {
                        Some(conversation) => conversation.answer(&answer),
                        None => tracing::debug!(request_id = %answer.request_id, "answer for an agent asking nothing ignored"),
                    },
                    None => commands_open = false,
                },
                () = sleep_until(kill_at), if kill_at.is_some() => {
                    tracing::warn!("agent outlived its kill grace, sending sigkill");
                    self.signal(Signal::SIGKILL);
                    kill_at = None;
                }
            }
        }
    }

    /// Waits until all output is in the outbox. Pipes still open after the agent exited belong
    /// to processes it left behind: they are killed with its process group; pipes held even
    /// after that (by processes that left the group) are abandoned once the outbox has room
    /// again, so the wait is not over a stalled orchestrator.
    pub(crate) async fn collect_output(mut self, outbox: &Outbox) {
        if tokio::time::timeout(PIPE_LINGER, &mut self.collector)
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!("agent exited but its pipes are still open, killing its process group");
        self.signal(Signal::SIGKILL);
        loop {
            if tokio::time::timeout(PIPE_LINGER, &mut self.collector)
                .await
                .is_ok()
            {
                return;
            }
            if !outbox.is_full() {
                tracing::warn!("agent pipes held open outside its process group, abandoning them");
                self.readers.iter().for_each(JoinHandle::abort);
                let _ = self.collector.await;
                return;
            }
        }
    }

    fn signal(&self, signal: Signal) {
        match killpg(self.group, signal) {
            Ok(()) => tracing::debug!(?signal, group = self.group.as_raw(), "signalled the agent"),
            Err(nix::errno::Errno::ESRCH) => {
                tracing::debug!(?signal, "agent process group is gone")
            }
            Err(err) => tracing::warn!(?signal, error = %err, "signalling the agent failed"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Exit {
    /// The final status to report: `KILLED` when killed on command, else by exit code.
    pub(crate) fn status_change(&self) -> StatusChange {
        match &self.status {
            Ok(status) => {
                let outcome = if self.killed {
                    AgentStatus::Killed
                } else if status.success() {
                    AgentStatus::Completed
                } else {
                    AgentStatus::Failed
                };
                let message = status
                    .signal()
                    .map(|n| match Signal::try_from(n) {
                        Ok(signal) => format!("terminated by {signal}"),
                        Err(_) => format!("terminated by signal {n}"),
                    })
                    .unwrap_or_default();
                tracing::info!(status = ?outcome, exit_code = ?status.code(), message, "agent exited");
                StatusChange {
                    status: outcome.into(),
                    exit_code: status.code(),
                    final_seq: 0,
                    message,
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "waiting for the agent failed");
                failed(format!("waiting for the agent failed: {err}"))
            }
        }
    }
}

/// A final `FAILED` status with no exit code.
pub(crate) fn failed(message: String) -> StatusChange {
    StatusChange {
        status: AgentStatus::Failed.into(),
        exit_code: None,
        final_seq: 0,
        message,
    }
}

/// Reads `reader` line by line (without the newline), cutting lines longer than [`MAX_CHUNK`]
/// before a character that would be split (bytes that are not UTF-8 are cut anywhere).
pub(crate) async fn read_chunks<R: AsyncBufRead + Unpin>(
    mut reader: R,
    stream: OutputStream,
    lines: mpsc::Sender<Line>,
) {
    let mut line = BytesMut::new();
    // The previous chunk was cut with nothing left over, so a newline right after it ends no
    // new line.
    let mut just_cut = false;
    // The line being read had a piece cut off already.
    let mut cut_before = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(err) => {
                tracing::warn!(?stream, error = %err, "reading agent output failed");
                &[]
            }
        };
        if buf.is_empty() {
            if !line.is_empty() {
                let cut = if cut_before { Cut::Tail } else { Cut::Whole };
                let _ = lines.send((stream, line.split().freeze(), cut)).await;
            }
            return;
        }
        let window = &buf[..buf.len().min(MAX_CHUNK - line.len())];
        let piece = |cut_before: bool| if cut_before { Cut::Tail } else { Cut::Head };
        let (consumed, chunk, cut) = match window.iter().position(|&b| b == b'\n') {
            Some(0) if just_cut => {
                cut_before = false;
                (1, None, false)
            }
            Some(end) => {
                line.extend_from_slice(&window[..end]);
                let whole = if cut_before { Cut::Tail } else { Cut::Whole };
                cut_before = false;
                (end + 1, Some((line.split().freeze(), whole)), false)
            }
            None => {
                line.extend_from_slice(window);
                let full = line.len() == MAX_CHUNK;
                // The start of a character cut short stays for the next chunk.
                let chunk = full.then(|| {
                    let chunk = (
                        line.split_to(char_boundary(&line)).freeze(),
                        piece(cut_before),
                    );
                    cut_before = true;
                    chunk
                });
                (window.len(), chunk, full && line.is_empty())
            }
        };
        just_cut = cut;
        reader.consume(consumed);
        if let Some((chunk, cut)) = chunk
            && lines.send((stream, chunk, cut)).await.is_err()
        {
            return;
        }
    }
}

/// Where to cut `bytes` so that no UTF-8 character is split: before a character whose bytes
/// do not all fit, else at the end.
fn char_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A character is at most 4 bytes: its start is among the last 3 if it is cut short.
    for start in (len.saturating_sub(3)..len).rev() {
        let lead = bytes[start];
        let width = match lead {
            0x00..=0x7f => return len,
            0x80..=0xbf => continue, // a continuation byte: its start is further back
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return len, // no character starts with it
        };
        return if start + width > len && start > 0 {
            start
        } else {
            len
        };
    }
    len
}

/// Moves output from the pipe readers to the log, the spool and the outbox, in batches of what
/// is ready: each batch waits for room in the outbox, is written to the spool, then queued.
async fn collect(
    mut lines: mpsc::Receiver<Line>,
    conversation: Option<Conversation>,
    outbox: Outbox,
    mut spool: SpoolWriter,
    mut log: AgentLog,
) {
    // A batch fits in the memory window (give or take its last chunk).
    let limits = outbox.limits();
    let max_bytes = BATCH_BYTES.min(limits.max_bytes);
    // Control lines are the conversation's, not output.
    let output = |(stream, data, cut): Line| match &conversation {
        Some(conversation)
            if stream == OutputStream::Stdout && conversation.on_stdout(&data, cut) =>
        {
            None
        }
        _ => Some((stream, data)),
    };
    let mut batch = Vec::new();
    while let Some(line) = lines.recv().await {
        let mut bytes = 0;
        let mut next = Some(line);
        while let Some(line) = next.take() {
            if let Some(line) = output(line) {
                bytes += line.1.len();
                batch.push(line);
            }
            if batch.len() < limits.max_chunks && bytes < max_bytes {
                next = lines.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        for (_, data) in &batch {
            log.append(data).await;
        }
        if lines.is_empty() {
            log.flush().await;
        }
        let Some(first_seq) = outbox.reserve(batch.len(), bytes).await else {
            batch.clear();
            continue;
        };
        let mut spooled = Vec::with_capacity(batch.len());
        for (seq, (stream, data)) in (first_seq..).zip(&batch) {
            spooled.push(loop {
                match spool.append(seq, *stream, data).await {
                    Ok(spooled) => break spooled,
                    Err(err) => spool_failed(seq, &err).await,
                }
            });
        }
        while let Err(err) = spool.flush().await {
            spool_failed(first_seq, &err).await;
        }
        for ((seq, (stream, data)), spooled) in (first_seq..).zip(batch.drain(..)).zip(spooled) {
            outbox.push(seq, stream, data, spooled);
        }
    }
    log.flush().await;
}

async fn spool_failed(seq: u64, err: &std::io::Error) {
    tracing::warn!(
        seq,
        error = %err,
        retry_ms = SPOOL_RETRY.as_millis(),
        "writing the spool failed, the agent's output waits"
    );
    tokio::time::sleep(SPOOL_RETRY).await;
}

async fn feed_stdin(mut stdin: ChildStdin, mut input: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = input.recv().await {
        // Empty input closes the agent's stdin.
        if data.is_empty() {
            tracing::debug!("closing agent stdin");
            return;
        }
        if let Err(err) = async {
            stdin.write_all(&data).await?;
            stdin.flush().await
        }
        .await
        {
            tracing::warn!(error = %err, "writing agent input failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chunks(input: &[u8]) -> Vec<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel(1024);
        read_chunks(input, OutputStream::Stdout, tx).await;
        let mut out = Vec::new();
        while let Some((_, chunk, _)) = rx.recv().await {
            out.push(chunk.to_vec());
        }
        out
    }

    #[tokio::test]
    async fn lines_are_chunks_and_long_lines_are_cut() {
        assert_eq!(
            chunks(b"a\n\nbc\nlast").await,
            [&b"a"[..], b"", b"bc", b"last"]
        );
        assert!(chunks(b"").await.is_empty());

        let exact = vec![b'x'; MAX_CHUNK];
        let long = vec![b'y'; 2 * MAX_CHUNK + 5];
        let mut input = exact.clone();
        input.push(b'\n');
        input.extend(&long);
        input.extend(b"\nz\n");
        // A small buffer makes the reader see lines across many reads.
        let reader = BufReader::with_capacity(1000, &input[..]);
        let (tx, mut rx) = mpsc::channel(1024);
        read_chunks(reader, OutputStream::Stderr, tx).await;
        let mut got = Vec::new();
        let mut cuts = Vec::new();
        while let Some((stream, chunk, cut)) = rx.recv().await {
            assert_eq!(stream, OutputStream::Stderr);
            got.push(chunk.to_vec());
            cuts.push(cut);
        }
        let expected = [
            exact,
            vec![b'y'; MAX_CHUNK],
            vec![b'y'; MAX_CHUNK],
            vec![b'y'; 5],
            b"z".to_vec(),
        ];
        assert_eq!(got, expected);
        assert_eq!(
            cuts,
            // A line of exactly MAX_CHUNK bytes counts as cut.
            [Cut::Head, Cut::Head, Cut::Tail, Cut::Tail, Cut::Whole]
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_between_characters() {
        // 'é' is two bytes and '€' three: with one ASCII byte first, MAX_CHUNK falls inside a
        // character, which then starts the next chunk.
        let mut text = String::from("a");
        while text.len() < MAX_CHUNK + 10 {
            text.push_str("é€");
        }
        let mut input = text.clone().into_bytes();
        input.push(b'\n');
        input.extend("after\n".as_bytes());
        let got = chunks(&input).await;
        assert_eq!(got.len(), 3, "two pieces and the next line");
        assert!(got[0].len() < MAX_CHUNK && got[0].len() > MAX_CHUNK - 4);
        let pieces: Vec<&str> = got[..2]
            .iter()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(pieces.concat(), text);
        assert_eq!(got[2], b"after");

        // A line of exactly MAX_CHUNK ASCII bytes is one chunk; the newline after it ends it.
        let mut exact = vec![b'q'; MAX_CHUNK];
        exact.extend(b"\nz\n");
        assert_eq!(chunks(&exact).await, [vec![b'q'; MAX_CHUNK], b"z".to_vec()]);

        // Bytes that are not UTF-8 are cut at MAX_CHUNK.
        let binary = vec![0xffu8; MAX_CHUNK + 1];
        let got = chunks(&binary).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_CHUNK, 1]);
    }
}
