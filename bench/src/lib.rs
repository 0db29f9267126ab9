//! `covibe-bench`: a load generator that runs the same scenarios against CoVibe and against the
//! seed's own stack (Node + Socket.io + Redis) and reports them side by side. See BENCHMARKS.md.
//!
//! - [`sio`]: a minimal Socket.io client (the viewers), the same against both servers.
//! - [`marker`]: the send-time stamp every synthetic output line carries.
//! - [`procstat`]: CPU and memory of the server processes, from `/proc`.
//! - [`stacks`]: starting the seed, CoVibe standalone and CoVibe multi-process here.
//! - [`target`]: tokens and agents, the two servers' ways.
//! - [`scenario`]: fanout, idle, replay, spawn.
//! - [`ceiling`]: the highest fan-out rate that holds p99 ≤ 50 ms with nothing lost.
//! - [`run`]: every scenario against every stack, and the comparison.

pub mod ceiling;
pub mod marker;
pub mod procstat;
pub mod run;
pub mod scenario;
pub mod sio;
pub mod stacks;
pub mod target;
