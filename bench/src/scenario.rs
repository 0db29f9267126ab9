//! The four scenarios. Each returns one JSON object of results (and `summary`, a line for
//! people).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::marker::{self, now_us};
use crate::procstat::{Sample, Servers, round3, status_kib};
use crate::sio::{self, Packet, Socket};
use crate::target::{Api, Kind, Team};

/// Sockets connecting at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Spawn requests in flight at once.
const SPAWN_CONCURRENCY: usize = 8;
/// Agent indices of the replay and spawn scenarios' agents, apart from the fan-out's.
const REPLAY_AGENT: u32 = 1_000_000;
const SPAWN_AGENT: u32 = 2_000_000;

/// Where a scenario runs.
pub struct Env<'a> {
    pub api: Api,
    pub servers: &'a Servers,
    /// The stack's name in the results (`seed`, `covibe-multi`, ...).
    pub stack: String,
    /// A short directory for the agents' go socket (Unix socket paths are short).
    pub scratch: PathBuf,
}

impl Env<'_> {
    fn kind(&self) -> Kind {
        self.api.kind
    }

    fn head(&self, scenario: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("scenario".into(), json!(scenario));
        map.insert("stack".into(), json!(self.stack));
        map.insert("target".into(), json!(self.kind().name()));
        map
    }
}

/// Connects and joins `team_id`; `Err` when refused.
pub async fn join(url: &str, team_id: &str, token: &str) -> Result<Socket> {
    let mut socket = Socket::connect(url).await?;
    let ack = socket
        .call(
            "join_team",
            &json!({"teamId": team_id, "token": token}),
            Duration::from_secs(30),
        )
        .await?;
    if ack["ok"] != json!(true) {
        bail!("join_team refused: {ack}");
    }
    Ok(socket)
}

// ---------------------------------------------------------------------------------------------
// Latency

/// p50, p99, p99.9 and max of microsecond samples, in milliseconds.
pub fn latency_ms(samples: &mut [u32]) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64) * q).floor() as usize;
        f64::from(samples[i.min(samples.len() - 1)]) / 1000.0
    };
    json!({
        "p50": round3(at(0.50)),
        "p99": round3(at(0.99)),
        "p999": round3(at(0.999)),
        "max": round3(at(1.0)),
        "samples": samples.len(),
    })
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Profiling hooks

