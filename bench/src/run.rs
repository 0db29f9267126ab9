//! Every scenario against every stack, one stack at a time on this machine, and the comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::ceiling::{self, CeilingParams};
use crate::procstat::round3;
use crate::scenario::{self, Env, FanoutParams};
use crate::stacks::{Binaries, Stack, StackKind};
use crate::target::{Api, Team};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Idle,
    Spawn,
    Replay,
    Fanout,
    /// The highest fan-out rate that holds p99 ≤ 50 ms with nothing lost.
    Ceiling,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Self::Idle,
        Self::Spawn,
        Self::Replay,
        Self::Fanout,
        Self::Ceiling,
    ];
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub fanout: FanoutParams,
    pub backlog: u64,
    pub backlog_bytes: usize,
    pub repeats: u32,
    pub idle_sockets: u32,
    pub idle_hold: Duration,
    pub spawns: u32,
    /// Teams of lighter fan-out runs before the main one (same viewers, agents, rate, size and
    /// duration), to see the stacks below saturation.
    pub light_teams: Vec<u32>,
    /// The ceiling search (at the fan-out's shape).
    pub ceiling: CeilingParams,
    /// Run in this order (idle first: it measures memory growth on a fresh server).
    pub scenarios: Vec<Scenario>,
}

/// A short directory for Unix sockets.
pub fn scratch_dir(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cvb-{}-{label}", std::process::id()))
}

fn error_result(env: &Env<'_>, scenario: Scenario, err: &anyhow::Error) -> Value {
    json!({
        "scenario": format!("{scenario:?}").to_lowercase(),
        "stack": env.stack,
        "target": env.api.kind.name(),
        "error": format!("{err:#}"),
        "summary": format!("{scenario:?} {}: FAILED: {err:#}", env.stack),
    })
}

/// Sets up the members the plan needs and runs its scenarios; each result goes to `emit` as it
/// comes. A scenario that fails is reported and the others still run.
pub async fn run_scenarios(
    env: &Env<'_>,
    plan: &Plan,
    emit: &mut dyn FnMut(&Value),
) -> Result<Vec<Value>> {
    let started = Instant::now();
    let teams: Vec<Team> = env
        .api
        .setup_teams(plan.fanout.teams, plan.fanout.viewers)
        .await?;
    let setup = json!({
        "scenario": "setup",
        "stack": env.stack,
        "target": env.api.kind.name(),
        "teams": plan.fanout.teams,
        "members": plan.fanout.teams * plan.fanout.viewers,
        "setup_s": round3(started.elapsed().as_secs_f64()),
        "summary": format!("setup {}: {} teams × {} members with tokens in {:.1}s", env.stack, plan.fanout.teams, plan.fanout.viewers, started.elapsed().as_secs_f64()),
    });
    emit(&setup);
    let mut results = vec![setup];
    for scenario in &plan.scenarios {
        // Let the previous scenario's sockets and agents wind down first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let result = match scenario {
            Scenario::Idle => scenario::idle(env, &teams, plan.idle_sockets, plan.idle_hold).await,
            Scenario::Spawn => scenario::spawn(env, &teams, plan.spawns).await,
            Scenario::Replay => {
                scenario::replay(env, &teams, plan.backlog, plan.backlog_bytes, plan.repeats).await
            }
            Scenario::Fanout => {
                for &light_teams in &plan.light_teams {
                    if light_teams == 0 || light_teams >= plan.fanout.teams {
                        continue;
                    }
                    let light = FanoutParams {
                        teams: light_teams,
                        ..plan.fanout.clone()
                    };
                    let name = format!("fanout-t{light_teams}");
                    let value = scenario::fanout(env, &teams, &light, &name)
                        .await
                        .unwrap_or_else(|err| error_result(env, *scenario, &err));
                    emit(&value);
                    results.push(value);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                scenario::fanout(env, &teams, &plan.fanout, "fanout").await
            }
            Scenario::Ceiling => {
                // The main fan-out run, when there was one, is the search's first step.
                let known = results
                    .iter()
                    .rev()
                    .find(|r| r["scenario"] == "fanout" && r.get("error").is_none())
                    .cloned();
                ceiling::ceiling(env, &teams, &plan.fanout, &plan.ceiling, known).await
            }
        };
        let value = result.unwrap_or_else(|err| error_result(env, *scenario, &err));
        emit(&value);
        results.push(value);
    }
    Ok(results)
}

