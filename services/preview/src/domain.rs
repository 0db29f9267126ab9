//! The rules: a member reads their own team's preview; owners and admins configure it (the
//! repository and branch that deploy, and how the app is built and run), which gives the team
//! its own webhook secret, sealed at rest. A push webhook is verified with the team's secret
//! (HMAC-SHA256 over the raw body, constant-time) before anything of its body is looked at,
//! acted on only for the configured repository and branch, recorded once per delivery id, and
//! published as `preview_updated` on the team's fan-out.

use std::sync::Arc;

use covibe_bootstrap::{Client, bearer};
use covibe_identity::vault::{Binding, Vault, VaultError};
use covibe_proto::common::v1::Role;
use covibe_proto::team::v1 as team_pb;
use covibe_proto::team::v1::team_service_client::TeamServiceClient;
use covibe_proto::vmconnector::v1 as vmc;
use covibe_proto::vmconnector::v1::vm_connector_service_client::VmConnectorServiceClient;
use covibe_storage::HotStore;
use covibe_types::{ApiError, Code, TeamId, UserId, now_ms};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::Error;
use crate::deploy::{Deployer, grant_binding};
use crate::model::{
    Deployment, Preview, PreviewConfig, Push, PushDelivery, PushOutcome, SealedSecret, StoredGrant,
};
use crate::store::PreviewStore;
use crate::webhook::{self, PushEvent, verify_signature};

pub struct PreviewDomain {
    store: Arc<dyn PreviewStore>,
    hot: Arc<dyn HotStore>,
    vault: Vault,
    /// Asked for the caller's role (with the caller's own token).
    team: TeamServiceClient<Client>,
    /// Asked for a grant to deploy on the VM the configuring member names.
    vmc: VmConnectorServiceClient<Client>,
    deployer: Arc<Deployer>,
}

/// What a team's secret is bound to in the vault.
fn binding(team: &str) -> Binding<'_> {
    Binding {
        team,
        user: "",
        vm: "",
        purpose: "webhook_secret",
    }
}

/// How long a preview capability lasts.
const CAPABILITY_TTL_MS: i64 = 3_600_000;

fn vault_error(err: &VaultError) -> ApiError {
    tracing::error!(error = %err, "a webhook secret could not be sealed or opened");
    ApiError::unavailable(
        "the server's master key cannot open the team's webhook secret; tell your operator",
    )
}

/// A fresh secret for GitHub: 32 random bytes as hex.
fn new_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut_slice());
    Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn one_line(what: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be at most {max} printable characters"
        )));
    }
    Ok(value.to_owned())
}

/// Checks a configuration a member sent, filling the defaults.
fn clean_config(c: &PreviewConfig) -> Result<PreviewConfig, ApiError> {
    let repository = one_line("repository", &c.repository, 1024)?;
    if repository.is_empty() || repository.starts_with('-') {
        return Err(ApiError::invalid(
            "repository must be a clone URL or path, or GitHub's owner/name",
        ));
    }
    let branch = one_line("branch", &c.branch, 255)?;
    let branch = if branch.is_empty() {
        "main".to_owned()
    } else {
        branch
    };
    let bad_branch = branch.starts_with('-')
        || branch.contains("..")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    if bad_branch {
        return Err(ApiError::invalid("branch must be a git branch name"));
    }
    let start_command = one_line("startCommand", &c.start_command, 4096)?;
    if start_command.is_empty() {
        return Err(ApiError::invalid(
            "startCommand is required: how the app starts (it must listen on `port`)",
        ));
    }
    if c.port == 0 {
        return Err(ApiError::invalid("port must be 1 to 65535"));
    }
    let health_path = one_line("healthPath", &c.health_path, 1024)?;
    let health_path = if health_path.is_empty() {
        "/".to_owned()
    } else {
        health_path
    };
    if !health_path.starts_with('/') {
        return Err(ApiError::invalid("healthPath must start with /"));
    }
    let public_url = one_line("publicUrl", &c.public_url, 1024)?;
    let web = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    if !public_url.is_empty() && !web(&public_url) {
        return Err(ApiError::invalid("publicUrl must be an http or https URL"));
    }
    let vm_id = c.vm_id.trim();
    if !vm_id.is_empty() && vm_id.parse::<covibe_types::VmId>().is_err() {
        return Err(ApiError::invalid("vmId is not a VM id"));
    }
    Ok(PreviewConfig {
        repository,
        branch,
        vm_id: vm_id.to_owned(),
        work_dir: one_line("workDir", &c.work_dir, 1024)?,
        build_command: one_line("buildCommand", &c.build_command, 4096)?,
        start_command,
        port: c.port,
        health_path,
        public_url,
        updated_by: String::new(),
        updated_at_ms: 0,
    })
}

