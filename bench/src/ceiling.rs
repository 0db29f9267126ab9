//! The ceiling: the highest fan-out rate a stack sustains with p99 ≤ 50 ms and every message
//! delivered once. Short fan-out runs at the main run's shape (teams, viewers, agents, bytes),
//! the per-agent rate doubled while it holds (halved while it does not), then bisected between
//! the highest rate that held and the lowest that did not. The main fan-out run, when there was
//! one, is the first step.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::procstat::round3;
use crate::scenario::{self, Env, FanoutParams};
use crate::target::Team;

/// A rate holds when p99 is at most this and nothing is lost or duplicated.
pub const P99_MS: f64 = 50.0;

#[derive(Debug, Clone)]
pub struct CeilingParams {
    /// Seconds each step's agents write.
    pub secs: f64,
    /// Fan-out runs in all.
    pub steps: u32,
}

fn holds(run: &Value) -> bool {
    run["delivered_pct"].as_f64() == Some(100.0)
        && run["lost"].as_u64() == Some(0)
        && run["duplicated"].as_u64() == Some(0)
        && run
            .pointer("/latency_ms/p99")
            .and_then(Value::as_f64)
            .is_some_and(|p99| p99 <= P99_MS)
}

/// The rate to try after `rate`, knowing the highest that held and the lowest that did not.
fn next_rate(rate: f64, held: Option<f64>, failed: Option<f64>) -> f64 {
    match (held, failed) {
        (Some(ok), Some(bad)) => (ok + bad) / 2.0,
        (Some(_), None) => rate * 2.0,
        (None, _) => rate / 2.0,
    }
}

/// What the search knows so far.
struct Search {
    held: Option<f64>,
    failed: Option<f64>,
    best: Option<Value>,
    steps: Vec<Value>,
    per_rate: f64,
}

impl Search {
    /// Records a run at `rate`; returns the rate to try next.
    fn record(&mut self, stack: &str, rate: f64, run: Value, source: &str) -> f64 {
        let ok = holds(&run);
        eprintln!(
            "   ceiling {stack}: {:.0} msg/s offered ({source}): {}",
            rate * self.per_rate,
            if ok { "holds" } else { "does not hold" }
        );
        self.steps.push(json!({
            "rate": round3(rate),
            "offered_msgs_per_s": round3(rate * self.per_rate),
            "msgs_per_s": run["msgs_per_s"],
            "delivered_pct": run["delivered_pct"],
            "duplicated": run["duplicated"],
            "p99_ms": run.pointer("/latency_ms/p99"),
            "cpu_ms_per_1k": run["cpu_ms_per_1k"],
            "holds": ok,
            "from": source,
        }));
        if ok {
            if self.held.is_none_or(|h| rate > h) {
                self.held = Some(rate);
                self.best = Some(run);
            }
        } else {
            self.failed = Some(self.failed.map_or(rate, |f: f64| f.min(rate)));
        }
        next_rate(rate, self.held, self.failed)
    }
}

/// Searches for the ceiling in `c.steps` fan-out runs. `known`, the main fan-out run at
/// `base` (same shape, longer), counts as the first step when given.
pub async fn ceiling(
    env: &Env<'_>,
    teams: &[Team],
    base: &FanoutParams,
    c: &CeilingParams,
    known: Option<Value>,
) -> Result<Value> {
    let mut search = Search {
        held: None,
        failed: None,
        best: None,
        steps: Vec::new(),
        per_rate: f64::from(base.teams * base.viewers * base.agents),
    };
    let mut rate = base.rate;
    if let Some(run) = known {
        rate = search.record(&env.stack, rate, run, "the fan-out run");
    }
    while search.steps.len() < c.steps.max(1) as usize {
        let p = FanoutParams {
            rate,
            secs: c.secs,
            ..base.clone()
        };
        let run = scenario::fanout(env, teams, &p, "ceiling-step").await?;
        rate = search.record(&env.stack, rate, run, "a step");
        // Let the step's sockets and agents wind down.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let Search {
        held,
        failed,
        best,
        steps,
        per_rate,
    } = search;
    let ceiling = held.map(|r| round3(r * per_rate));
    let summary = format!(
        "ceiling {}: {} teams × {} × {} agents × {} B, {:.0} s a step: highest rate with p99 ≤ {P99_MS} ms and nothing lost {} (lowest that did not hold: {})",
        env.stack,
        base.teams,
        base.viewers,
        base.agents,
        base.bytes,
        c.secs,
        ceiling.map_or("none tried held".to_owned(), |m| format!("{m:.0} msg/s")),
        failed.map_or("none failed".to_owned(), |r| format!(
            "{:.0} msg/s",
            r * per_rate
        )),
    );
    Ok(json!({
        "scenario": "ceiling",
        "stack": env.stack,
        "target": env.api.kind.name(),
        "params": {"teams": base.teams, "viewers": base.viewers, "agents": base.agents,
                   "bytes": base.bytes, "secs": c.secs, "steps": c.steps, "p99_ms": P99_MS},
        "ceiling_msgs_per_s": ceiling,
        "lowest_failed_msgs_per_s": failed.map(|r| round3(r * per_rate)),
        "at_ceiling": best.map(|b| json!({
            "msgs_per_s": b["msgs_per_s"],
            "p99_ms": b.pointer("/latency_ms/p99"),
            "cpu_ms_per_1k": b["cpu_ms_per_1k"],
        })),
        "steps": steps,
        "summary": summary,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_doubles_halves_then_bisects() {
        assert_eq!(next_rate(10.0, Some(10.0), None), 20.0);
        assert_eq!(next_rate(10.0, None, Some(10.0)), 5.0);
        assert_eq!(next_rate(20.0, Some(10.0), Some(20.0)), 15.0);
        assert_eq!(next_rate(5.0, Some(5.0), Some(10.0)), 7.5);
    }

    #[test]
    fn a_rate_holds_only_with_everything_delivered_once_within_the_latency() {
        let run = |pct: f64, dup: u64, p99: f64| json!({"delivered_pct": pct, "lost": 0, "duplicated": dup, "latency_ms": {"p99": p99}});
        assert!(holds(&run(100.0, 0, 50.0)));
        assert!(!holds(&run(100.0, 0, 50.1)));
        assert!(!holds(&run(99.9, 0, 10.0)));
        assert!(!holds(&run(100.0, 1, 10.0)));
    }
}
