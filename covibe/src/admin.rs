//! `covibe admin ...`: what an operator does on the server, with the service's own files and
//! database (no running mesh needed): rotate and retire token signing keys, services' own keys
//! and the master key that seals members' VM credentials, and make a one-time recovery code for
//! a member who has no signed-in device left (the last owner included).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use covibe_config::Config;
use covibe_identity::KeyFiles;
use covibe_preview::PreviewStore;
use covibe_vm_connector::VmStore;

#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Adds a token signing key: tokens are signed with it from now on, those of the keys
    /// before it verify until they are retired. Creates the first key on a new set-up.
    RotateSigningKey {
        #[command(flatten)]
        common: crate::options::Common,
        /// Only create the first key: do nothing when a signing key exists (for set-up
        /// scripts that run at every start).
        #[arg(long)]
        if_missing: bool,
    },
    /// Removes verifying keys: the one named, or every one but the current signing key's.
    /// Tokens they signed are refused from then on (wait an access token's lifetime first).
    RetireSigningKey {
        #[command(flatten)]
        common: crate::options::Common,
        /// The key id (`kid`) to retire.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Gives a service a key of its own, for where the signing key is not mounted: it signs
    /// only that service's service tokens (e.g. the orchestrator reading team policies). Writes
    /// the private key (to `--out`, else `auth.service_key_file`) and adds its public half to
    /// the verifying keys, labelled `service: NAME`.
    AddServiceKey {
        #[command(flatten)]
        common: crate::options::Common,
        /// The service it signs for, e.g. `orchestrator`.
        name: String,
        /// Where to write the private key (COVIBE_AUTH__SERVICE_KEY_FILE by default).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing private key file (its public half stays until retired).
        #[arg(long)]
        force: bool,
    },
    /// Removes a service's own keys from the verifying keys: the one named, or all of them.
    /// Tokens they signed are refused from then on.
    RetireServiceKey {
        #[command(flatten)]
        common: crate::options::Common,
        /// The service, e.g. `orchestrator`.
        name: String,
        /// The key id (`kid`) to retire.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Adds a master key version (creates the first on a new set-up), then re-encrypts every
    /// VM credential and webhook secret under it. Safe to interrupt and run again: a rerun adds no version while
    /// credentials remain on older ones, and finishes their re-encryption.
    RotateMasterKey {
        #[command(flatten)]
        common: crate::options::Common,
        /// Only create the first key: do nothing when the key file exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// Retires master key versions below `--below`: credentials they sealed no longer open.
    /// Refused while a credential still uses one (run `rotate-master-key` first).
    RetireMasterKey {
        #[command(flatten)]
        common: crate::options::Common,
        #[arg(long)]
        below: u32,
    },
    /// Prints a one-time recovery code for a member (valid for a day): they redeem it at
    /// `POST /api/auth/device/redeem` on a new device.
    RecoveryCode {
        #[command(flatten)]
        common: crate::options::Common,
        /// The team's id.
        #[arg(long)]
        team: String,
        /// The member's email.
        #[arg(long)]
        email: String,
    },
}

fn key_files(config: &Config) -> KeyFiles {
    KeyFiles {
        signing: config.signing_key_file(),
        verifying: config.verifying_key_file(),
    }
}

pub async fn run(admin: Admin) -> anyhow::Result<()> {
    match admin {
        Admin::RotateSigningKey { common, if_missing } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let files = key_files(&config);
            if if_missing && files.signing.exists() {
                println!(
                    "a signing key exists ({}): nothing to do",
                    files.signing.display()
                );
                return Ok(());
            }
            let kid = covibe_identity::rotate(&files).context("rotating the signing key")?;
            println!(
                "new signing key {kid}: signing from now on ({}); verifying keys in {}",
                files.signing.display(),
                files.verifying.display()
            );
        }
        Admin::RetireSigningKey { common, kid } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let retired = covibe_identity::retire(&key_files(&config), kid.as_deref())
                .context("retiring signing keys")?;
            if retired.is_empty() {
                println!("no key to retire");
            }
            for kid in retired {
                println!("retired {kid}: its tokens are refused from now on");
            }
        }
        Admin::AddServiceKey {
            common,
            name,
            out,
            force,
        } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let path = out.or_else(|| config.auth.service_key_file.clone()).context(
                "where should the key go? pass --out or set auth.service_key_file (COVIBE_AUTH__SERVICE_KEY_FILE)",
            )?;
            let verifying = config.verifying_key_file();
            let kid = covibe_identity::add_service_key(&verifying, &path, &name, force)
                .with_context(|| format!("adding a service key for {name}"))?;
            println!(
                "new service key {kid} for {name}: private key in {} (give it to {name} alone, as auth.service_key_file); public key added to {} as `service: {name}` (give the file to every component)",
                path.display(),
                verifying.display()
            );
        }
        Admin::RetireServiceKey { common, name, kid } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let retired = covibe_identity::retire_service_key(
                &config.verifying_key_file(),
                &name,
                kid.as_deref(),
            )
            .with_context(|| format!("retiring the service keys of {name}"))?;
            for kid in retired {
                println!("retired {kid} of {name}: its tokens are refused from now on");
            }
        }
        Admin::RotateMasterKey { common, if_missing } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let path = config.master_key_file();
            if if_missing && path.exists() {
                println!("a master key exists ({}): nothing to do", path.display());
                return Ok(());
            }
            let (store, previews) = sealed_stores(&config).await?;
            let vault = covibe_identity::vault::Vault::new(&path);
            // Rerun after an interruption: finish the version already added, add none.
            let pending = match vault.keys() {
                Ok(keys) => {
                    store.credentials_below(keys.current()).await?.len()
                        + previews.secrets_below(keys.current()).await?.len()
                }
                Err(_) => 0,
            };
            if pending == 0 || !path.exists() {
                let version = covibe_identity::vault::rotate(&path)
                    .with_context(|| format!("adding a master key to {}", path.display()))?;
                println!("master key version {version} added ({})", path.display());
            } else {
                println!("{pending} credentials are still on older versions: finishing them");
            }
            let done = covibe_vm_connector::reseal_credentials(&store, &vault)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{done} VM credentials re-encrypted under the newest version");
            let done = covibe_preview::reseal_secrets(&previews, &vault)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{done} webhook secrets re-encrypted under the newest version");
        }
        Admin::RetireMasterKey { common, below } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let (store, previews) = sealed_stores(&config).await?;
            let left = store.credentials_below(below).await?.len()
                + previews.secrets_below(below).await?.len();
            if left > 0 {
                anyhow::bail!(
                    "{left} sealed secrets still use a version below {below}: run `covibe admin rotate-master-key` first"
                );
            }
            let retired = covibe_identity::vault::retire(&config.master_key_file(), below)
                .context("retiring master key versions")?;
            if retired.is_empty() {
                println!("no version to retire");
            }
            for version in retired {
                println!("retired master key version {version}");
            }
        }
        Admin::RecoveryCode {
            common,
            team,
            email,
        } => {
            let Some(config) = crate::options::load(&common)? else {
                return Ok(());
            };
            let team: covibe_types::TeamId = team.parse().context("--team is not a team id")?;
            let db = covibe_storage::connect(&config.database_url())
                .await
                .context("connecting to the database")?;
            let teams = covibe_team::SeaTeamStore::new(db.clone())
                .await
                .context("team storage")?;
            let member = covibe_team::TeamStore::find_member_by_email(
                &teams,
                team,
                &email.trim().to_lowercase(),
            )
            .await
            .context("looking up the member")?
            .with_context(|| format!("team {team} has no member {email}"))?;
            let sessions: Arc<dyn covibe_auth::SessionStore> = Arc::new(
                covibe_auth::SeaSessionStore::new(db)
                    .await
                    .context("auth storage")?,
            );
            let (code, expires_at_ms) = covibe_auth::create_code(
                &*sessions,
                covibe_auth::CodeKind::Recovery,
                member.id,
                team,
                None,
            )
            .await
            .map_err(|err| anyhow::anyhow!("{}", covibe_types::ApiError::from(err)))?;
            tracing::info!(target: "audit", user_id = %member.id, "recovery code made by an operator");
            println!(
                "recovery code for {} ({}): {code}\nvalid once, until {} (ms since the epoch); redeem it at POST /api/auth/device/redeem",
                member.display_name, member.email, expires_at_ms
            );
        }
    }
    Ok(())
}

/// The stores holding sealed secrets: members' VM credentials and teams' webhook secrets.
async fn sealed_stores(
    config: &Config,
) -> anyhow::Result<(
    covibe_vm_connector::SeaVmStore,
    covibe_preview::SeaPreviewStore,
)> {
    let db = covibe_storage::connect(&config.database_url())
        .await
        .context("connecting to the database")?;
    let vms = covibe_vm_connector::SeaVmStore::new(db.clone())
        .await
        .context("vm-connector storage")?;
    let previews = covibe_preview::SeaPreviewStore::new(db)
        .await
        .context("preview storage")?;
    Ok((vms, previews))
}