/// Runs the shell command in the environment variable `var`, if set, with the server processes
/// in `COVIBE_BENCH_PIDS` (comma-separated) and `COVIBE_BENCH_PID_<NAME>`, and waits for it.
/// `COVIBE_BENCH_HOOK_GO` runs just before the fan-out's agents start, `COVIBE_BENCH_HOOK_DONE`
/// once the measurement ends: e.g. `callgrind_control -i on` / `callgrind_control -d`, or a
/// backgrounded `perf record -p $COVIBE_BENCH_PIDS`.
fn run_hook(var: &str, servers: &Servers) {
    let Ok(command) = std::env::var(var) else {
        return;
    };
    let processes = servers.processes();
    let pids: Vec<String> = processes.iter().map(|(_, pid)| pid.to_string()).collect();
    let mut shell = std::process::Command::new("sh");
    shell
        .args(["-c", &command])
        .env("COVIBE_BENCH_PIDS", pids.join(","));
    for (name, pid) in &processes {
        let key = name.to_uppercase().replace('-', "_");
        shell.env(format!("COVIBE_BENCH_PID_{key}"), pid.to_string());
    }
    match shell.status() {
        Ok(status) if status.success() => {}
        other => eprintln!("covibe-bench: {var} ({command}) failed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out

#[derive(Debug, Clone, Serialize)]
pub struct FanoutParams {
    pub teams: u32,
    pub viewers: u32,
    pub agents: u32,
    /// Chunks per second per agent.
    pub rate: f64,
    /// Bytes per chunk.
    pub bytes: usize,
    pub secs: f64,
}

impl FanoutParams {
    pub fn lines(&self) -> u64 {
        (self.rate * self.secs).round().max(1.0) as u64
    }
}

/// What one viewer saw.
struct Viewer {
    team: u32,
    agents: u32,
    lines: u64,
    seen: Vec<Vec<u64>>,
    frames: u64,
    unique: u64,
    duplicated: u64,
    misrouted: u64,
    unmarked: u64,
    other_events: u64,
    bytes: u64,
    latency_us: Vec<u32>,
    last: Option<Instant>,
}

impl Viewer {
    fn new(team: u32, agents: u32, lines: u64) -> Self {
        let words = lines.div_ceil(64) as usize;
        Self {
            team,
            agents,
            lines,
            seen: vec![vec![0; words]; agents as usize],
            frames: 0,
            unique: 0,
            duplicated: 0,
            misrouted: 0,
            unmarked: 0,
            other_events: 0,
            bytes: 0,
            latency_us: Vec::with_capacity((u64::from(agents) * lines) as usize),
            last: None,
        }
    }

    fn event(&mut self, frame: &[u8], progress: &AtomicU64) {
        if !sio::event_is(frame, "agent_output") {
            self.other_events += 1;
            return;
        }
        let now = now_us();
        self.frames += 1;
        self.bytes += frame.len() as u64;
        let Some(m) = marker::find(frame) else {
            self.unmarked += 1;
            return;
        };
        if m.team != self.team || m.agent >= self.agents || m.seq >= self.lines {
            self.misrouted += 1;
            return;
        }
        let word = &mut self.seen[m.agent as usize][(m.seq / 64) as usize];
        let bit = 1u64 << (m.seq % 64);
        if *word & bit != 0 {
            self.duplicated += 1;
            return;
        }
        *word |= bit;
        self.unique += 1;
        progress.fetch_add(1, Ordering::Relaxed);
        self.latency_us
            .push(u32::try_from(now.saturating_sub(m.sent_us)).unwrap_or(u32::MAX));
        self.last = Some(Instant::now());
    }
}

struct ViewerSpec {
    url: String,
    team_id: String,
    token: String,
}

/// A joined socket that reads until told to stop, handing each event to `on_event`.
fn spawn_socket<S: Send + 'static>(
    spec: ViewerSpec,
    connect: Arc<Semaphore>,
    ready: mpsc::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
    mut state: S,
    on_event: impl Fn(&mut S, &[u8]) + Send + 'static,
) -> JoinHandle<(S, bool)> {
    tokio::spawn(async move {
        let permit = connect.acquire_owned().await;
        let mut socket = match join(&spec.url, &spec.team_id, &spec.token).await {
            Ok(socket) => socket,
            Err(err) => {
                let _ = ready.send(Err(err)).await;
                return (state, true);
            }
        };
        drop(permit);
        let _ = ready.send(Ok(())).await;
        let mut closed = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                packet = socket.next() => match packet {
                    Ok(Packet::Event(text)) => on_event(&mut state, text.as_bytes()),
                    Ok(Packet::Closed) | Err(_) => { closed = true; break; }
                    Ok(Packet::Ack(..)) => {}
                },
            }
        }
        if !closed {
            socket.close().await;
        }
        (state, closed)
    })
}

