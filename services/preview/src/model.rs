//! The preview service's domain types.

use covibe_types::TeamId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub team_id: TeamId,
    /// Where members open it: the gateway's `/preview/TEAM/`, or the configured public URL.
    pub url: String,
    /// Where the running app listens (`host:port`), for the gateway's proxy; empty until live.
    pub upstream: String,
    pub commit: String,
    pub status: String,
    pub updated_at_ms: i64,
}

/// One verified push delivery, to record once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDelivery {
    pub delivery_id: String,
    pub team_id: TeamId,
    pub commit: String,
    pub received_at_ms: i64,
}

/// A webhook delivery as the gateway forwards it, unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The team named in the webhook URL, unparsed until the signature is checked.
    pub team_id: String,
    pub delivery_id: String,
    pub signature_256: String,
    pub event: String,
    pub body: Vec<u8>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// `false`: not a push (or a branch deletion, or another repository or branch), ignored.
    pub accepted: bool,
    /// Why a signed delivery was ignored.
    pub ignored: String,
    /// This delivery was received before; nothing changed.
    pub duplicate: bool,
    pub preview: Option<Preview>,
}

/// How a team's preview is built and run (owners and admins set it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviewConfig {
    /// A clone URL or path, or GitHub's `owner/name`: pushes count only from this repository.
    pub repository: String,
    /// Only pushes to this branch deploy.
    pub branch: String,
    /// Empty: the configuring member's default VM.
    pub vm_id: String,
    pub work_dir: String,
    pub build_command: String,
    pub start_command: String,
    pub port: u16,
    /// `/` when empty.
    pub health_path: String,
    /// Where an operator's own ingress serves the preview; empty: the gateway's path.
    pub public_url: String,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

/// A team's webhook secret as stored: sealed (see `covibe_identity::vault`), never plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub team_id: TeamId,
    pub key_version: u32,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("team_id", &self.team_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// The team's grant to run deploys on its preview VM (sealed, never plaintext at rest).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub team_id: TeamId,
    pub vm_id: String,
    /// Where the preview VM's services are reached.
    pub host: String,
    pub key_version: u32,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for StoredGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredGrant")
            .field("team_id", &self.team_id)
            .field("vm_id", &self.vm_id)
            .finish_non_exhaustive()
    }
}

/// One deploy of the team's preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub team_id: TeamId,
    pub commit: String,
    /// `push` or `manual`.
    pub trigger: String,
    pub requested_by: String,
    /// `queued`, `running`, `live`, `failed` or `replaced`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub log_tail: String,
}
