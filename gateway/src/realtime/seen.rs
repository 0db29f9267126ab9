//! The newest presence snapshot relayed per team.

use std::collections::HashMap;
use std::sync::Mutex;

use covibe_proto::events::v1 as ev;
use covibe_types::TeamId;

/// The newest presence snapshot version relayed per team: two members' concurrent updates can
/// be published out of order, and an older snapshot must not overwrite a newer one.
#[derive(Debug, Default)]
pub(crate) struct PresenceSeen(Mutex<HashMap<TeamId, u64>>);

impl PresenceSeen {
    /// Whether `event` should be relayed: anything but a presence snapshot, or a snapshot newer
    /// than every one relayed for its team so far (which it then becomes).
    pub(crate) fn fresh(&self, team: TeamId, event: &ev::TeamEvent) -> bool {
        let Some(ev::team_event::Event::TeamPresence(presence)) = &event.event else {
            return true;
        };
        if presence.version == 0 {
            return true;
        }
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newest = seen.entry(team).or_insert(0);
        if presence.version <= *newest {
            tracing::debug!(team_id = %team, version = presence.version, "older presence snapshot dropped");
            return false;
        }
        *newest = presence.version;
        true
    }
}