/// Waits until `count` sockets reported in; the first failure is the error.
async fn all_ready(
    ready: &mut mpsc::Receiver<Result<()>>,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let wait = async {
        for _ in 0..count {
            match ready.recv().await {
                Some(Ok(())) => {}
                Some(Err(err)) => return Err(err),
                None => bail!("a socket task ended early"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, wait)
        .await
        .with_context(|| format!("{count} sockets did not all join within {timeout:?}"))?
}

/// The agents of one fan-out run, ready to start on `go`.
enum Agents {
    /// CoVibe: spawned through REST, attached over AgentLink, each waiting on the go socket.
    Covibe {
        waiting: Vec<tokio::net::UnixStream>,
        path: PathBuf,
    },
    /// Seed: WebSockets to /agent-ws inside this process.
    Seed {
        go: watch::Sender<bool>,
        tasks: Vec<JoinHandle<Result<()>>>,
    },
}

impl Agents {
    async fn go(&mut self) -> Result<()> {
        match self {
            Self::Covibe { waiting, .. } => {
                for stream in waiting.iter_mut() {
                    stream.write_all(b"g").await?;
                }
            }
            Self::Seed { go, .. } => {
                go.send(true)?;
            }
        }
        Ok(())
    }

    /// Waits for the agents to end; CoVibe's report their own CPU time (they are processes of
    /// their own), the seed's run inside the load generator.
    async fn finish(self) -> Result<Option<f64>> {
        match self {
            Self::Covibe { waiting, path } => {
                let _ = std::fs::remove_file(path);
                let reports =
                    futures::future::join_all(waiting.into_iter().map(|mut stream| async move {
                        let mut text = String::new();
                        let read = stream.read_to_string(&mut text);
                        match tokio::time::timeout(Duration::from_secs(60), read).await {
                            Ok(Ok(_)) => text.trim().parse::<u64>().ok(),
                            _ => None,
                        }
                    }))
                    .await;
                let ticks: u64 = reports.iter().flatten().sum();
                Ok(Some(ticks as f64 / crate::procstat::clk_tck() as f64))
            }
            Self::Seed { tasks, .. } => {
                for task in tasks {
                    task.await??;
                }
                Ok(None)
            }
        }
    }
}

fn phase(k: u64, total: u64, p: &FanoutParams) -> Duration {
    // Agents are spread over one period, as independent agents would be, instead of all
    // writing in the same instant.
    let period_us = 1_000_000.0 / p.rate.max(0.001);
    Duration::from_micros((k as f64 * period_us / total.max(1) as f64) as u64)
}

async fn start_agents(env: &Env<'_>, teams: &[Team], p: &FanoutParams) -> Result<Agents> {
    let total = u64::from(p.teams) * u64::from(p.agents);
    let lines = p.lines();
    let mut jobs = Vec::new();
    for team in &teams[..p.teams as usize] {
        for a in 0..p.agents {
            let k = u64::from(team.index) * u64::from(p.agents) + u64::from(a);
            let owner = &team.members[a as usize % team.members.len()];
            jobs.push((team.clone(), a, owner.clone(), phase(k, total, p)));
        }
    }
    match env.kind() {
        Kind::Covibe => {
            std::fs::create_dir_all(&env.scratch)?;
            let path = env.scratch.join("go.sock");
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {}", path.display()))?;
            let spawns = futures::stream::iter(jobs)
                .map(|(team, a, owner, phase)| {
                    let task = format!(
                        "bench rate={} bytes={} lines={lines} team={} agent={a} phase_us={} go={}",
                        p.rate,
                        p.bytes,
                        team.index,
                        phase.as_micros(),
                        path.display()
                    );
                    let api = env.api.clone();
                    async move { api.spawn(&owner.token, &task).await }
                })
                .buffer_unordered(SPAWN_CONCURRENCY)
                .try_collect::<Vec<String>>();
            let accept = async {
                let mut waiting = Vec::with_capacity(total as usize);
                while waiting.len() < total as usize {
                    let (stream, _) = listener.accept().await?;
                    waiting.push(stream);
                }
                anyhow::Ok(waiting)
            };
            let timeout = Duration::from_secs(60 + total / 5);
            let (spawned, waiting) =
                tokio::time::timeout(timeout, async { tokio::try_join!(spawns, accept) })
                    .await
                    .with_context(|| {
                        format!("{total} agents did not all attach within {timeout:?}")
                    })??;
            debug_assert_eq!(spawned.len(), waiting.len());
            Ok(Agents::Covibe { waiting, path })
        }
        Kind::Seed => {
            let (go, go_rx) = watch::channel(false);
            let (ready_tx, mut ready) = mpsc::channel(jobs.len().max(1));
            let mut tasks = Vec::new();
            for (team, a, owner, phase) in jobs {
                let (url, rate, bytes) = (env.api.url.clone(), p.rate, p.bytes);
                let (mut go, ready) = (go_rx.clone(), ready_tx.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ws = match sio::websocket(&url, "/agent-ws").await {
                        Ok(ws) => ws,
                        Err(err) => {
                            let _ = ready.send(Err(err)).await;
                            return Ok(());
                        }
                    };
                    let _ = ready.send(Ok(())).await;
                    go.wait_for(|go| *go).await?;
                    let agent_id = format!("agent-{}-{a}", team.id);
                    let token = &owner.token;
                    let start = tokio::time::Instant::now() + phase;
                    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
                    for seq in 0..lines {
                        tokio::time::sleep_until(start + period.mul_f64(seq as f64)).await;
                        let data = marker::line(team.index, a, seq, bytes);
                        let frame = format!(
                            r#"{{"type":"output","agentId":"{agent_id}","data":"{data}","seq":{seq},"token":"{token}"}}"#
                        );
                        ws.send(Message::text(frame)).await?;
                    }
                    let done = format!(
                        r#"{{"type":"complete","agentId":"{agent_id}","token":"{token}"}}"#
                    );
                    ws.send(Message::text(done)).await?;
                    let _ = ws.close(None).await;
                    Ok(())
                }));
            }
            drop(ready_tx);
            all_ready(&mut ready, tasks.len(), Duration::from_secs(120)).await?;
            Ok(Agents::Seed { go, tasks })
        }
    }
}

/// T teams × M viewers × A agents per team, each agent writing R chunks of C bytes a second for
/// S seconds; every viewer should see every chunk of its team's agents once.
pub async fn fanout(env: &Env<'_>, teams: &[Team], p: &FanoutParams, name: &str) -> Result<Value> {
    if teams.len() < p.teams as usize || teams.iter().any(|t| t.members.len() < p.viewers as usize)
    {
        bail!("fanout needs {} teams of {} members", p.teams, p.viewers);
    }
    let lines = p.lines();
    let (stop_tx, stop) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let connect = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let viewer_count = (p.teams * p.viewers) as usize;
    let (ready_tx, mut ready) = mpsc::channel(viewer_count.max(1));
    let mut viewers = Vec::with_capacity(viewer_count);
    for team in &teams[..p.teams as usize] {
        for member in &team.members[..p.viewers as usize] {
            let spec = ViewerSpec {
                url: env.api.url.clone(),
                team_id: team.id.clone(),
                token: member.token.clone(),
            };
            let progress = progress.clone();
            viewers.push(spawn_socket(
                spec,
                connect.clone(),
                ready_tx.clone(),
                stop.clone(),
                Viewer::new(team.index, p.agents, lines),
                move |viewer: &mut Viewer, frame: &[u8]| viewer.event(frame, &progress),
            ));
        }
    }
    drop(ready_tx);
    let joined = all_ready(&mut ready, viewer_count, Duration::from_secs(120)).await;
    if let Err(err) = joined {
        let _ = stop_tx.send(true);
        return Err(err);
    }
    let setup = Instant::now();
    let mut agents = start_agents(env, teams, p).await?;
    let agents_ready_s = setup.elapsed().as_secs_f64();

    let expected = viewer_count as u64 * u64::from(p.agents) * lines;
    run_hook("COVIBE_BENCH_HOOK_GO", env.servers);
    let sample = Sample::take(env.servers);
    let go = Instant::now();
    let go_us = now_us();
    agents.go().await?;
    // Done when everything arrived, or nothing more arrives for 5 s once the agents are done.
    let sending = Duration::from_secs_f64(p.secs + 1.0 / p.rate.max(0.001));
    let (mut last_count, mut last_change) = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let count = progress.load(Ordering::Relaxed);
        if count >= expected {
            break;
        }
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        let since_go = go.elapsed();
        if since_go > sending + Duration::from_secs(2)
            && last_change.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        if since_go > sending + Duration::from_secs(120) {
            break;
        }
    }
    let usage = sample.finish(env.servers);
    run_hook("COVIBE_BENCH_HOOK_DONE", env.servers);
    let _ = stop_tx.send(true);
    let mut totals = Viewer::new(0, 0, 0);
    let mut latency = Vec::with_capacity(expected as usize);
    let mut closed = 0u64;
    let mut last = go;
    for viewer in viewers {
        let (v, was_closed) = viewer.await?;
        closed += u64::from(was_closed);
        totals.frames += v.frames;
        totals.unique += v.unique;
        totals.duplicated += v.duplicated;
        totals.misrouted += v.misrouted;
        totals.unmarked += v.unmarked;
        totals.other_events += v.other_events;
        totals.bytes += v.bytes;
        latency.extend_from_slice(&v.latency_us);
        if let Some(at) = v.last {
            last = last.max(at);
        }
    }
    let agents_cpu_s = agents.finish().await?;
    let agents_cpu = agents_cpu_s.map_or(String::new(), |s| format!("; agent processes {s:.2}s"));
    let elapsed = last.duration_since(go).as_secs_f64().max(1e-9);
    let cpu_ms_per_1k = if totals.unique > 0 {
        usage.cpu_s * 1000.0 / (totals.unique as f64 / 1000.0)
    } else {
        f64::NAN
    };
    let lost = expected.saturating_sub(totals.unique);
    let latency = latency_ms(&mut latency);
    let mut out = env.head(name);
    out.insert("params".into(), serde_json::to_value(p)?);
    out.insert("lines_per_agent".into(), json!(lines));
    out.insert("expected".into(), json!(expected));
    out.insert("delivered".into(), json!(totals.unique));
    out.insert(
        "delivered_pct".into(),
        json!(round3(
            100.0 * totals.unique as f64 / expected.max(1) as f64
        )),
    );
    out.insert("lost".into(), json!(lost));
    out.insert("duplicated".into(), json!(totals.duplicated));
    out.insert(
        "misrouted".into(),
        json!(totals.misrouted + totals.unmarked),
    );
    out.insert("other_events".into(), json!(totals.other_events));
    out.insert("sockets_closed".into(), json!(closed));
    out.insert("latency_ms".into(), latency.clone());
    out.insert("elapsed_s".into(), json!(round3(elapsed)));
    out.insert(
        "msgs_per_s".into(),
        json!(round3(totals.unique as f64 / elapsed)),
    );
    out.insert(
        "mb_per_s".into(),
        json!(round3(totals.bytes as f64 / elapsed / 1e6)),
    );
    out.insert("agents_ready_s".into(), json!(round3(agents_ready_s)));
    out.insert("server".into(), usage.to_json());
    out.insert("cpu_ms_per_1k".into(), json!(round3(cpu_ms_per_1k)));
    out.insert("started_at_us".into(), json!(go_us));
    out.insert("agents_cpu_s".into(), json!(agents_cpu_s.map(round3)));
    let summary = format!(
        "{name} {}: {}×{}×{} @{}/s×{}B {}s (agents ready in {agents_ready_s:.1}s): delivered {}/{} ({:.2}%), lost {lost}, dup {}, misrouted {}; latency p50 {} p99 {} p99.9 {} max {} ms; {:.0} msg/s {:.1} MB/s; server CPU {:.2}s = {:.2} ms/1k msgs [{}]; load generator {:.2}s{agents_cpu}",
        env.stack,
        p.teams,
        p.viewers,
        p.agents,
        p.rate,
        p.bytes,
        p.secs,
        totals.unique,
        expected,
        100.0 * totals.unique as f64 / expected.max(1) as f64,
        totals.duplicated,
        totals.misrouted + totals.unmarked,
        latency["p50"],
        latency["p99"],
        latency["p999"],
        latency["max"],
        totals.unique as f64 / elapsed,
        totals.bytes as f64 / elapsed / 1e6,
        usage.cpu_s,
        cpu_ms_per_1k,
        usage.summary(),
        usage.client_cpu_s,
    );
    out.insert("summary".into(), json!(summary));
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Idle sockets

/// One idle client: connects, reports, waits for `join`, joins, reports, then only answers
/// pings until `stop`.
fn idle_socket(
    spec: ViewerSpec,
    connect: Arc<Semaphore>,
    ready: mpsc::Sender<Result<()>>,
    mut join_now: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<bool> {
    tokio::spawn(async move {
        let permit = connect.acquire_owned().await;
        let mut socket = match Socket::connect(&spec.url).await {
            Ok(socket) => socket,
            Err(err) => {
                let _ = ready.send(Err(err)).await;
                return true;
            }
        };
        drop(permit);
        let _ = ready.send(Ok(())).await;
        // Connected, not joined: answer pings until told to join.
        let mut closed = false;
        while !*join_now.borrow_and_update() {
            tokio::select! {
                biased;
                _ = join_now.changed() => {}
                packet = socket.next() => if matches!(packet, Ok(Packet::Closed) | Err(_)) {
                    closed = true;
                    break;
                },
            }
        }
        if closed {
            let _ = ready
                .send(Err(anyhow::anyhow!("closed before joining")))
                .await;
            return true;
        }
        let joined = socket
            .call(
                "join_team",
                &json!({"teamId": spec.team_id, "token": spec.token}),
                Duration::from_secs(60),
            )
            .await
            .and_then(|ack| {
                if ack["ok"] == json!(true) {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("join_team refused: {ack}"))
                }
            });
        let failed = joined.is_err();
        let _ = ready.send(joined).await;
        if failed {
            return true;
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                packet = socket.next() => if matches!(packet, Ok(Packet::Closed) | Err(_)) {
                    return true;
                },
            }
        }
        socket.close().await;
        false
    })
}

