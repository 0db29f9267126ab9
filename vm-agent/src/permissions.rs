//! Tool requests the agent waits on. Each is sent up the link once per link session, so again
//! after every reconnect, until it is answered, cancelled by the agent, or the agent ends. At
//! most [`MAX_PENDING`] wait at once.

use std::collections::VecDeque;

use covibe_proto::vmagent::v1::PermissionRequest;
use tokio::sync::watch;

/// Tool requests waiting for an answer, at most, per agent.
pub(crate) const MAX_PENDING: usize = 64;

/// Why a request was not added.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`MAX_PENDING`] requests wait already.
    Full,
    /// A request with this id waits already.
    Duplicate,
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Oldest first, each with its number (increasing, never reused).
    requests: VecDeque<(u64, PermissionRequest)>,
    next_number: u64,
}

impl Pending {
    /// The next request a link session has not sent yet; `sent` (0 for a new session) moves
    /// past it.
    pub(crate) fn next(&self, sent: &mut u64) -> Option<PermissionRequest> {
        let (number, request) = self.requests.iter().find(|(number, _)| *number >= *sent)?;
        *sent = number + 1;
        Some(request.clone())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Permissions {
    tx: watch::Sender<Pending>,
}

impl Permissions {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::Sender::new(Pending::default()),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Pending> {
        self.tx.subscribe()
    }

    pub(crate) fn add(&self, request: PermissionRequest) -> Result<(), Refused> {
        let mut result = Ok(());
        self.tx.send_if_modified(|pending| {
            if pending
                .requests
                .iter()
                .any(|(_, r)| r.request_id == request.request_id)
            {
                result = Err(Refused::Duplicate);
                return false;
            }
            if pending.requests.len() >= MAX_PENDING {
                result = Err(Refused::Full);
                return false;
            }
            pending.requests.push_back((pending.next_number, request));
            pending.next_number += 1;
            true
        });
        result
    }

    /// Removes the request `request_id` (answered or cancelled) and returns it.
    pub(crate) fn take(&self, request_id: &str) -> Option<PermissionRequest> {
        let mut taken = None;
        self.tx.send_if_modified(|pending| {
            let index = pending
                .requests
                .iter()
                .position(|(_, r)| r.request_id == request_id);
            taken = index.and_then(|index| pending.requests.remove(index));
            false
        });
        taken.map(|(_, request)| request)
    }

    /// Forgets every request: the agent has ended and answers nothing any more.
    pub(crate) fn clear(&self) {
        self.tx.send_if_modified(|pending| {
            pending.requests.clear();
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> PermissionRequest {
        PermissionRequest {
            request_id: id.to_owned(),
            tool: "Bash".to_owned(),
            ..Default::default()
        }
    }

    fn unsent(permissions: &Permissions, sent: &mut u64) -> Vec<String> {
        let pending = permissions.subscribe();
        let pending = pending.borrow();
        std::iter::from_fn(|| pending.next(sent))
            .map(|r| r.request_id)
            .collect()
    }

    #[test]
    fn requests_wait_until_answered_and_each_session_sends_them_once() {
        let permissions = Permissions::new();
        assert_eq!(permissions.add(request("a")), Ok(()));
        assert_eq!(permissions.add(request("b")), Ok(()));
        assert_eq!(permissions.add(request("a")), Err(Refused::Duplicate));
        let mut session = 0;
        assert_eq!(unsent(&permissions, &mut session), ["a", "b"]);
        assert!(unsent(&permissions, &mut session).is_empty());
        assert_eq!(permissions.add(request("c")), Ok(()));
        assert_eq!(unsent(&permissions, &mut session), ["c"]);

        // Answered ones are gone; a new session sends the others again.
        assert_eq!(
            permissions.take("b").map(|r| r.request_id),
            Some("b".into())
        );
        assert_eq!(permissions.take("b"), None);
        assert_eq!(unsent(&permissions, &mut 0), ["a", "c"]);

        for n in 2..MAX_PENDING {
            assert_eq!(permissions.add(request(&n.to_string())), Ok(()));
        }
        assert_eq!(permissions.add(request("full")), Err(Refused::Full));
        permissions.clear();
        assert!(unsent(&permissions, &mut 0).is_empty());
    }
}
