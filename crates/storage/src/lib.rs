//! Storage shared by the services: opening the database (PostgreSQL or SQLite, through SeaORM)
//! and the hot store (per-agent output ring buffers and team fan-out, in Redis or in-process).
//! Each service owns its tables and migrations; this crate owns only the plumbing.

pub mod audit;
mod db;
pub mod hot;

pub use audit::{AuditEntry, AuditLog, AuditRecord};
pub use db::{Backend, connect, db_unavailable, migrate, parse_stored, text_column};
pub use hot::{
    FanoutEvent, HotChunk, HotStore, MemoryHotStore, PresenceEntry, PresenceSnapshot,
    PresenceWrite, RING_MAX_BYTES, RING_TTL, RedisHotStore, Subscription,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("storage: {0}")]
    Other(String),
}
