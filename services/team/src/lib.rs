//! The team service: teams, members and invite codes