/// `sockets` sockets that only answer pings: the memory each costs the server once connected,
/// and once joined to a team (spread over the members of `teams`).
pub async fn idle(env: &Env<'_>, teams: &[Team], sockets: u32, hold: Duration) -> Result<Value> {
    let holder = env
        .servers
        .socket_holder
        .context("no server process holds the sockets (pass --server-pids)")?;
    let members: Vec<(&Team, &crate::target::Member)> = teams
        .iter()
        .flat_map(|t| t.members.iter().map(move |m| (t, m)))
        .collect();
    if members.is_empty() {
        bail!("idle needs at least one member");
    }
    let settle = Duration::from_secs(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = || status_kib(holder, "VmRSS").unwrap_or(0);
    let before_holder = rss();
    let before_all = env.servers.rss_kib();
    let (stop_tx, stop) = watch::channel(false);
    let (join_tx, join_now) = watch::channel(false);
    let connect = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (ready_tx, mut ready) = mpsc::channel(sockets.max(1) as usize);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sockets as usize);
    for i in 0..sockets as usize {
        let (team, member) = members[i % members.len()];
        let spec = ViewerSpec {
            url: env.api.url.clone(),
            team_id: team.id.clone(),
            token: member.token.clone(),
        };
        tasks.push(idle_socket(
            spec,
            connect.clone(),
            ready_tx.clone(),
            join_now.clone(),
            stop.clone(),
        ));
    }
    drop(ready_tx);
    let stopping = |result: Result<()>| {
        if result.is_err() {
            let _ = stop_tx.send(true);
            let _ = join_tx.send(true);
        }
        result
    };
    stopping(all_ready(&mut ready, sockets as usize, Duration::from_secs(300)).await)?;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let connected_holder = rss();
    let joining = Instant::now();
    let _ = join_tx.send(true);
    stopping(all_ready(&mut ready, sockets as usize, Duration::from_secs(300)).await)?;
    let join_s = joining.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let sample = Sample::take(env.servers);
    tokio::time::sleep(hold).await;
    let usage = sample.finish(env.servers);
    let after_holder = rss();
    let after_all = env.servers.rss_kib();
    let _ = stop_tx.send(true);
    let mut closed = 0;
    for task in tasks {
        closed += u64::from(task.await?);
    }
    let per = |before: u64, after: u64| {
        round3((after as f64 - before as f64) / f64::from(sockets.max(1)))
    };
    let kib_per_socket = per(before_holder, after_holder);
    let kib_connected = per(before_holder, connected_holder);
    let mib = |kib: u64| round3(kib as f64 / 1024.0);
    let mut out = env.head("idle");
    out.insert("sockets".into(), json!(sockets));
    out.insert("connect_s".into(), json!(round3(connect_s)));
    out.insert("join_s".into(), json!(round3(join_s)));
    out.insert("sockets_closed".into(), json!(closed));
    out.insert("holder_rss_mib_before".into(), json!(mib(before_holder)));
    out.insert(
        "holder_rss_mib_connected".into(),
        json!(mib(connected_holder)),
    );
    out.insert("holder_rss_mib_joined".into(), json!(mib(after_holder)));
    out.insert("kib_per_connected_socket".into(), json!(kib_connected));
    out.insert("kib_per_socket".into(), json!(kib_per_socket));
    out.insert(
        "all_servers_kib_per_socket".into(),
        json!(per(before_all, after_all)),
    );
    out.insert(
        "idle_cpu_ms_per_s".into(),
        json!(round3(usage.cpu_s * 1000.0 / usage.wall_s.max(1e-9))),
    );
    out.insert("server".into(), usage.to_json());
    let summary = format!(
        "idle {}: {sockets} sockets connected in {connect_s:.1}s, joined in {join_s:.1}s: socket holder {:.1} → {:.1} (connected) → {:.1} MiB (joined) = {kib_connected:.1} KiB per connected socket, {kib_per_socket:.1} KiB per joined socket (all server processes {:.1}); idle CPU {:.1} ms/s",
        env.stack,
        mib(before_holder),
        mib(connected_holder),
        mib(after_holder),
        per(before_all, after_all),
        usage.cpu_s * 1000.0 / usage.wall_s.max(1e-9),
    );
    out.insert("summary".into(), json!(summary));
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Replay

fn unsupported(env: &Env<'_>, scenario: &str, why: &str) -> Value {
    let mut out = env.head(scenario);
    out.insert("supported".into(), json!(false));
    out.insert("note".into(), json!(why));
    out.insert(
        "summary".into(),
        json!(format!("{scenario} {}: n/a ({why})", env.stack)),
    );
    Value::Object(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    chunks: Vec<PageChunk>,
    next_seq: u64,
}

#[derive(Deserialize)]
struct PageChunk {
    seq: u64,
}

/// Waits until the agent stored `lines` chunks and ended.
async fn wait_stored(api: &Api, token: &str, agent: &str, lines: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let body = api.get(&format!("/api/agent/{agent}"), token).await?;
        let agent_json = if body["agent"].is_object() {
            &body["agent"]
        } else {
            &body
        };
        let stored = agent_json["outputSeq"].as_u64().unwrap_or(0);
        let status = agent_json["status"].as_str().unwrap_or("");
        if stored >= lines && matches!(status, "completed" | "failed" | "killed") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("agent {agent} stored {stored} of {lines} lines ({status}) after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A late joiner fetching a `backlog`-line history: REST paging, and Socket.io resume.
pub async fn replay(
    env: &Env<'_>,
    teams: &[Team],
    backlog: u64,
    bytes: usize,
    repeats: u32,
) -> Result<Value> {
    if env.kind() == Kind::Seed {
        return Ok(unsupported(
            env,
            "replay",
            "the seed keeps each agent's last lines in a Redis list but offers no way to read them",
        ));
    }
    let team = teams.first().context("replay needs a team")?;
    let owner = team.members.first().context("replay needs a member")?;
    let started = Instant::now();
    let agent = env
        .api
        .spawn(
            &owner.token,
            &format!(
                "bench rate=0 bytes={bytes} lines={backlog} team={} agent={REPLAY_AGENT}",
                team.index
            ),
        )
        .await?;
    wait_stored(&env.api, &owner.token, &agent, backlog).await?;
    let ingest_s = started.elapsed().as_secs_f64();

    // REST: pages of 5,000.
    let mut rest_ms = Vec::new();
    let mut rest_fetch_ms = Vec::new();
    let mut rest_bytes = 0usize;
    let rest_sample = Sample::take(env.servers);
    for _ in 0..repeats {
        let t0 = Instant::now();
        let (mut from, mut got, mut fetch, mut size) = (0u64, 0u64, Duration::ZERO, 0usize);
        while got < backlog {
            let f0 = Instant::now();
            let body = env
                .api
                .get_bytes(
                    &format!("/api/agent/{agent}/output?fromSeq={from}&limit=5000"),
                    &owner.token,
                )
                .await?;
            fetch += f0.elapsed();
            size += body.len();
            let page: Page = serde_json::from_slice(&body)?;
            if page.chunks.is_empty() {
                break;
            }
            for chunk in &page.chunks {
                if chunk.seq != got {
                    bail!("REST history: expected seq {got}, got {}", chunk.seq);
                }
                got += 1;
            }
            from = page.next_seq;
        }
        if got != backlog {
            bail!("REST history held {got} of {backlog} lines");
        }
        rest_ms.push(ms(t0.elapsed()));
        rest_fetch_ms.push(ms(fetch));
        rest_bytes = size;
    }
    let rest_usage = rest_sample.finish(env.servers);

    // Socket.io: join_team with since {agent: -1}, history before live events.
    let mut socket_ms = Vec::new();
    let mut ack_ms = Vec::new();
    let socket_sample = Sample::take(env.servers);
    for _ in 0..repeats {
        let mut socket = Socket::connect(&env.api.url).await?;
        let t0 = Instant::now();
        let id = socket
            .emit_with_ack(
                "join_team",
                &json!({"teamId": team.id, "token": owner.token, "since": {agent.clone(): -1}}),
            )
            .await?;
        let (mut next_seq, mut last_at, mut acked_at) = (0u64, None, None);
        let run = async {
            while next_seq < backlog || acked_at.is_none() {
                match socket.next().await? {
                    Packet::Event(text) if sio::event_is(text.as_bytes(), "agent_output") => {
                        let Some(m) = marker::find(text.as_bytes()) else {
                            continue;
                        };
                        if m.agent != REPLAY_AGENT {
                            continue;
                        }
                        if m.seq != next_seq {
                            bail!("resume: expected seq {next_seq}, got {}", m.seq);
                        }
                        next_seq += 1;
                        if next_seq == backlog {
                            last_at = Some(t0.elapsed());
                        }
                    }
                    Packet::Ack(got, text, at) if got == id => {
                        let ack: Vec<Value> = serde_json::from_str(&text[at..])?;
                        if ack.first().map(|a| &a["ok"]) != Some(&json!(true)) {
                            bail!("resume join refused: {text}");
                        }
                        acked_at = Some(t0.elapsed());
                    }
                    Packet::Closed => bail!("socket closed during resume"),
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .context("resume did not finish within 120 s")??;
        socket.close().await;
        socket_ms.push(last_at.map(ms).unwrap_or(f64::NAN));
        ack_ms.push(acked_at.map(ms).unwrap_or(f64::NAN));
    }
    let socket_usage = socket_sample.finish(env.servers);

    let mut out = env.head("replay");
    out.insert("backlog".into(), json!(backlog));
    out.insert("bytes".into(), json!(bytes));
    out.insert("ingest_s".into(), json!(round3(ingest_s)));
    out.insert("rest".into(), json!({
        "ms_median": median(&mut rest_ms.clone()),
        "ms": rest_ms,
        "fetch_ms_median": median(&mut rest_fetch_ms.clone()),
        "response_bytes": rest_bytes,
        "server_cpu_ms_per_replay": round3(rest_usage.cpu_s * 1000.0 / f64::from(repeats.max(1))),
        "server": rest_usage.to_json(),
    }));
    out.insert("socket".into(), json!({
        "ms_median": median(&mut socket_ms.clone()),
        "ms": socket_ms,
        "ack_ms_median": median(&mut ack_ms.clone()),
        "server_cpu_ms_per_replay": round3(socket_usage.cpu_s * 1000.0 / f64::from(repeats.max(1))),
        "server": socket_usage.to_json(),
    }));
    let summary = format!(
        "replay {}: {backlog} lines × {bytes} B (stored in {ingest_s:.2}s): REST pages of 5,000 {:.1} ms (fetch {:.1} ms, {:.1} MB), Socket.io resume {:.1} ms to the last line (ack {:.1} ms); median of {repeats}",
        env.stack,
        median(&mut rest_ms),
        median(&mut rest_fetch_ms),
        rest_bytes as f64 / 1e6,
        median(&mut socket_ms),
        median(&mut ack_ms),
    );
    out.insert("summary".into(), json!(summary));
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Spawn

/// REST spawn → the agent's first output line at a joined viewer, `count` times in a row.
pub async fn spawn(env: &Env<'_>, teams: &[Team], count: u32) -> Result<Value> {
    if env.kind() == Kind::Seed {
        return Ok(unsupported(
            env,
            "spawn",
            "the seed's server starts no agents; its VM agents connect on their own",
        ));
    }
    let team = teams.first().context("spawn needs a team")?;
    let owner = team.members.first().context("spawn needs a member")?;
    let mut socket = join(&env.api.url, &team.id, &owner.token).await?;
    let mut first_ms = Vec::new();
    let mut response_ms = Vec::new();
    for k in 0..count {
        let agent = SPAWN_AGENT + k;
        let t0 = Instant::now();
        let task = format!(
            "bench rate=0 bytes=64 lines=1 team={} agent={agent}",
            team.index
        );
        let api = env.api.clone();
        let token = owner.token.clone();
        let request = tokio::spawn(async move {
            let r0 = Instant::now();
            api.spawn(&token, &task).await.map(|_| r0.elapsed())
        });
        let wait = async {
            loop {
                match socket.next().await? {
                    Packet::Event(text)
                        if sio::event_is(text.as_bytes(), "agent_output")
                            && marker::find(text.as_bytes()).is_some_and(|m| m.agent == agent) =>
                    {
                        return anyhow::Ok(t0.elapsed());
                    }
                    Packet::Closed => bail!("socket closed while waiting for output"),
                    _ => {}
                }
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .context("no output within 60 s of a spawn")??;
        response_ms.push(ms(request.await??));
        first_ms.push(ms(first));
    }
    socket.close().await;
    let mut out = env.head("spawn");
    out.insert("spawns".into(), json!(count));
    out.insert("first_output_ms".into(), json!(first_ms));
    out.insert(
        "first_output_ms_median".into(),
        json!(median(&mut first_ms.clone())),
    );
    out.insert(
        "first_output_ms_max".into(),
        json!(first_ms.iter().copied().fold(0.0, f64::max)),
    );
    out.insert(
        "response_ms_median".into(),
        json!(median(&mut response_ms.clone())),
    );
    let summary = format!(
        "spawn {}: REST spawn → first output at a viewer {:.1} ms median, {:.1} ms max (spawn response {:.1} ms) over {count}",
        env.stack,
        median(&mut first_ms.clone()),
        first_ms.iter().copied().fold(0.0, f64::max),
        median(&mut response_ms),
    );
    out.insert("summary".into(), json!(summary));
    Ok(Value::Object(out))
}
