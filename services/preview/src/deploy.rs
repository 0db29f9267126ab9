//! Deploys: one queue per team in the database (pushes during a deploy coalesce into one more
//! deploy, of the newest commit; a deploy whose runner died is run again), worked by every
//! preview process. A deploy runs on the team's preview VM through the vm-connector's `RunJob`
//! with the team's job grant: fetch the commit from the repository, unpack it into a release
//! of its own, build it there, then stop the app and start the new release under a supervisor
//! that restarts it whenever it exits. The app must then answer its health check; if it does
//! not, the previous release is started again. A failed build never touches the running app.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use covibe_bootstrap::Client;
use covibe_identity::vault::{Binding, Vault};
use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_proto::vmconnector::v1 as vmc;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::HotStore;
use covibe_types::{TeamId, now_ms};

use crate::model::{Deployment, Preview, PreviewConfig};
use crate::store::PreviewStore;

/// How deploys behave; the defaults suit production.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// For the whole deploy job on the VM (fetch, build, start).
    pub timeout: Duration,
    /// How long a started app has to answer its health check.
    pub health_timeout: Duration,
    /// Attempts for a deploy that failed for a passing reason (the VM unreachable, the fetch).
    pub attempts: u32,
    /// How often an idle runner looks for work it was not woken for.
    pub poll: Duration,
    /// Whether this process works the queue (a replica may leave it to the others).
    pub run_queue: bool,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(900),
            health_timeout: Duration::from_secs(30),
            attempts: 3,
            poll: Duration::from_secs(2),
            run_queue: true,
        }
    }
}

/// What the team's job grant is bound to in the vault.
pub(crate) fn grant_binding(team: &str) -> Binding<'_> {
    Binding {
        team,
        user: "",
        vm: "",
        purpose: "job_grant",
    }
}

/// `s` as one word for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Where the team's releases live on the VM, relative to the job's directory unless absolute.
fn work_dir(config: &PreviewConfig, team: TeamId) -> String {
    if config.work_dir.is_empty() {
        format!(".covibe/preview/{team}")
    } else {
        config.work_dir.clone()
    }
}

/// A running deploy's lease, renewed while its runner lives: a deploy whose runner died (its
/// process was killed) is run again this long after.
const LEASE: Duration = Duration::from_secs(30);

/// Exit codes of the deploy script, read by [`Deployer::run`].
const BUILD_FAILED: i32 = 10;
const FETCH_FAILED: i32 = 21;

/// Shell functions both scripts use: stop the supervised app, start a release under a
/// supervisor (its own session, so the whole process group stops together).
fn prelude(config: &PreviewConfig, team: TeamId) -> String {
    format!(
        r#"set -u
WORK={work}
mkdir -p "$WORK/releases" || exit 20
cd "$WORK" || exit 20
WORK=$(pwd)
stop() {{
  if [ -f app.pid ]; then
    pid=$(cat app.pid)
    kill -TERM "-$pid" 2>/dev/null
    i=0; while kill -0 "-$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "-$pid" 2>/dev/null
    rm -f app.pid
  fi
}}
start() {{
  cd "releases/$1" || return 1
  # The supervisor leads a session of its own: stopping it stops the whole process group.
  # It writes its own pid, which is that group's id.
  PORT={port} setsid sh -c 'echo $$ > "$2"; while :; do sh -c "$1"; echo "== the app exited ($?); starting it again"; sleep 1; done' supervisor {start} "$WORK/app.pid" >>"$WORK/app.log" 2>&1 </dev/null &
  cd "$WORK" || return 1
  i=0; while [ ! -s app.pid ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  echo "$1" > current
}}
"#,
        work = quote(&work_dir(config, team)),
        port = config.port,
        start = quote(&config.start_command),
    )
}

/// The commit a deploy's log says it deployed (`== commit SHA`).
fn deployed_commit(log: &str) -> Option<&str> {
    log.lines()
        .find_map(|l| l.strip_prefix("== commit "))
        .map(str::trim)
        .filter(|c| c.len() >= 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()))
}