/// `https://github.com/o/r.git`, `git@github.com:o/r.git`, `o/r`: the same repository.
fn normalize(repository: &str) -> String {
    repository
        .trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

/// Whether a push came from the configured repository.
fn same_repository(configured: &str, push: &PushEvent) -> bool {
    let configured = normalize(configured);
    push.repository_names()
        .iter()
        .any(|name| !name.is_empty() && normalize(name) == configured)
}

impl PreviewDomain {
    pub fn new(
        store: Arc<dyn PreviewStore>,
        hot: Arc<dyn HotStore>,
        vault: Vault,
        team: TeamServiceClient<Client>,
        vmc: VmConnectorServiceClient<Client>,
        deployer: Arc<Deployer>,
    ) -> Self {
        Self {
            store,
            hot,
            vault,
            team,
            vmc,
            deployer,
        }
    }

    fn capability_mac(&self, team: TeamId, expires_ms: i64) -> Result<Hmac<Sha256>, Error> {
        let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
        let key = keys
            .derive("preview-capability")
            .map_err(|e| vault_error(&e))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_slice())
            .map_err(|_| ApiError::internal("capability key"))?;
        mac.update(format!("{team}|{expires_ms}").as_bytes());
        Ok(mac)
    }

    /// A capability to view the team's preview for the next hour: it goes in the path a frame
    /// loads, because a frame cannot send a token (nor, sandboxed, cookies).
    pub fn open_preview(&self, team: TeamId) -> Result<(String, i64), Error> {
        let expires_ms = now_ms() + CAPABILITY_TTL_MS;
        let tag = self
            .capability_mac(team, expires_ms)?
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        Ok((format!("{expires_ms:x}-{hex}"), expires_ms))
    }

    /// Where the app of the preview a capability opens runs.
    pub async fn resolve_preview(&self, team: &str, capability: &str) -> Result<String, Error> {
        let refused = || {
            Error::from(ApiError::unauthenticated(
                "this preview link has expired: open the preview again from CoVibe",
            ))
        };
        let team: TeamId = team.parse().map_err(|_| refused())?;
        let (expires, tag) = capability.split_once('-').ok_or_else(refused)?;
        let expires_ms = i64::from_str_radix(expires, 16).map_err(|_| refused())?;
        let tag = crate::webhook::decode_hex(tag).ok_or_else(refused)?;
        if expires_ms < now_ms() {
            return Err(refused());
        }
        self.capability_mac(team, expires_ms)?
            .verify_slice(&tag)
            .map_err(|_| refused())?;
        let upstream = self
            .store
            .get(team)
            .await?
            .map(|p| p.upstream)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::unavailable("the team's preview is not running yet"))?;
        Ok(upstream)
    }

    /// The team's deploys, newest first.
    pub async fn deployments(&self, team: TeamId, limit: u32) -> Result<Vec<Deployment>, Error> {
        let limit = match limit {
            0 => 20,
            n => n.min(100),
        };
        Ok(self.store.deployments(team, u64::from(limit)).await?)
    }

    /// Deploys the branch's head again (fetched afresh). Owners and admins only.
    pub async fn redeploy(
        &self,
        user: UserId,
        team: TeamId,
        token: &str,
    ) -> Result<Deployment, Error> {
        self.require_admin(user, token).await?;
        if self.store.config(team).await?.is_none() {
            return Err(ApiError::new(
                Code::Conflict,
                "configure the team's preview first (PUT /api/preview/config)",
            )
            .into());
        }
        // An empty commit is the branch's head, read when the deploy fetches.
        let deployment = self
            .store
            .enqueue(team, "", "manual", &user.to_string(), now_ms())
            .await?;
        tracing::info!(target: "audit", team_id = %team, user_id = %user, "redeploy requested");
        self.deployer.wake();
        Ok(deployment)
    }

    /// A grant to deploy on the VM the configuration names (the caller's own; their default
    /// when none is named), unless the team already has one for that VM.
    async fn ensure_grant(
        &self,
        team: TeamId,
        token: &str,
        config: &mut PreviewConfig,
    ) -> Result<(), Error> {
        let existing = self.store.grant(team).await?;
        if let Some(grant) = &existing
            && (config.vm_id.is_empty() || config.vm_id == grant.vm_id)
        {
            reachable(&grant.host, config)?;
            config.vm_id.clone_from(&grant.vm_id);
            return Ok(());
        }
        let answer = self
            .vmc
            .clone()
            .create_job_grant(bearer(
                vmc::CreateJobGrantRequest {
                    vm_id: config.vm_id.clone(),
                    purpose: "preview".to_owned(),
                },
                token,
            ))
            .await
            .map_err(|status| ApiError::from_status(&status))?
            .into_inner();
        reachable(&answer.host, config)?;
        let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
        let id = team.to_string();
        let sealed = keys
            .seal(&grant_binding(&id), answer.grant.as_bytes())
            .map_err(|e| vault_error(&e))?;
        self.store
            .put_grant(&StoredGrant {
                team_id: team,
                vm_id: answer.vm_id.clone(),
                host: answer.host,
                key_version: keys.current(),
                sealed,
            })
            .await?;
        config.vm_id = answer.vm_id;
        Ok(())
    }

    /// The team's preview (`none` before its first push).
    pub async fn preview(&self, team: TeamId) -> Result<Preview, Error> {
        Ok(self.store.get(team).await?.unwrap_or(Preview {
            team_id: team,
            url: String::new(),
            upstream: String::new(),
            commit: String::new(),
            status: "none".to_owned(),
            updated_at_ms: 0,
        }))
    }

    /// Refuses a caller who is not an owner or admin of their team (the team service says).
    async fn require_admin(&self, user: UserId, token: &str) -> Result<(), Error> {
        let team = self
            .team
            .clone()
            .get_team(bearer(team_pb::GetTeamRequest {}, token))
            .await
            .map_err(|status| ApiError::from_status(&status))?
            .into_inner();
        let role = team
            .members
            .iter()
            .find(|m| m.id == user.to_string())
            .map(|m| m.role());
        if matches!(role, Some(Role::Owner | Role::Admin)) {
            return Ok(());
        }
        Err(ApiError::forbidden("only the team's owners and admins configure its preview").into())
    }

    /// The team's configuration (`None` before it was first set). Owners and admins only.
    pub async fn config(
        &self,
        user: UserId,
        team: TeamId,
        token: &str,
    ) -> Result<Option<PreviewConfig>, Error> {
        self.require_admin(user, token).await?;
        Ok(self.store.config(team).await?.map(|(config, _)| config))
    }

    fn seal(&self, team: TeamId, secret: &str) -> Result<SealedSecret, Error> {
        let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
        let id = team.to_string();
        let sealed = keys
            .seal(&binding(&id), secret.as_bytes())
            .map_err(|e| vault_error(&e))?;
        Ok(SealedSecret {
            team_id: team,
            key_version: keys.current(),
            sealed,
        })
    }

    /// Sets the team's configuration. The first one makes the team's webhook secret, returned
    /// this once.
    pub async fn put_config(
        &self,
        user: UserId,
        team: TeamId,
        token: &str,
        config: &PreviewConfig,
    ) -> Result<(PreviewConfig, Option<Zeroizing<String>>), Error> {
        self.require_admin(user, token).await?;
        let mut config = clean_config(config)?;
        config.updated_by = user.to_string();
        config.updated_at_ms = now_ms();
        self.ensure_grant(team, token, &mut config).await?;
        let first = self.store.config(team).await?.is_none();
        let secret = first.then(new_secret);
        let sealed = match &secret {
            Some(secret) => Some(self.seal(team, secret)?),
            None => None,
        };
        self.store
            .put_config(team, &config, sealed.as_ref())
            .await?;
        tracing::info!(target: "audit", team_id = %team, user_id = %user,
            repository = %config.repository, branch = %config.branch, "preview configured");
        Ok((config, secret))
    }

    /// A new webhook secret for the team, returned this once; the old one is refused from now on.
    pub async fn rotate_secret(
        &self,
        user: UserId,
        team: TeamId,
        token: &str,
    ) -> Result<Zeroizing<String>, Error> {
        self.require_admin(user, token).await?;
        let secret = new_secret();
        let sealed = self.seal(team, &secret)?;
        if !self.store.set_secret(&sealed).await? {
            return Err(ApiError::new(
                Code::Conflict,
                "configure the team's preview first (PUT /api/preview/config)",
            )
            .into());
        }
        tracing::info!(target: "audit", team_id = %team, user_id = %user, "webhook secret rotated");
        Ok(secret)
    }

    /// A webhook delivery: checked against the team's own secret, then recorded once and
    /// published when it is a push to the configured repository and branch.
    pub async fn receive_push(&self, r: Push) -> Result<PushOutcome, Error> {
        let refuse = |reason: &str, message: &str| {
            tracing::warn!(target: "audit", action = "webhook.push", outcome = "refused",
                reason, team = %r.team_id, delivery_id = %r.delivery_id, event = %r.event,
                body_bytes = r.body.len(), "webhook refused");
            Error::from(ApiError::unauthenticated(message))
        };
        // Unknown and unconfigured teams are refused like a bad signature: the answer tells a
        // stranger nothing about which teams exist.
        let unsigned = "webhook signature does not match the body";
        let Ok(team) = r.team_id.trim().parse::<TeamId>() else {
            return Err(refuse("unknown_team", unsigned));
        };
        let Some((config, sealed)) = self.store.config(team).await? else {
            return Err(refuse("not_configured", unsigned));
        };
        let keys = self.vault.keys().map_err(|e| vault_error(&e))?;
        let id = team.to_string();
        let secret = keys
            .open(&binding(&id), &sealed.sealed)
            .map_err(|e| vault_error(&e))?;
        // The signature first: nothing of an unsigned body is looked at.
        if let Err(reason) = verify_signature(&secret, &r.signature_256, &r.body) {
            return Err(refuse(reason.as_str(), reason.message()));
        }
        drop(secret);
        let ignored = |why: &str| {
            tracing::info!(team_id = %team, event = %r.event, delivery_id = %r.delivery_id,
                why, "webhook delivery ignored");
            Ok(PushOutcome {
                ignored: why.to_owned(),
                ..PushOutcome::default()
            })
        };
        if r.event == "ping" {
            return ignored("ping");
        }
        if r.event != "push" {
            return ignored("not a push");
        }
        if r.delivery_id.is_empty()
            || r.delivery_id.len() > 128
            || !r.delivery_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ApiError::invalid("missing or invalid X-GitHub-Delivery header").into());
        }
        let push = PushEvent::parse(&r.body).map_err(ApiError::invalid)?;
        if push.deleted {
            return ignored("a branch deletion");
        }
        if !same_repository(&config.repository, &push) {
            return ignored("another repository");
        }
        if push.git_ref != format!("refs/heads/{}", config.branch) {
            return ignored("another branch");
        }
        let delivery = PushDelivery {
            delivery_id: r.delivery_id,
            team_id: team,
            commit: push.after.clone(),
            received_at_ms: now_ms(),
        };
        let Some(preview) = self.store.record_push(&delivery).await? else {
            tracing::info!(team_id = %team, delivery_id = %delivery.delivery_id,
                "webhook redelivery: already recorded");
            return Ok(PushOutcome {
                accepted: true,
                duplicate: true,
                preview: self.store.get(team).await?,
                ignored: String::new(),
            });
        };
        tracing::info!(target: "audit", action = "webhook.push", outcome = "accepted",
            team_id = %team, delivery_id = %delivery.delivery_id, commit = %preview.commit,
            repository = %push.repository, git_ref = %push.git_ref, "push recorded");
        self.store
            .enqueue(team, &push.after, "push", &push.pusher, now_ms())
            .await?;
        self.deployer.wake();
        let event = webhook::preview_updated(&preview, &push);
        // Recorded is what counts: a fan-out outage only delays what viewers see until they
        // read the preview again.
        if let Err(err) = self.hot.publish(team, event).await {
            tracing::warn!(team_id = %team, error = %err, "could not publish preview_updated");
        }
        Ok(PushOutcome {
            accepted: true,
            duplicate: false,
            preview: Some(preview),
            ignored: String::new(),
        })
    }
}

