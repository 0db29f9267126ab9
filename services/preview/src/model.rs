//! The preview service's domain types.

use covibe_types::TeamId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub team_id: TeamId,
    pub url: String,
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
    /// `false`: not a push (or a branch deletion), ignored.
    pub accepted: bool,
    /// This delivery was received before; nothing changed.
    pub duplicate: bool,
    pub preview: Option<Preview>,
}