/// Fetches, unpacks and builds `commit` (the branch's head when empty), then swaps the running
/// app for it.
pub(crate) fn deploy_script(config: &PreviewConfig, team: TeamId, commit: &str) -> String {
    let build = if config.build_command.is_empty() {
        "true".to_owned()
    } else {
        config.build_command.clone()
    };
    format!(
        r#"{prelude}
REPO={repo}
BRANCH={branch}
COMMIT={commit}
echo "== fetching $BRANCH from $REPO"
if [ ! -d repo.git ]; then git init --quiet --bare repo.git || exit {fetch}; fi
git --git-dir=repo.git fetch --quiet --force -- "$REPO" '+refs/heads/*:refs/heads/*' || exit {fetch}
if [ -z "$COMMIT" ]; then
  COMMIT=$(git --git-dir=repo.git rev-parse --verify --quiet "refs/heads/$BRANCH^{{commit}}") || {{ echo "== the branch $BRANCH is not in the repository"; exit {fetch}; }}
fi
echo "== commit $COMMIT"
git --git-dir=repo.git cat-file -e "$COMMIT^{{commit}}" 2>/dev/null || {{ echo "== $COMMIT is not in the repository"; exit {fetch}; }}
rm -rf "releases/$COMMIT.new" && mkdir -p "releases/$COMMIT.new" || exit 20
git --git-dir=repo.git archive "$COMMIT" | tar -x -C "releases/$COMMIT.new" || exit {fetch}
echo "== building"
if ! (cd "releases/$COMMIT.new" && PORT={port} sh -c {build}); then
  echo "== the build failed; the running version is untouched"
  rm -rf "releases/$COMMIT.new"
  exit {build_failed}
fi
rm -rf "releases/$COMMIT" && mv "releases/$COMMIT.new" "releases/$COMMIT" || exit 20
[ -f current ] && cp current previous
echo "== starting $COMMIT"
stop
start "$COMMIT"
# Keep the two newest releases besides the ones in use.
for old in $(ls -t releases 2>/dev/null | tail -n +5); do
  [ "$old" = "$COMMIT" ] || [ "$old" = "$(cat previous 2>/dev/null)" ] || rm -rf "releases/$old"
done
"#,
        prelude = prelude(config, team),
        repo = quote(&config.repository),
        branch = quote(&config.branch),
        commit = quote(commit),
        fetch = FETCH_FAILED,
        port = config.port,
        build = quote(&build),
        build_failed = BUILD_FAILED,
    )
}

/// Starts the release that ran before the last deploy again (its app failed its health check).
pub(crate) fn rollback_script(config: &PreviewConfig, team: TeamId) -> String {
    format!(
        r#"{prelude}
stop
if [ -s previous ] && [ -d "releases/$(cat previous)" ]; then
  echo "== starting $(cat previous) again"
  start "$(cat previous)"
else
  echo "== no earlier version to start again"
  rm -f current
fi
"#,
        prelude = prelude(config, team),
    )
}

/// Where members open the preview: the operator's public URL, or the gateway's path.
pub(crate) fn preview_url(config: &PreviewConfig, team: TeamId) -> String {
    if config.public_url.is_empty() {
        format!("/preview/{team}/")
    } else {
        config.public_url.clone()
    }
}

/// Works the deploy queue.
pub struct Deployer {
    store: Arc<dyn PreviewStore>,
    hot: Arc<dyn HotStore>,
    vault: Vault,
    vmc: VmConnectorServiceClient<Client>,
    settings: DeploySettings,
    wake: tokio::sync::Notify,
}

/// How one deploy ended.
enum Ended {
    Live {
        log: String,
    },
    Failed {
        reason: String,
        log: String,
    },
    /// Worth another attempt (the VM could not be reached, the fetch failed).
    Retry {
        reason: String,
        log: String,
    },
}

