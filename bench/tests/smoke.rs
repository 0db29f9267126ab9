//! The benchmark at tiny scale (1 team, 2 viewers, 1 agent, about a second per scenario)
//! against CoVibe standalone, so it cannot rot. The seed's half runs too when its npm packages
//! are installed (`npm ci --prefix ../shared/peers/seed-node`) and `redis-server` is on PATH.
//! Figures are not checked here: only that every scenario runs and that fan-out delivers
//! everything exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use covibe_bench::run::{self, Plan, Scenario};
use covibe_bench::scenario::FanoutParams;
use covibe_bench::stacks::{self, Binaries, StackKind};
use serde_json::Value;

/// `target/<profile>/`, from `target/<profile>/deps/<this test>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_at_tiny_scale() {
    // Built by `cargo nextest run --workspace` already (the covibe crate's tests need it);
    // built here when missing.
    let (covibe, _) = stacks::workspace_binaries(&profile_dir(), false).expect("the covibe binary");
    let bins = Binaries {
        covibe,
        agent: PathBuf::from(env!("CARGO_BIN_EXE_covibe-bench-agent")),
        seed_dir: stacks::default_seed_dir(),
    };
    let mut kinds = vec![StackKind::Standalone];
    if bins.seed_dir.join("node_modules").is_dir() && on_path("redis-server") && on_path("node") {
        kinds.push(StackKind::Seed);
    } else {
        eprintln!(
            "smoke: the seed's half is skipped (no {}/node_modules, or no redis-server or node)",
            bins.seed_dir.display()
        );
    }
    let plan = Plan {
        fanout: FanoutParams {
            teams: 1,
            viewers: 2,
            agents: 1,
            rate: 20.0,
            bytes: 256,
            secs: 1.0,
        },
        backlog: 200,
        backlog_bytes: 256,
        repeats: 1,
        idle_sockets: 4,
        idle_hold: Duration::from_millis(200),
        spawns: 1,
        light_teams: Vec::new(),
        ceiling: covibe_bench::ceiling::CeilingParams {
            secs: 1.0,
            steps: 2,
        },
        scenarios: Scenario::ALL.to_vec(),
    };
    let work = std::env::temp_dir().join(format!("covibe-bench-smoke-{}", std::process::id()));
    let mut print = |v: &Value| eprintln!("{}", v["summary"].as_str().unwrap_or_default());
    let run = run::run_all(&kinds, &bins, &work, &plan, &mut print);
    let results = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the smoke run finished within 240 s")
        .expect("the smoke run");
    let _ = std::fs::remove_dir_all(&work);

    let failures: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert!(failures.is_empty(), "failed: {failures:#?}");
    for kind in &kinds {
        let get = |scenario: &str| {
            results
                .iter()
                .find(|r| r["scenario"] == scenario && r["stack"] == kind.name())
                .unwrap_or_else(|| panic!("no {scenario} result for {}", kind.name()))
        };
        let fanout = get("fanout");
        assert_eq!(fanout["expected"], 40, "{fanout}");
        assert_eq!(fanout["delivered"], fanout["expected"], "{fanout}");
        assert_eq!(fanout["duplicated"], 0, "{fanout}");
        assert_eq!(fanout["misrouted"], 0, "{fanout}");
        assert!(fanout["latency_ms"]["p99"].is_number(), "{fanout}");
        assert!(fanout["cpu_ms_per_1k"].is_number(), "{fanout}");
        assert!(get("idle")["kib_per_socket"].is_number());
        let ceiling = get("ceiling");
        assert_eq!(
            ceiling["steps"].as_array().map(Vec::len),
            Some(2),
            "{ceiling}"
        );
        // Whether a step holds is a latency figure: reported, never asserted.
        for step in ceiling["steps"].as_array().unwrap() {
            assert!(step["holds"].is_boolean(), "{ceiling}");
            assert!(step["p99_ms"].is_number(), "{ceiling}");
        }
        if kind.target() == covibe_bench::target::Kind::Covibe {
            let replay = get("replay");
            assert!(replay["rest"]["ms_median"].is_number(), "{replay}");
            assert!(replay["socket"]["ms_median"].is_number(), "{replay}");
            assert!(get("spawn")["first_output_ms_median"].is_number());
        }
    }
    let (comparison, table) = run::compare(&results, &kinds);
    eprintln!("{table}");
    assert!(comparison["targets"].is_array());
}
