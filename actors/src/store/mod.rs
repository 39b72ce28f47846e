//! Redis: the pool (standalone, Sentinel, Cluster), key names, and the write journal that makes
//! the outbox and the session registry durable with one round trip per burst of changes.

mod config;
mod journal;
mod keys;
mod pool;
mod repeat_gate;
mod value;

pub use config::{RedisConfig, RedisMode};
pub use journal::{
    HashJournal, JournalOp, PersistQueue, WriteDelays, WriteOutcome, drive_writes, next_seq,
    split_stored,
};
pub use keys::Keys;
pub use pool::{RedisHealth, RedisHealthSnapshot, RedisPool, StoreError};
pub use repeat_gate::{REPEAT_LOG_EVERY, RepeatGate, say_not_readable_yet};
pub use value::{LazyJson, StoredValue};
