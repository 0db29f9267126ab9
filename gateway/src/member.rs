//! The member a request or a socket acts for, as their access token names them.

use covibe_types::{SessionId, TeamId, UserId};

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) user_id: UserId,
    pub(crate) team_id: TeamId,
    /// The sign-in session the token belongs to.
    pub(crate) session_id: SessionId,
    /// The access token, passed on to the services, which check it themselves.
    pub(crate) token: String,
}
