//! `covibe-bench`: see the crate documentation and BENCHMARKS.md.
//!
//! ```text
//! covibe-bench all                                  # every scenario, seed vs CoVibe (multi, standalone)
//! covibe-bench fanout --target covibe               # one scenario against a CoVibe it starts
//! covibe-bench ceiling --target covibe --mode multi # the highest rate with p99 ≤ 50 ms
//! covibe-bench fanout --target seed --url http://127.0.0.1:3900 --server-names node,redis-server
//! ```
//!
//! Results: one JSON line per scenario on stdout; a summary for people on stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use covibe_bench::ceiling::CeilingParams;
use covibe_bench::procstat::{self, Servers};
use covibe_bench::run::{self, Plan, Scenario};
use covibe_bench::scenario::{Env, FanoutParams};
use covibe_bench::stacks::{self, Binaries, Stack, StackKind};
use covibe_bench::target::{Api, Kind};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum What {
    Fanout,
    Replay,
    Idle,
    Spawn,
    /// The highest fan-out rate that holds p99 ≤ 50 ms with nothing lost (at the fan-out's
    /// teams, viewers, agents and bytes).
    Ceiling,
    /// Every scenario against every stack in `--stacks`, and the comparison.
    All,
}

/// Load generator: CoVibe and the seed's stack, side by side.
#[derive(Debug, Parser)]
#[command(name = "covibe-bench")]
struct Cli {
    what: What,
    /// The server a single scenario runs against.
    #[arg(long, value_enum, default_value = "covibe")]
    target: Kind,
    /// Its URL; without one, the bench starts the stack itself (CoVibe: see --mode).
    #[arg(long)]
    url: Option<String>,
    /// CoVibe stack to start for a single scenario when no --url is given.
    #[arg(long, value_enum, default_value = "standalone")]
    mode: StackKind,
    /// With --url: the server's processes whose CPU and memory count.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// With --url: find the server's processes by command name instead (e.g. covibe,redis-server).
    #[arg(long, value_delimiter = ',')]
    server_names: Vec<String>,
    /// With --url: the process holding the Socket.io sockets [default: the first server process].
    #[arg(long)]
    socket_pid: Option<u32>,
    /// `all`: the stacks, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "seed,multi,standalone"
    )]
    stacks: Vec<StackKind>,
    /// `all`: the scenarios, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "idle,spawn,replay,fanout,ceiling"
    )]
    scenarios: Vec<Scenario>,
    /// Fan-out: teams.
    #[arg(long, default_value_t = 100)]
    teams: u32,
    /// Fan-out: viewers (members) per team.
    #[arg(long, default_value_t = 10)]
    viewers: u32,
    /// Fan-out: agents per team.
    #[arg(long, default_value_t = 5)]
    agents: u32,
    /// Fan-out: chunks per second per agent.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Fan-out: bytes per chunk.
    #[arg(long, default_value_t = 512)]
    bytes: usize,
    /// Fan-out: seconds each agent writes.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    /// Fan-out: lighter runs first with these many teams, to see the stacks below saturation
    /// (0: none).
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    light_teams: Vec<u32>,
    /// Ceiling: seconds each step's agents write.
    #[arg(long, default_value_t = 4.0)]
    ceiling_secs: f64,
    /// Ceiling: fan-out runs in the search (with `all`, the main fan-out run is the first).
    #[arg(long, default_value_t = 6)]
    ceiling_steps: u32,
    /// Replay: lines of backlog.
    #[arg(long, default_value_t = 10_000)]
    backlog: u64,
    /// Replay: times each replay is measured (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Idle: joined sockets.
    #[arg(long, default_value_t = 2000)]
    idle_sockets: u32,
    /// Idle: seconds the sockets are held while CPU is measured.
    #[arg(long, default_value_t = 5.0)]
    idle_hold_secs: f64,
    /// Spawn: spawns measured.
    #[arg(long, default_value_t = 5)]
    spawns: u32,
    /// Tiny scale for a quick look: 2 teams × 3 viewers × 2 agents × 10/s for 2 s, 1,000-line
    /// backlog, 50 idle sockets, 2 spawns.
    #[arg(long)]
    quick: bool,
    /// Also write every result (and the comparison) to this file, one JSON object a line.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where started stacks keep their data and logs [default: target/covibe-bench].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The seed's server directory [default: ../shared/peers/seed-node, or COVIBE_BENCH_SEED_DIR].
    #[arg(long)]
    seed_dir: Option<PathBuf>,
    /// The covibe binary [default: built with cargo next to this one].
    #[arg(long)]
    covibe_bin: Option<PathBuf>,
    /// The synthetic agent [default: covibe-bench-agent next to this binary].
    #[arg(long)]
    agent_bin: Option<PathBuf>,
}

