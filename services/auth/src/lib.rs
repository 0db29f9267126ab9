//! The auth service: sign-up, invite-code sign-in, access and refresh tokens
