//! Server-side cost, read from `/proc`: CPU time (utime + stime of the process itself, never of
//! its reaped children, so the agents a vm-connector starts do not count) and memory (VmRSS,
//! VmHWM).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The short command name of `pid`.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Every process whose command name is one of `names` (the kernel keeps 15 characters).
pub fn find_by_name(names: &[String]) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(name) = comm(pid) else { continue };
        if names
            .iter()
            .any(|n| name == *n || (n.len() > 15 && name == n[..15]))
        {
            found.push((name, pid));
        }
    }
    found.sort_by_key(|(_, pid)| *pid);
    found
}

/// The server side of a stack: fixed processes, plus the PostgreSQL backends serving one
/// database (they come and go with connection pools, so they are looked up at each sample).
#[derive(Debug, Clone, Default)]
pub struct Servers {
    pub fixed: Vec<(String, u32)>,
    /// `(admin URL, database name)` whose backends count.
    pub postgres: Option<(String, String)>,
    /// The process that holds the client sockets (the gateway, or the seed's node).
    pub socket_holder: Option<u32>,
}

impl Servers {
    /// Every server process now, labelled.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut all = self.fixed.clone();
        if let Some((admin, db)) = &self.postgres {
            for pid in postgres_backends(admin, db) {
                all.push(("postgres".to_owned(), pid));
            }
        }
        all
    }

    /// Total resident memory of every server process now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.fixed
            .iter()
            .filter_map(|(_, pid)| status_kib(*pid, "VmRSS"))
            .sum()
    }
}

/// The pids of the backends connected to `db`.
pub fn postgres_backends(admin_url: &str, db: &str) -> Vec<u32> {
    let query = format!("SELECT pid FROM pg_stat_activity WHERE datname = '{db}'");
    std::process::Command::new("psql")
        .args([admin_url, "-XAtc", &query])
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU counters at the start of a measurement.
pub struct Sample {
    ticks: HashMap<u32, u64>,
    self_ticks: u64,
    at: std::time::Instant,
}

impl Sample {
    pub fn take(servers: &Servers) -> Self {
        Self {
            ticks: servers
                .processes()
                .into_iter()
                .filter_map(|(_, pid)| Some((pid, cpu_ticks(pid)?)))
                .collect(),
            self_ticks: cpu_ticks(std::process::id()).unwrap_or(0),
            at: std::time::Instant::now(),
        }
    }

    /// What every server process spent since the start: per process, and the total CPU
    /// seconds. A process that appeared meanwhile (a new database connection) counts whole.
    pub fn finish(&self, servers: &Servers) -> Usage {
        let tck = clk_tck() as f64;
        let mut processes: Vec<ProcessUsage> = Vec::new();
        for (name, pid) in servers.processes() {
            let Some(now) = cpu_ticks(pid) else { continue };
            let before = self.ticks.get(&pid).copied().unwrap_or(0);
            let cpu_s = now.saturating_sub(before) as f64 / tck;
            let peak_rss_kib = status_kib(pid, "VmHWM").unwrap_or(0);
            let rss_kib = status_kib(pid, "VmRSS").unwrap_or(0);
            // Backends are many small processes: report them as one line.
            if name == "postgres"
                && let Some(pg) = processes.iter_mut().find(|p| p.name == "postgres")
            {
                pg.cpu_s += cpu_s;
                pg.peak_rss_kib = pg.peak_rss_kib.max(peak_rss_kib);
                pg.rss_kib += rss_kib;
                pg.count += 1;
                continue;
            }
            processes.push(ProcessUsage {
                name,
                pid,
                cpu_s,
                peak_rss_kib,
                rss_kib,
                count: 1,
            });
        }
        let self_now = cpu_ticks(std::process::id()).unwrap_or(0);
        Usage {
            cpu_s: processes.iter().map(|p| p.cpu_s).sum(),
            processes,
            client_cpu_s: self_now.saturating_sub(self.self_ticks) as f64 / tck,
            wall_s: self.at.elapsed().as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcessUsage {
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct Usage {
    pub processes: Vec<ProcessUsage>,
    /// Every server process together.
    pub cpu_s: f64,
    /// The load generator itself (viewers, and the seed's agents, which run inside it).
    pub client_cpu_s: f64,
    pub wall_s: f64,
}

impl Usage {
    pub fn to_json(&self) -> Value {
        json!({
            "cpu_s": round3(self.cpu_s),
            "wall_s": round3(self.wall_s),
            "client_cpu_s": round3(self.client_cpu_s),
            "processes": self.processes.iter().map(|p| json!({
                "name": p.name,
                "pid": p.pid,
                "count": p.count,
                "cpu_s": round3(p.cpu_s),
                "peak_rss_mib": round3(p.peak_rss_kib as f64 / 1024.0),
            })).collect::<Vec<_>>(),
        })
    }

    /// `name 1.23 s` for each process, for people.
    pub fn summary(&self) -> String {
        self.processes
            .iter()
            .map(|p| {
                let count = if p.count > 1 {
                    format!(" ×{}", p.count)
                } else {
                    String::new()
                };
                format!(
                    "{}{count} {:.2}s/{:.0}MiB",
                    p.name,
                    p.cpu_s,
                    p.peak_rss_kib as f64 / 1024.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").unwrap_or(0) > 0);
        assert!(status_kib(me, "VmHWM").unwrap_or(0) > 0);
        assert!(clk_tck() > 0);
    }
}