/// Re-encrypts every team's webhook secret sealed under an older master key version (a
/// compare-and-swap per row: safe to stop and run again). Returns how many it re-encrypted.
pub async fn reseal_secrets(store: &dyn PreviewStore, vault: &Vault) -> Result<usize, Error> {
    let done = reseal_webhook_secrets(store, vault).await?;
    let keys = vault
        .keys()
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let current = keys.current();
    let mut grants = 0;
    for stored in store.grants_below(current).await? {
        let id = stored.team_id.to_string();
        let plain = keys
            .open(&grant_binding(&id), &stored.sealed)
            .map_err(|e| ApiError::unavailable(format!("team {id}: {e}")))?;
        let sealed = keys
            .seal(&grant_binding(&id), &plain)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if store
            .reseal_grant(stored.team_id, &stored.sealed, &sealed, current)
            .await?
        {
            grants += 1;
        }
    }
    Ok(done + grants)
}

async fn reseal_webhook_secrets(store: &dyn PreviewStore, vault: &Vault) -> Result<usize, Error> {
    let keys = vault
        .keys()
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let current = keys.current();
    let mut done = 0;
    for stored in store.secrets_below(current).await? {
        let id = stored.team_id.to_string();
        let plain = keys
            .open(&binding(&id), &stored.sealed)
            .map_err(|e| ApiError::unavailable(format!("team {id}: {e}")))?;
        let sealed = keys
            .seal(&binding(&id), &plain)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if store
            .reseal(stored.team_id, &stored.sealed, &sealed, current)
            .await?
        {
            done += 1;
        }
    }
    Ok(done)
}

/// CoVibe cannot reach the ports of a VM that dials in (no `host`), so its preview is opened
/// where the operator exposes it.
fn reachable(host: &str, config: &PreviewConfig) -> Result<(), Error> {
    if host.is_empty() && config.public_url.is_empty() {
        return Err(ApiError::invalid(
            "this VM dials in, so CoVibe cannot reach its port: expose the app yourself and set publicUrl to its address",
        )
        .into());
    }
    Ok(())
}