/// Starts each stack in turn under `work_dir`, runs the plan against it, stops it.
pub async fn run_all(
    stacks: &[StackKind],
    bins: &Binaries,
    work_dir: &Path,
    plan: &Plan,
    emit: &mut dyn FnMut(&Value),
) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for kind in stacks {
        let started = Instant::now();
        let stack = match Stack::start(*kind, bins, &work_dir.join(kind.name())).await {
            Ok(stack) => stack,
            Err(err) => {
                let value = json!({"scenario": "start", "stack": kind.name(), "error": format!("{err:#}"),
                    "summary": format!("start {}: FAILED: {err:#}", kind.name())});
                emit(&value);
                results.push(value);
                continue;
            }
        };
        let start_s = started.elapsed().as_secs_f64();
        emit(
            &json!({"scenario": "start", "stack": kind.name(), "url": stack.url, "start_s": round3(start_s),
            "summary": format!("start {}: {} in {start_s:.1}s (logs in {})", kind.name(), stack.url, stack.dir.display())}),
        );
        let env = Env {
            api: Api::new(kind.target(), &stack.url)?,
            servers: &stack.servers,
            stack: kind.name().to_owned(),
            scratch: scratch_dir(kind.name()),
        };
        match run_scenarios(&env, plan, emit).await {
            Ok(mut values) => results.append(&mut values),
            Err(err) => {
                let value = json!({"scenario": "setup", "stack": kind.name(), "error": format!("{err:#}"),
                    "summary": format!("setup {}: FAILED: {err:#}", kind.name())});
                emit(&value);
                results.push(value);
            }
        }
        let _ = std::fs::remove_dir_all(&env.scratch);
        stack.stop().await;
    }
    Ok(results)
}

fn find<'a>(results: &'a [Value], scenario: &str, stack: &str) -> Option<&'a Value> {
    results
        .iter()
        .find(|r| r["scenario"] == scenario && r["stack"] == stack && r.get("error").is_none())
}

/// One figure of a stack's scenario result.
fn figure(results: &[Value], scenario: &str, stack: &str, pointer: &str) -> Option<f64> {
    find(results, scenario, stack)
        .and_then(|r| r.pointer(pointer))
        .and_then(Value::as_f64)
}

/// Figures of every fan-out run, as (label, JSON pointer).
const FANOUT_ROWS: &[(&str, &str)] = &[
    ("delivered msg/s", "/msgs_per_s"),
    ("delivered %", "/delivered_pct"),
    ("lost", "/lost"),
    ("duplicated", "/duplicated"),
    ("latency p50 ms", "/latency_ms/p50"),
    ("latency p99 ms", "/latency_ms/p99"),
    ("latency p99.9 ms", "/latency_ms/p999"),
    ("latency max ms", "/latency_ms/max"),
    ("MB/s to viewers", "/mb_per_s"),
    ("server CPU s", "/server/cpu_s"),
    ("server CPU ms per 1k msgs", "/cpu_ms_per_1k"),
    ("load generator CPU s", "/server/client_cpu_s"),
    ("agent processes CPU s", "/agents_cpu_s"),
];

/// The other figures compared, as (label, scenario, JSON pointer).
const ROWS: &[(&str, &str, &str)] = &[
    (
        "idle KiB / connected socket",
        "idle",
        "/kib_per_connected_socket",
    ),
    ("idle KiB / joined socket", "idle", "/kib_per_socket"),
    ("idle server CPU ms/s", "idle", "/idle_cpu_ms_per_s"),
    (
        "highest msg/s with p99 ≤ 50 ms, none lost",
        "ceiling",
        "/ceiling_msgs_per_s",
    ),
    ("replay backlog over REST ms", "replay", "/rest/ms_median"),
    (
        "replay backlog over Socket.io resume ms",
        "replay",
        "/socket/ms_median",
    ),
    (
        "spawn → first output ms",
        "spawn",
        "/first_output_ms_median",
    ),
];

/// Every row of the table: each fan-out run (lightest first, as run), then the rest.
fn rows(results: &[Value]) -> Vec<(String, String, String)> {
    let mut fanouts: Vec<String> = Vec::new();
    for r in results {
        if let Some(name) = r["scenario"].as_str()
            && name.starts_with("fanout")
            && !fanouts.iter().any(|f| f == name)
        {
            fanouts.push(name.to_owned());
        }
    }
    let mut rows = Vec::new();
    for scenario in fanouts {
        let params = results
            .iter()
            .find(|r| r["scenario"] == scenario.as_str() && r.get("params").is_some())
            .map(|r| &r["params"]);
        let head = match params {
            Some(p) => format!("{}×{}×{}", p["teams"], p["viewers"], p["agents"]),
            None => scenario.clone(),
        };
        for (label, pointer) in FANOUT_ROWS {
            rows.push((
                format!("fanout {head} {label}"),
                scenario.clone(),
                (*pointer).to_owned(),
            ));
        }
    }
    for (label, scenario, pointer) in ROWS {
        rows.push((
            (*label).to_owned(),
            (*scenario).to_owned(),
            (*pointer).to_owned(),
        ));
    }
    rows
}

