//! Which sockets joined which team. A joined socket is *live* once it takes the team's events as
//! they come: not while it replays history, nor after it fell behind (until it rejoins).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use covibe_socketio::Sid;
use covibe_types::{TeamId, UserId};

use crate::realtime::socket::{Joined, SocketRef};

/// One joined socket.
pub(crate) struct Seat {
    pub(crate) socket: SocketRef,
    /// The socket's `SocketState::joined`, kept here too (both set by `join_team`) so the relay
    /// reads it for every event without locking each socket's state.
    pub(crate) joined: Joined,
    live: bool,
}

#[derive(Default)]
pub(crate) struct Rooms {
    teams: RwLock<HashMap<TeamId, Vec<Seat>>>,
}

impl Rooms {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<TeamId, Vec<Seat>>> {
        self.teams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TeamId, Vec<Seat>>> {
        self.teams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seats a socket that joined, not live yet; one that joins again keeps its seat, which
    /// takes the new `joined`.
    pub(crate) fn seat(&self, socket: &SocketRef, joined: &Joined) {
        let mut teams = self.write();
        // Checked under the lock: a socket that is gone has left already, or leaves after this.
        if !socket.connected() {
            return;
        }
        let seats = teams.entry(joined.team_id).or_default();
        match seats.iter_mut().find(|seat| seat.socket.id == socket.id) {
            Some(seat) => seat.joined = joined.clone(),
            None => seats.push(Seat {
                socket: socket.clone(),
                joined: joined.clone(),
                live: false,
            }),
        }
    }

    /// Starts or stops the team's live events to a seated socket.
    pub(crate) fn set_live(&self, team: TeamId, sid: Sid, live: bool) {
        if let Some(seat) = self
            .write()
            .get_mut(&team)
            .and_then(|seats| seats.iter_mut().find(|seat| seat.socket.id == sid))
        {
            seat.live = live;
        }
    }

    /// A socket left (it disconnected).
    pub(crate) fn leave(&self, team: TeamId, sid: Sid) {
        let mut teams = self.write();
        if let Some(seats) = teams.get_mut(&team) {
            seats.retain(|seat| seat.socket.id != sid);
            if seats.is_empty() {
                teams.remove(&team);
            }
        }
    }

    /// Calls `f` with each live seat of the team.
    pub(crate) fn each_live(&self, team: TeamId, mut f: impl FnMut(&Seat)) {
        if let Some(seats) = self.read().get(&team) {
            seats.iter().filter(|seat| seat.live).for_each(&mut f);
        }
    }

    /// Every live seat of every team (for when the fan-out itself lost events).
    pub(crate) fn all_live(&self) -> Vec<(SocketRef, TeamId)> {
        self.read()
            .iter()
            .flat_map(|(team, seats)| {
                seats
                    .iter()
                    .filter(|seat| seat.live)
                    .map(|seat| (seat.socket.clone(), *team))
            })
            .collect()
    }

    /// Every seated socket whose member `pred` accepts.
    pub(crate) fn seated_where(&self, pred: impl Fn(&Joined) -> bool) -> Vec<SocketRef> {
        self.read()
            .values()
            .flatten()
            .filter(|seat| pred(&seat.joined))
            .map(|seat| seat.socket.clone())
            .collect()
    }

    /// Every socket seated for this member.
    pub(crate) fn member_sockets(&self, team: TeamId, user: UserId) -> Vec<SocketRef> {
        self.read().get(&team).map_or_else(Vec::new, |seats| {
            seats
                .iter()
                .filter(|seat| seat.joined.user_id == user)
                .map(|seat| seat.socket.clone())
                .collect()
        })
    }
}
