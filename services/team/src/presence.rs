//! Presence. A member has one hot-store entry per holder: a gateway replica speaks for the
//! member's sockets there (their status, the agents they watch) and repeats it while they stay;
//! a direct caller's entries share one fixed holder. The team sees the entries merged: `busy`
//! over `online` over `away` while any holder's entry is live, else `offline` (when the last of
//! a holder's devices goes, its entry makes way for the member's last-seen entry).
//!
//! Every hot-store call answers, atomically and versioned, the live entries and what it took
//! away, expired entries included (a dead gateway's, found by whichever call comes next). The
//! team is told (`TeamPresence`, with that version) when the merged view of anyone changed.

use std::collections::{HashMap, HashSet};

use covibe_storage::{PresenceEntry, PresenceSnapshot, PresenceWrite};
use covibe_types::{AgentId, ApiError, TeamId, UserId, now_ms};

use crate::Error;
use crate::chat::{Chat, is_client_chosen_id};
use crate::events;
use crate::model::{MemberPresence, OFFLINE_TTL, PresenceStatus, PresenceUpdate, TeamPresence};

/// The holder of a member's last-seen entry: no caller can name it (`~` is not allowed).
const SEEN: &str = "~seen";
/// The holder of callers who name none.
pub const DIRECT_HOLDER: &str = "api";
/// The most agents one holder says a member watches.
pub const MAX_WATCHING: usize = 32;

/// A holder as a caller names it: empty is [`DIRECT_HOLDER`].
pub(crate) fn clean_holder(holder: &str) -> Result<String, ApiError> {
    match holder {
        "" => Ok(DIRECT_HOLDER.to_owned()),
        holder if is_client_chosen_id(holder) => Ok(holder.to_owned()),
        _ => Err(ApiError::invalid(
            "holder must be 1 to 64 characters, each a letter, a digit, '_' or '-'",
        )),
    }
}

/// The agents a holder says a member watches: agent ids, at most [`MAX_WATCHING`]; sorted,
/// without duplicates.
pub(crate) fn clean_watching(ids: &[String]) -> Result<Vec<AgentId>, ApiError> {
    if ids.len() > MAX_WATCHING {
        return Err(ApiError::invalid(format!(
            "watching names at most {MAX_WATCHING} agents"
        )));
    }
    let mut watching = ids
        .iter()
        .map(|id| id.parse::<AgentId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::invalid("watching must list agent ids"))?;
    watching.sort();
    watching.dedup();
    Ok(watching)
}

fn hot_unavailable(err: covibe_storage::Error) -> ApiError {
    tracing::warn!(error = %err, "presence: hot store unavailable");
    ApiError::unavailable("presence is unavailable right now; try again")
}

/// Each member's entries merged: the highest-ranked status, the latest time, and every agent
/// watched through a live holder.
fn merge<'a>(
    entries: impl IntoIterator<Item = &'a PresenceEntry>,
) -> HashMap<UserId, MemberPresence> {
    let mut merged: HashMap<UserId, MemberPresence> = HashMap::new();
    for entry in entries {
        let Some(seen) = events::decode_presence_entry(entry.value.clone()) else {
            continue;
        };
        let member = merged.entry(entry.user).or_insert_with(|| MemberPresence {
            user_id: entry.user,
            display_name: seen.display_name.clone(),
            status: PresenceStatus::Offline,
            last_seen_ms: 0,
            watching: Vec::new(),
        });
        member.last_seen_ms = member.last_seen_ms.max(seen.last_seen_ms);
        if seen.status.rank() > member.status.rank() {
            member.status = seen.status;
        }
        if seen.status != PresenceStatus::Offline {
            member.watching.extend(seen.watching);
        }
    }
    for member in merged.values_mut() {
        member.watching.sort();
        member.watching.dedup();
    }
    merged
}

/// Whether anyone's status or watched agents differ (a member without entries is offline).
fn changed(
    before: &HashMap<UserId, MemberPresence>,
    after: &HashMap<UserId, MemberPresence>,
) -> bool {
    let view = |merged: &HashMap<UserId, MemberPresence>, user: &UserId| {
        merged
            .get(user)
            .map(|m| (m.status, m.watching.clone()))
            .unwrap_or((PresenceStatus::Offline, Vec::new()))
    };
    before
        .keys()
        .chain(after.keys())
        .any(|user| view(before, user) != view(after, user))
}

