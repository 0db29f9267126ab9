//! The vm-connector's tests, one binary: the store on both databases, the dial-in strategy
//! over real gRPC, and the SSH proxy against a real `sshd`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dial_in;
mod ssh;
mod store;
mod support;