impl Deployer {
    pub fn new(
        store: Arc<dyn PreviewStore>,
        hot: Arc<dyn HotStore>,
        vault: Vault,
        vmc: VmConnectorServiceClient<Client>,
        settings: DeploySettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            hot,
            vault,
            vmc,
            settings,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// A deploy was queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the queue in the background for as long as the process lives.
    pub fn spawn(self: &Arc<Self>) {
        if !self.settings.run_queue {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                loop {
                    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
                    match this.store.claim(now_ms(), lease_ms).await {
                        Ok(Some(deployment)) => this.run(deployment).await,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "could not read the deploy queue");
                            break;
                        }
                    }
                }
                tokio::select! {
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(this.settings.poll) => {}
                }
            }
        });
    }

    async fn publish(&self, team: TeamId, event: ev::team_event::Event) {
        let event = ev::TeamEvent {
            team_id: team.to_string(),
            event: Some(event),
        };
        if let Err(err) = self
            .hot
            .publish(team, Bytes::from(event.encode_to_vec()))
            .await
        {
            tracing::warn!(team_id = %team, error = %err, "could not publish a preview event");
        }
    }

    /// Records the team's preview and tells the team.
    async fn announce(&self, preview: &Preview) {
        if let Err(err) = self.store.put(preview).await {
            tracing::warn!(team_id = %preview.team_id, error = %err, "could not record the preview");
        }
        let updated = ev::PreviewUpdated {
            url: preview.url.clone(),
            commit: preview.commit.clone(),
            status: preview.status.clone(),
            git_ref: String::new(),
            repository: String::new(),
            updated_at_ms: preview.updated_at_ms,
        };
        self.publish(
            preview.team_id,
            ev::team_event::Event::PreviewUpdated(updated),
        )
        .await;
    }

    async fn run(&self, d: Deployment) {
        let team = d.team_id;
        tracing::info!(team_id = %team, deployment = %d.id, commit = %d.commit, attempt = d.attempts, "deploy started");
        // The lease is renewed while the deploy runs.
        let renew = {
            let (store, id, attempt) = (self.store.clone(), d.id.clone(), d.attempts);
            tokio::spawn(async move {
                let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
                loop {
                    tokio::time::sleep(LEASE / 3).await;
                    match store.extend_lease(&id, attempt, now_ms() + lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(deployment = %id, attempt, "a deploy's lease was lost: another runner has it");
                            return;
                        }
                        Err(err) => {
                            tracing::warn!(deployment = %id, error = %err, "could not renew a deploy's lease");
                        }
                    }
                }
            })
        };
        let (ended, (url, upstream)) = self.attempt(&d).await;
        renew.abort();
        let now = now_ms();
        // A redeploy of the branch's head learns its commit from the log.
        let mut d = d;
        if d.commit.is_empty()
            && let Ended::Live { log } | Ended::Failed { log, .. } | Ended::Retry { log, .. } =
                &ended
            && let Some(commit) = deployed_commit(log)
        {
            d.commit = commit.to_owned();
        }
        let result = match ended {
            Ended::Live { log } => {
                let finished = self
                    .store
                    .finish(&d.id, d.attempts, "live", &d.commit, &log, now)
                    .await;
                // A runner that lost its lease leaves the preview to the one that has it.
                if !matches!(finished, Ok(false)) {
                    self.announce(&Preview {
                        team_id: team,
                        url,
                        upstream,
                        commit: d.commit.clone(),
                        status: "live".to_owned(),
                        updated_at_ms: now,
                    })
                    .await;
                    tracing::info!(team_id = %team, commit = %d.commit, "preview live");
                }
                finished
            }
            Ended::Retry { reason, log } if d.attempts < self.settings.attempts => {
                let wait = 1000_i64 << d.attempts.min(6);
                tracing::warn!(team_id = %team, deployment = %d.id, reason, wait_ms = wait, "deploy will be tried again");
                let log = format!("{log}\n== {reason}; trying again in {} s", wait / 1000);
                self.store
                    .retry_at(&d.id, d.attempts, now + wait, &log)
                    .await
            }
            Ended::Retry { reason, log } | Ended::Failed { reason, log } => {
                tracing::warn!(team_id = %team, deployment = %d.id, reason, "deploy failed");
                self.failed(&d, &reason, &log).await;
                self.store
                    .finish(&d.id, d.attempts, "failed", &d.commit, &log, now)
                    .await
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(deployment = %d.id, attempt = d.attempts, "a deploy ended after its lease was lost: another runner's result stands");
            }
            Err(err) => {
                tracing::error!(deployment = %d.id, error = %err, "could not record how a deploy ended");
            }
        }
    }

    /// The team hears why; its preview shows the version still serving.
    async fn failed(&self, d: &Deployment, reason: &str, log: &str) {
        let serving = self
            .store
            .deployments(d.team_id, 50)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|x| x.status == "live"));
        let current = self.store.get(d.team_id).await.ok().flatten();
        let preview = match (serving, current) {
            (Some(live), Some(current)) => Preview {
                commit: live.commit,
                status: "live".to_owned(),
                updated_at_ms: now_ms(),
                ..current
            },
            (_, current) => Preview {
                team_id: d.team_id,
                url: current.as_ref().map(|c| c.url.clone()).unwrap_or_default(),
                upstream: current.map(|c| c.upstream).unwrap_or_default(),
                commit: d.commit.clone(),
                status: "failed".to_owned(),
                updated_at_ms: now_ms(),
            },
        };
        self.announce(&preview).await;
        let tail: String = log
            .chars()
            .rev()
            .take(4096)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        self.publish(
            d.team_id,
            ev::team_event::Event::PreviewFailed(ev::PreviewFailed {
                commit: d.commit.clone(),
                deployment_id: d.id.clone(),
                reason: reason.to_owned(),
                log_tail: tail,
                at_ms: now_ms(),
            }),
        )
        .await;
    }

    /// One attempt: the job on the VM, then the health check. Returns how it ended, and the
    /// preview's URL and upstream.
    async fn attempt(&self, d: &Deployment) -> (Ended, (String, String)) {
        let team = d.team_id;
        let failed = |reason: &str| {
            (
                Ended::Failed {
                    reason: reason.to_owned(),
                    log: String::new(),
                },
                (String::new(), String::new()),
            )
        };
        let config = match self.store.config(team).await {
            Ok(Some((config, _))) => config,
            Ok(None) => return failed("the preview is not configured"),
            Err(err) => {
                return (
                    Ended::Retry {
                        reason: format!("the database: {err}"),
                        log: String::new(),
                    },
                    (String::new(), String::new()),
                );
            }
        };
        let grant = match self.store.grant(team).await {
            Ok(Some(grant)) => grant,
            _ => return failed("no VM is set for the preview: save its settings again"),
        };
        let id = team.to_string();
        let secret = match self
            .vault
            .keys()
            .and_then(|keys| keys.open(&grant_binding(&id), &grant.sealed))
        {
            Ok(secret) => secret,
            Err(err) => {
                tracing::error!(team_id = %team, error = %err, "the preview's job grant does not open");
                return failed("the preview's VM grant cannot be opened: save the settings again");
            }
        };
        let grant_text = String::from_utf8_lossy(&secret).into_owned();
        let url = preview_url(&config, team);
        // A VM that dials in cannot be reached: members open the operator's public URL.
        let upstream = if grant.host.is_empty() {
            String::new()
        } else {
            format!("{}:{}", grant.host, config.port)
        };
        let target = (url.clone(), upstream.clone());
        let deploying = self.store.get(team).await.ok().flatten();
        self.announce(&Preview {
            team_id: team,
            url: deploying
                .as_ref()
                .map(|p| p.url.clone())
                .unwrap_or_default(),
            upstream: deploying.map(|p| p.upstream).unwrap_or_default(),
            commit: d.commit.clone(),
            status: "deploying".to_owned(),
            updated_at_ms: now_ms(),
        })
        .await;
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let job = |script: String, timeout: Duration| vmc::RunJobRequest {
            grant: grant_text.clone(),
            script,
            timeout_secs: secs(timeout),
            health: None,
        };
        // The vm-connector checks the app's port from where the VM is reached.
        let mut deploy = job(
            deploy_script(&config, team, &d.commit),
            self.settings.timeout,
        );
        deploy.health = Some(vmc::HealthCheck {
            port: u32::from(config.port),
            path: config.health_path.clone(),
            timeout_secs: secs(self.settings.health_timeout),
        });
        let answer = self.vmc.clone().run_job(deploy).await;
        let outcome = match answer {
            Ok(outcome) => outcome.into_inner(),
            Err(status) => {
                let reason = format!(
                    "the preview's VM could not run the deploy: {}",
                    status.message()
                );
                return match status.code() {
                    covibe_proto::tonic::Code::Unauthenticated => failed(
                        "the preview's VM grant was revoked (the VM was removed?): save the settings again",
                    ),
                    _ => (
                        Ended::Retry {
                            reason,
                            log: String::new(),
                        },
                        target,
                    ),
                };
            }
        };
        let log = outcome.output_tail;
        match outcome.exit_code {
            0 => {}
            BUILD_FAILED => {
                return (
                    Ended::Failed {
                        reason: "the build failed".to_owned(),
                        log,
                    },
                    target,
                );
            }
            FETCH_FAILED => {
                return (
                    Ended::Retry {
                        reason: "the commit could not be fetched".to_owned(),
                        log,
                    },
                    target,
                );
            }
            code => {
                return (
                    Ended::Failed {
                        reason: format!("the deploy stopped with exit code {code}"),
                        log,
                    },
                    target,
                );
            }
        }
        if outcome.healthy {
            return (Ended::Live { log }, target);
        }
        let mut log = log;
        log.push_str(&format!(
            "\n== the app did not answer {} on port {} within {} s",
            config.health_path,
            config.port,
            self.settings.health_timeout.as_secs()
        ));
        match self
            .vmc
            .clone()
            .run_job(job(
                rollback_script(&config, team),
                Duration::from_secs(120),
            ))
            .await
        {
            Ok(back) => log.push_str(&format!("\n{}", back.into_inner().output_tail)),
            Err(status) => log.push_str(&format!(
                "\n== starting the earlier version again failed: {}",
                status.message()
            )),
        }
        (
            Ended::Failed {
                reason: "the app did not answer its health check".to_owned(),
                log,
            },
            target,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_open_the_gateways_path_unless_an_operator_fronts_it() {
        let team = TeamId::new();
        let mut config = PreviewConfig::default();
        assert_eq!(preview_url(&config, team), format!("/preview/{team}/"));
        config.public_url = "https://rocket.preview.example.com/".to_owned();
        assert_eq!(
            preview_url(&config, team),
            "https://rocket.preview.example.com/"
        );
    }

    #[test]
    fn scripts_quote_what_members_typed() {
        let config = PreviewConfig {
            repository: "/srv/repo's.git".to_owned(),
            branch: "main".to_owned(),
            start_command: "echo 'hi'; serve".to_owned(),
            port: 8000,
            ..PreviewConfig::default()
        };
        let script = deploy_script(&config, TeamId::new(), "abc");
        assert!(script.contains(r"REPO='/srv/repo'\''s.git'"), "{script}");
        assert!(script.contains(r"'echo '\''hi'\''; serve'"), "{script}");
    }
}