impl Cli {
    fn plan(&self, scenarios: Vec<Scenario>) -> Plan {
        let mut plan = Plan {
            fanout: FanoutParams {
                teams: self.teams,
                viewers: self.viewers,
                agents: self.agents,
                rate: self.rate,
                bytes: self.bytes,
                secs: self.secs,
            },
            backlog: self.backlog,
            backlog_bytes: self.bytes,
            repeats: self.repeats.max(1),
            idle_sockets: self.idle_sockets,
            idle_hold: Duration::from_secs_f64(self.idle_hold_secs),
            spawns: self.spawns.max(1),
            light_teams: self.light_teams.clone(),
            ceiling: CeilingParams {
                secs: self.ceiling_secs,
                steps: self.ceiling_steps.max(1),
            },
            scenarios,
        };
        if self.quick {
            plan.fanout = FanoutParams {
                teams: 2,
                viewers: 3,
                agents: 2,
                rate: 10.0,
                bytes: self.bytes,
                secs: 2.0,
            };
            plan.backlog = 1000;
            plan.idle_sockets = 50;
            plan.idle_hold = Duration::from_secs(1);
            plan.spawns = 2;
            plan.repeats = 1;
            plan.light_teams = vec![1];
            plan.ceiling = CeilingParams {
                secs: 1.0,
                steps: 2,
            };
        }
        plan
    }

    fn binaries(&self, need_covibe: bool) -> Result<Binaries> {
        let exe = std::env::current_exe()?;
        let exe_dir = exe.parent().context("no directory")?.to_path_buf();
        let (mut covibe, mut agent) = (exe_dir.join("covibe"), exe_dir.join("covibe-bench-agent"));
        if need_covibe && (self.covibe_bin.is_none() || self.agent_bin.is_none()) {
            (covibe, agent) = stacks::workspace_binaries(&exe_dir, true)?;
        }
        let covibe = self.covibe_bin.clone().unwrap_or(covibe);
        let agent = self.agent_bin.clone().unwrap_or(agent);
        let seed_dir = self
            .seed_dir
            .clone()
            .unwrap_or_else(stacks::default_seed_dir);
        Ok(Binaries {
            covibe: std::fs::canonicalize(&covibe).unwrap_or(covibe),
            agent: std::fs::canonicalize(&agent).unwrap_or(agent),
            seed_dir: std::fs::canonicalize(&seed_dir).unwrap_or(seed_dir),
        })
    }

    fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| stacks::workspace_root().join("target/covibe-bench"))
    }
}

struct Output {
    file: Option<std::fs::File>,
}

impl Output {
    fn emit(&mut self, value: &Value) {
        use std::io::Write as _;
        let line = value.to_string();
        println!("{line}");
        if let Some(file) = &mut self.file {
            let _ = writeln!(file, "{line}");
        }
        if let Some(summary) = value["summary"].as_str() {
            eprintln!("== {summary}");
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut output = Output {
        file: match &cli.out {
            Some(path) => Some(std::fs::File::create(path)?),
            None => None,
        },
    };
    let work_dir = cli.work_dir();
    if cli.what == What::All {
        let needs_covibe = cli.stacks.iter().any(|s| *s != StackKind::Seed);
        let bins = cli.binaries(needs_covibe)?;
        let plan = cli.plan(cli.scenarios.clone());
        let started = std::time::Instant::now();
        let results = run::run_all(&cli.stacks, &bins, &work_dir, &plan, &mut |v| {
            output.emit(v)
        })
        .await?;
        let (comparison, table) = run::compare(&results, &cli.stacks);
        let mut comparison = comparison;
        comparison["total_s"] =
            serde_json::json!(procstat::round3(started.elapsed().as_secs_f64()));
        output.emit(&comparison);
        eprintln!("\n{table}\ntotal {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let scenario = match cli.what {
        What::Fanout => Scenario::Fanout,
        What::Replay => Scenario::Replay,
        What::Idle => Scenario::Idle,
        What::Spawn => Scenario::Spawn,
        What::Ceiling => Scenario::Ceiling,
        What::All => unreachable!(),
    };
    let plan = cli.plan(vec![scenario]);
    let (stack, url, servers) = match &cli.url {
        Some(url) => {
            let mut fixed: Vec<(String, u32)> = cli
                .server_pids
                .iter()
                .map(|pid| {
                    (
                        procstat::comm(*pid).unwrap_or_else(|| pid.to_string()),
                        *pid,
                    )
                })
                .collect();
            fixed.extend(procstat::find_by_name(&cli.server_names));
            if fixed.is_empty() {
                eprintln!(
                    "covibe-bench: no --server-pids or --server-names: server CPU is not measured"
                );
            }
            let socket_holder = cli.socket_pid.or(fixed.first().map(|(_, pid)| *pid));
            let servers = Servers {
                fixed,
                postgres: None,
                socket_holder,
            };
            (None, url.clone(), servers)
        }
        None => {
            let kind = match cli.target {
                Kind::Seed => StackKind::Seed,
                Kind::Covibe => cli.mode,
            };
            let bins = cli.binaries(kind != StackKind::Seed)?;
            let stack = Stack::start(kind, &bins, &work_dir.join(kind.name())).await?;
            eprintln!(
                "== started {} at {} (logs in {})",
                kind.name(),
                stack.url,
                stack.dir.display()
            );
            let (url, servers) = (stack.url.clone(), stack.servers.clone());
            (Some(stack), url, servers)
        }
    };
    let name = stack.as_ref().map_or(cli.target.name(), |s| s.kind.name());
    let env = Env {
        api: Api::new(cli.target, &url)?,
        servers: &servers,
        stack: name.to_owned(),
        scratch: run::scratch_dir(name),
    };
    let result = run::run_scenarios(&env, &plan, &mut |v| output.emit(v)).await;
    let _ = std::fs::remove_dir_all(&env.scratch);
    if let Some(stack) = stack {
        stack.stop().await;
    }
    result.map(|_| ())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}
