//! End to end, with real processes: the `covibe` binary (standalone, and one process per
//! service over PostgreSQL and Redis), the vm-agent it starts, the fake Claude Code script, real
//! HTTP and real Socket.io clients (Node's socket.io-client). One test binary: linking is the
//! slow part of a build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod approvals;
mod chat;
mod faults;
mod faults_postgres;
mod flood;
mod grpc_web;
mod hostile;
mod identity;
mod layering;
mod permissions;
mod preview_deploy;
mod realtime;
mod service_keys;
mod ssh;
mod support;
mod web_client;
mod webhook;
mod workshop;
