//! Test support, used only from tests: throwaway databases on the machine's PostgreSQL, unique
//! Redis prefixes, child processes whose output is watched, the Node Socket.io client, a
//! real `sshd` on a loopback port, a PostgreSQL server of a test's own to restart, and a TCP
//! proxy that injects faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db;
pub mod fuzz;
mod node;
mod pg_server;
mod process;
mod proxy;
pub mod sshd;

pub use db::{PG_ADMIN_URL, REDIS_URL, TestDb, redis_url, unique_prefix};
pub use node::{SioClient, Tally, ensure_node_modules, js_dir};
pub use pg_server::{PgServer, PgStop};
pub use process::{
    Proc, RedisServer, clean_command, fake_agent_command, free_port, workspace_root,
};
pub use proxy::{FaultProxy, ProxyStats};
pub use sshd::SshServer;
