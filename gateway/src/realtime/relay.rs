//! The relay: every team event from the hot store's fan-out goes to the sockets of the team.
//! Each event is encoded once, as a frame every socket of the team is sent (an output line's
//! owner gets a copy with `canControl: true`, made when first needed). A team's presence
//! snapshots are coalesced over 50 ms: only the newest goes out.
//!
//! A socket whose send queue is full has fallen behind: it stops taking the team's live events, so
//! it costs the others nothing, and once its queue drains it is told to `resync` (rejoin with
//! `since`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use covibe_proto::events::v1 as ev;
use covibe_proto::prost::Message;
use covibe_storage::{FanoutEvent, Subscription};
use covibe_types::TeamId;

use crate::realtime::frames::{Prepared, Resync};
use crate::realtime::socket::SocketRef;
use crate::state::Gateway;

/// Team presence snapshots are coalesced per team over this long: only the newest goes out
/// (a burst of joins would otherwise send every member one snapshot per join).
const PRESENCE_EVERY: Duration = Duration::from_millis(50);

/// Relays the fan-out to the team rooms until the subscription ends.
pub async fn relay(gateway: Arc<Gateway>, mut subscription: Subscription) {
    let mut relay = Relay {
        gateway,
        presence: HashMap::new(),
        woken: Vec::new(),
    };
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = subscription.recv() => match event {
                Some(event) => relay.event(event),
                None => break,
            },
            _ = tick.tick(), if !relay.presence.is_empty() => {
                for (team, snapshot) in std::mem::take(&mut relay.presence) {
                    relay.send_to_team(team, &snapshot);
                }
            }
        }
        // What else is there already goes out with it: each socket is woken once for all of
        // it, and writes it in one go.
        while relay.woken.len() < WAKE_AFTER
            && let Some(event) = subscription.try_recv()
        {
            relay.event(event);
        }
        for socket in relay.woken.drain(..) {
            socket.flush();
        }
    }
    tracing::warn!("fan-out subscription ended");
}

/// Sockets queued for before they are woken, at most.
const WAKE_AFTER: usize = 4096;

struct Relay {
    gateway: Arc<Gateway>,
    /// Per team, the newest presence snapshot not sent yet.
    presence: HashMap<TeamId, Arc<Prepared>>,
    /// Sockets with frames queued and their writer not woken yet.
    woken: Vec<SocketRef>,
}

impl Relay {
    fn event(&mut self, event: FanoutEvent) {
        let gateway = &self.gateway;
        let bytes = match event {
            FanoutEvent::Message(bytes) => bytes,
            FanoutEvent::Gap => {
                // Events were missed (a hot-store outage, or this gateway fell behind the
                // fan-out): every socket leaves the live stream and resyncs from history.
                tracing::warn!("fan-out gap: every socket resyncs from history");
                let mut recovering = gateway.hub.lock();
                recovering.missed(Resync::FanoutGap);
                // Sockets out of the live stream already (resuming, or behind) are told once
                // they are done.
                for (socket, team) in gateway.rooms.all_live() {
                    fell_behind(gateway, socket, team, Resync::FanoutGap);
                }
                drop(recovering);
                return;
            }
        };
        let Ok(event) = ev::TeamEvent::decode(bytes) else {
            tracing::warn!("undecodable team event dropped");
            return;
        };
        let Ok(team) = event.team_id.parse::<TeamId>() else {
            return;
        };
        if !gateway.presence_seen.fresh(team, &event) {
            return;
        }
        let is_presence = matches!(event.event, Some(ev::team_event::Event::TeamPresence(_)));
        let Some(prepared) = Prepared::from_event(event) else {
            return;
        };
        let prepared = Arc::new(prepared);
        if is_presence {
            self.presence.insert(team, prepared);
        } else {
            self.send_to_team(team, &prepared);
        }
    }

    /// Queues one event on the live sockets of the team (and buffers it for those resuming).
    fn send_to_team(&mut self, team: TeamId, prepared: &Arc<Prepared>) {
        let gateway = &self.gateway;
        // Under the hub's lock, so a socket finishing its resume is either still buffering this
        // event or already live: never both, never neither.
        let mut recovering = gateway.hub.lock();
        recovering.buffer(team, prepared);
        let mut behind = Vec::new();
        let woken = &mut self.woken;
        gateway.rooms.each_live(team, |seat| {
            match prepared.queue(&seat.socket, &seat.joined) {
                Ok(true) => woken.push(seat.socket.clone()),
                Ok(false) => {}
                Err(why) => behind.push((seat.socket.clone(), why)),
            }
        });
        for (socket, why) in behind {
            fell_behind(gateway, socket, team, why);
        }
        drop(recovering);
    }
}

/// How long a socket may stay unable to take a single message before it is disconnected.
const LAGGING_GIVE_UP: Duration = Duration::from_secs(60);

/// Takes a socket that missed live events out of the live stream and, once it can take a
/// message again, tells it to resync (rejoin with `since`).
pub(crate) fn fell_behind(gateway: &Gateway, socket: SocketRef, team: TeamId, why: Resync) {
    if !socket.connected() {
        return;
    }
    gateway.rooms.set_live(team, socket.id, false);
    tracing::info!(sid = socket.id, team_id = %team, reason = why.reason(), "socket missed live events; it will be told to resync");
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LAGGING_GIVE_UP;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            if socket.emit("resync", &why.payload()).is_ok() {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, socket.wait_for_room()).await;
        }
        if socket.connected() {
            tracing::warn!(sid = socket.id, "socket stayed blocked; disconnecting it");
            socket.disconnect();
        }
    });
}