/// The side-by-side table (for people) and the ratios CoVibe / seed (JSON).
pub fn compare(results: &[Value], stacks: &[StackKind]) -> (Value, String) {
    let names: Vec<&str> = stacks.iter().map(|s| s.name()).collect();
    let seed = names.contains(&"seed").then_some("seed");
    let mut table = format!("{:<42}", "");
    for name in &names {
        table.push_str(&format!("{name:>20}"));
    }
    for name in names.iter().filter(|n| Some(**n) != seed) {
        if seed.is_some() {
            table.push_str(&format!("{:>20}", format!("{}/seed", short(name))));
        }
    }
    table.push('\n');
    let mut ratios = serde_json::Map::new();
    for (label, scenario, pointer) in rows(results) {
        let (label, scenario, pointer) = (label.as_str(), scenario.as_str(), pointer.as_str());
        let value = |stack: &str| figure(results, scenario, stack, pointer);
        table.push_str(&format!("{label:<42}"));
        for name in &names {
            let cell = value(name).map_or("n/a".to_owned(), fmt);
            table.push_str(&format!("{cell:>20}"));
        }
        if let Some(seed) = seed {
            for name in names.iter().filter(|n| **n != seed) {
                let ratio = match (value(name), value(seed)) {
                    (Some(c), Some(s)) if s != 0.0 => Some(c / s),
                    _ => None,
                };
                if let Some(r) = ratio {
                    ratios
                        .entry(format!("{name}/seed"))
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .map(|m| m.insert(label.to_owned(), json!(round3(r))));
                }
                let cell = ratio.map_or("–".to_owned(), |r| format!("{r:.3}"));
                table.push_str(&format!("{cell:>20}"));
            }
        }
        table.push('\n');
    }
    // The targets, reported, never asserted.
    let mut targets = Vec::new();
    for name in names.iter().filter(|n| Some(**n) != seed) {
        let get = |scenario: &str, pointer: &str| figure(results, scenario, name, pointer);
        // This stack's figure and the seed's, when both were measured.
        let with_seed = |scenario: &str, pointer: &str| {
            get(scenario, pointer).zip(seed.and_then(|s| figure(results, scenario, s, pointer)))
        };
        let mut check = |what: &str, value: Option<f64>, goal: &str, met: Option<bool>| {
            targets.push(
                json!({"stack": name, "target": what, "value": value, "goal": goal, "met": met}),
            );
        };
        let cpu = with_seed("fanout", "/cpu_ms_per_1k");
        check(
            "server CPU per 1,000 delivered vs seed",
            cpu.map(|(c, s)| round3(c / s)),
            "≤ 0.1",
            cpu.map(|(c, s)| c <= 0.1 * s),
        );
        let pct = get("fanout", "/delivered_pct");
        check("fanout delivered %", pct, "100", pct.map(|p| p >= 100.0));
        let dup = get("fanout", "/duplicated");
        check("fanout duplicated", dup, "0", dup.map(|d| d == 0.0));
        let p99 = get("fanout", "/latency_ms/p99");
        check("fanout p99 ms", p99, "≤ 50", p99.map(|p| p <= 50.0));
        let ceiling = with_seed("ceiling", "/ceiling_msgs_per_s");
        check(
            "highest rate with p99 ≤ 50 ms vs seed",
            ceiling.map(|(c, s)| round3(c / s)),
            "≥ 10",
            ceiling.map(|(c, s)| c >= 10.0 * s),
        );
        let idle = get("idle", "/kib_per_socket");
        check(
            "KiB per idle joined socket",
            idle,
            "≤ 10",
            idle.map(|k| k <= 10.0),
        );
        let rest = get("replay", "/rest/ms_median");
        check(
            "10k-line backlog over REST ms",
            rest,
            "≤ 50",
            rest.map(|m| m <= 50.0),
        );
        let resume = get("replay", "/socket/ms_median");
        check(
            "10k-line backlog over Socket.io resume ms",
            resume,
            "≤ 50",
            resume.map(|m| m <= 50.0),
        );
    }
    table.push_str("\ntargets (reported, not asserted):\n");
    for t in &targets {
        let met = match t["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a",
        };
        table.push_str(&format!(
            "  {:<20} {:<44} {:>12} (goal {}) {met}\n",
            t["stack"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            t["value"].as_f64().map_or("n/a".to_owned(), fmt),
            t["goal"].as_str().unwrap_or(""),
        ));
    }
    (
        json!({"scenario": "comparison", "ratios": ratios, "targets": targets}),
        table,
    )
}

fn short(name: &str) -> &str {
    name.strip_prefix("covibe-").unwrap_or(name)
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
