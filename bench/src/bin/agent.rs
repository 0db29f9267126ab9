//! `covibe-bench-agent`: a synthetic vm-agent. The vm-connector's `local` strategy starts it
//! (config `vm_agent_bin`, env `COVIBE_VM_AGENT_BIN`) with the vm-agent's command line:
//!
//! ```text
//! covibe-bench-agent run --link-url URL --agent-id ID --command TEMPLATE --task TASK
//!     --workdir DIR --spool-dir DIR          (agent token in COVIBE_AGENT_TOKEN)
//! ```
//!
//! Instead of running a command it speaks the real AgentLink protocol (Hello, Welcome, Running,
//! Output frames, final Completed) and writes synthetic lines whose shape the task says:
//! `bench rate=10 bytes=512 lines=200 team=0 agent=3 phase_us=0 go=/tmp/x.sock`
//! (`rate=0`: as fast as the link takes them; `secs=S` instead of `lines=`: rate × S lines;
//! `go=`: after attaching, wait for a byte on that Unix socket before the first line). Each line
//! carries its send time (see `covibe_bench::marker`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use covibe_bench::{marker, procstat};
use covibe_proto::tonic::transport::Endpoint;
use covibe_proto::vmagent::v1::agent_link_client::AgentLinkClient;
use covibe_proto::vmagent::v1::{
    AgentFrame, Hello, Output, StatusChange, agent_frame, server_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const STATUS_RUNNING: i32 = 3;
const STATUS_COMPLETED: i32 = 4;
const STREAM_STDOUT: i32 = 1;
/// How long the orchestrator may take to acknowledge everything before the agent gives up.
const ACK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Args {
    link_url: String,
    agent_id: String,
    task: String,
}

#[derive(Debug)]
struct Task {
    rate: f64,
    bytes: usize,
    lines: u64,
    team: u32,
    agent: u32,
    phase: Duration,
    go: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--link-url" => &mut args.link_url,
            "--agent-id" => &mut args.agent_id,
            "--task" => &mut args.task,
            // --command, --workdir, --spool-dir and the rest: a synthetic agent needs none.
            flag if flag.starts_with("--") && !flag.contains('=') => {
                let _ = it.next();
                continue;
            }
            _ => continue,
        };
        *slot = it.next().unwrap_or_default();
    }
    if args.link_url.is_empty() || args.agent_id.is_empty() {
        bail!("usage: covibe-bench-agent run --link-url URL --agent-id ID --task TASK ...");
    }
    Ok(args)
}

fn parse_task(task: &str) -> Result<Task> {
    let mut parsed = Task {
        rate: 10.0,
        bytes: 512,
        lines: 0,
        team: 0,
        agent: 0,
        phase: Duration::ZERO,
        go: None,
    };
    let mut secs = None;
    for word in task.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let bad = || format!("bad {key}={value} in the task");
        match key {
            "rate" => parsed.rate = value.parse().with_context(bad)?,
            "bytes" => parsed.bytes = value.parse().with_context(bad)?,
            "lines" => parsed.lines = value.parse().with_context(bad)?,
            "secs" => secs = Some(value.parse::<f64>().with_context(bad)?),
            "team" => parsed.team = value.parse().with_context(bad)?,
            "agent" => parsed.agent = value.parse().with_context(bad)?,
            "phase_us" => parsed.phase = Duration::from_micros(value.parse().with_context(bad)?),
            "go" => parsed.go = Some(value.to_owned()),
            _ => {}
        }
    }
    if let Some(secs) = secs
        && parsed.lines == 0
    {
        parsed.lines = (parsed.rate * secs).round() as u64;
    }
    Ok(parsed)
}

fn frame(frame: agent_frame::Frame) -> AgentFrame {
    AgentFrame { frame: Some(frame) }
}

#[derive(Debug, Clone, Copy, Default)]
struct Acked {
    next_seq: u64,
    status_stored: bool,
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    let task = parse_task(&args.task)?;
    let token = std::env::var("COVIBE_AGENT_TOKEN").context("COVIBE_AGENT_TOKEN is not set")?;
    let channel = Endpoint::from_shared(args.link_url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.link_url))?;
    let mut client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentFrame>(256);
    tx.send(frame(agent_frame::Frame::Hello(Hello {
        agent_id: args.agent_id.clone(),
        agent_token: token,
        acked_seq: 0,
        agent_version: "bench".to_owned(),
        traceparent: String::new(),
    })))
    .await?;
    let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await?.and_then(|f| f.frame) {
        Some(server_frame::Frame::Welcome(welcome)) if welcome.resume_from_seq == 0 => {}
        other => bail!("expected a fresh welcome, got {other:?}"),
    }
    let (acked_tx, mut acked) = watch::channel(Acked::default());
    tokio::spawn(async move {
        while let Ok(Some(frame)) = inbound.message().await {
            match frame.frame {
                Some(server_frame::Frame::Ack(ack)) => {
                    acked_tx.send_modify(|a| {
                        a.next_seq = a.next_seq.max(ack.next_seq);
                        a.status_stored |= ack.status_stored;
                    });
                }
                Some(server_frame::Frame::Error(err)) => {
                    eprintln!(
                        "covibe-bench-agent: link error {}: {}",
                        err.code, err.message
                    );
                    return;
                }
                _ => {}
            }
        }
    });
    tx.send(frame(agent_frame::Frame::Status(StatusChange {
        status: STATUS_RUNNING,
        ..Default::default()
    })))
    .await?;

    let mut go_stream = None;
    if let Some(go) = &task.go {
        let mut stream = tokio::net::UnixStream::connect(go)
            .await
            .with_context(|| format!("connecting to the go socket {go}"))?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .context("waiting for go")?;
        go_stream = Some(stream);
    }

    let start = tokio::time::Instant::now() + task.phase;
    let period = if task.rate > 0.0 {
        Some(Duration::from_secs_f64(1.0 / task.rate))
    } else {
        None
    };
    for seq in 0..task.lines {
        if let Some(period) = period {
            let at = start + period.mul_f64(seq as f64);
            tokio::time::sleep_until(at).await;
        }
        let data = marker::line(task.team, task.agent, seq, task.bytes).into_bytes();
        tx.send(frame(agent_frame::Frame::Output(Output {
            seq,
            stream: STREAM_STDOUT,
            data: data.into(),
        })))
        .await
        .context("the link closed")?;
    }
    let lines = task.lines;
    tokio::time::timeout(ACK_TIMEOUT, acked.wait_for(|a| a.next_seq >= lines))
        .await
        .context("output not acknowledged in time")??;
    tx.send(frame(agent_frame::Frame::Status(StatusChange {
        status: STATUS_COMPLETED,
        exit_code: Some(0),
        final_seq: lines,
        message: String::new(),
    })))
    .await?;
    tokio::time::timeout(ACK_TIMEOUT, acked.wait_for(|a| a.status_stored))
        .await
        .context("final status not acknowledged in time")??;
    // The benchmark counts what its agents cost apart from the servers: report our CPU ticks.
    if let Some(mut stream) = go_stream {
        let ticks = procstat::cpu_ticks(std::process::id()).unwrap_or(0);
        let _ = stream.write_all(format!("{ticks}\n").as_bytes()).await;
    }
    Ok(())
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("covibe-bench-agent: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(run()) {
        eprintln!("covibe-bench-agent: {err:#}");
        std::process::exit(1);
    }
}