impl Chat {
    /// Sets the caller's presence as `update.holder` sees it and returns the team's. The team
    /// is told when anyone's merged presence changed: repeating an entry just keeps it alive.
    pub async fn update_presence(
        &self,
        user: UserId,
        team: TeamId,
        update: PresenceUpdate,
    ) -> Result<TeamPresence, Error> {
        let member = self.member_of(user, team).await?;
        let update = PresenceUpdate {
            holder: clean_holder(&update.holder)?,
            ..update
        };
        let status = match update.status {
            Some(status) => status,
            None => self.kept_status(team, user, &update.holder).await?,
        };
        let offline = status == PresenceStatus::Offline;
        let entry = MemberPresence {
            user_id: user,
            display_name: member.display_name,
            status,
            last_seen_ms: now_ms(),
            watching: if offline { Vec::new() } else { update.watching },
        };
        let write = if offline {
            // The holder's last device of the member went: its entry goes, and the member's
            // last-seen entry keeps when they were last there.
            PresenceWrite {
                user,
                holder: SEEN.to_owned(),
                value: events::presence_entry(&entry),
                ttl: OFFLINE_TTL,
                remove: Some(update.holder),
            }
        } else {
            PresenceWrite {
                user,
                holder: update.holder,
                value: events::presence_entry(&entry),
                ttl: self.presence_ttl,
                remove: None,
            }
        };
        let written: HashSet<(UserId, String)> = std::iter::once(write.holder.clone())
            .chain(write.remove.clone())
            .map(|holder| (user, holder))
            .collect();
        let snapshot = self
            .hot
            .set_presence(team, write)
            .await
            .map_err(hot_unavailable)?;
        self.settle(team, snapshot, &written).await
    }

    /// Every member of the caller's team with their presence.
    pub async fn presence(&self, user: UserId, team: TeamId) -> Result<TeamPresence, Error> {
        self.member_of(user, team).await?;
        let snapshot = self.hot.presence(team).await.map_err(hot_unavailable)?;
        self.settle(team, snapshot, &HashSet::new()).await
    }

    /// "Still here" from `holder`: its `away` or `busy` is kept, anything else is `online`.
    async fn kept_status(
        &self,
        team: TeamId,
        user: UserId,
        holder: &str,
    ) -> Result<PresenceStatus, Error> {
        let snapshot = self.hot.presence(team).await.map_err(hot_unavailable)?;
        let before = snapshot
            .entries
            .iter()
            .find(|e| e.user == user && e.holder == holder)
            .and_then(|e| events::decode_presence_entry(e.value.clone()))
            .map_or(PresenceStatus::Offline, |e| e.status);
        if snapshot.version != 0 {
            // The read pruned expired entries: the team may have to hear of it.
            self.settle(team, snapshot, &HashSet::new()).await?;
        }
        Ok(match before {
            PresenceStatus::Away | PresenceStatus::Busy => before,
            PresenceStatus::Online | PresenceStatus::Offline => PresenceStatus::Online,
        })
    }

    /// The team's presence after a hot-store call, published when the call changed anyone's
    /// merged presence. What the team saw before the call is the entries it did not touch
    /// (`written`: the ones it set or removed) and the ones it took away.
    async fn settle(
        &self,
        team: TeamId,
        snapshot: PresenceSnapshot,
        written: &HashSet<(UserId, String)>,
    ) -> Result<TeamPresence, Error> {
        let after = merge(&snapshot.entries);
        let before = merge(
            snapshot
                .entries
                .iter()
                .filter(|e| !written.contains(&(e.user, e.holder.clone())))
                .chain(&snapshot.gone),
        );
        let tell = snapshot.version != 0 && changed(&before, &after);
        let mut presence = self.roster(team, after).await?;
        presence.version = snapshot.version;
        if tell
            && let Err(err) = self
                .hot
                .publish(team, events::team_presence(&presence))
                .await
        {
            tracing::warn!(team_id = %team, error = %err, "could not publish presence");
        }
        Ok(presence)
    }

