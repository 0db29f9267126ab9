//! The preview service: the team's shared preview deployment