    /// Every member of the team, in the order they joined, with their merged presence.
    async fn roster(
        &self,
        team: TeamId,
        mut live: HashMap<UserId, MemberPresence>,
    ) -> Result<TeamPresence, Error> {
        let users = self
            .store
            .members(team)
            .await?
            .into_iter()
            .map(|m| match live.remove(&m.id) {
                Some(entry) => MemberPresence {
                    display_name: m.display_name,
                    ..entry
                },
                None => MemberPresence {
                    user_id: m.id,
                    display_name: m.display_name,
                    status: PresenceStatus::Offline,
                    last_seen_ms: 0,
                    watching: Vec::new(),
                },
            })
            .collect();
        Ok(TeamPresence {
            team_id: team,
            users,
            version: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(
        user: UserId,
        holder: &str,
        status: PresenceStatus,
        at: i64,
        watching: &[AgentId],
    ) -> PresenceEntry {
        PresenceEntry {
            user,
            holder: holder.to_owned(),
            value: events::presence_entry(&MemberPresence {
                user_id: user,
                display_name: "M".to_owned(),
                status,
                last_seen_ms: at,
                watching: watching.to_vec(),
            }),
        }
    }

    #[test]
    fn devices_merge_busy_over_online_over_away() {
        use PresenceStatus::{Away, Busy, Offline, Online};
        let (sarah, miguel, chen) = (UserId::new(), UserId::new(), UserId::new());
        let (a, b, c) = (AgentId::new(), AgentId::new(), AgentId::new());
        let mut sorted = [a, b, c];
        sorted.sort();
        let entries = [
            entry(sarah, "gw-1", Away, 10, &[b]),
            entry(sarah, "gw-2", Online, 30, &[a, b]),
            entry(sarah, SEEN, Offline, 50, &[]),
            entry(miguel, "gw-1", Busy, 5, &[c]),
            entry(miguel, "gw-2", Online, 7, &[]),
            entry(chen, SEEN, Offline, 99, &[]),
            PresenceEntry {
                user: chen,
                holder: "gw-1".to_owned(),
                value: Bytes::from_static(b"\xff not an entry"),
            },
        ];
        let merged = merge(&entries);
        let sarah = &merged[&sarah];
        assert_eq!(sarah.status, Online);
        assert_eq!(sarah.last_seen_ms, 50, "the latest of all entries");
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(sarah.watching, want, "sorted, once each");
        assert_eq!(merged[&miguel].status, Busy);
        assert_eq!(merged[&miguel].watching, vec![c]);
        assert_eq!(merged[&chen].status, Offline, "only a last-seen entry");
        assert_eq!(merged[&chen].last_seen_ms, 99);

        // Only status and watched agents are news, not the time.
        let later = merge(&[
            entry(miguel, "gw-1", Busy, 500, &[c]),
            entry(miguel, "gw-2", Online, 7, &[]),
        ]);
        let before = merge(&entries[3..5]);
        assert!(!changed(&before, &later));
        let watching_more = merge(&[entry(miguel, "gw-1", Busy, 5, &[a, c])]);
        assert!(changed(&before, &watching_more));
        assert!(changed(&before, &HashMap::new()), "gone is offline");
        assert!(
            !changed(&merge(&entries[5..6]), &HashMap::new()),
            "offline either way"
        );
    }

    #[test]
    fn holders_and_watching_are_checked() {
        assert_eq!(clean_holder("").ok().as_deref(), Some(DIRECT_HOLDER));
        assert_eq!(clean_holder("gw-1_a").ok().as_deref(), Some("gw-1_a"));
        for bad in [SEEN, "a/b", &"x".repeat(65)] {
            assert!(clean_holder(bad).is_err(), "{bad}");
        }
        let (a, b) = (AgentId::new(), AgentId::new());
        let got = clean_watching(&[b.to_string(), a.to_string(), b.to_string()]).ok();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(got, Some(want));
        assert!(clean_watching(&["nope".to_owned()]).is_err());
        let many: Vec<String> = (0..=MAX_WATCHING)
            .map(|_| AgentId::new().to_string())
            .collect();
        assert!(clean_watching(&many).is_err());
    }
}
