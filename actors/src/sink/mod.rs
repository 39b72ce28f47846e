//! `LaravelSink`: delivers batches to Laravel over HTTP (awc), under the circuit breaker.
//!
//! One concern per file: `config` (the `[laravel]` settings), `request` (body, headers and
//! how an answer is read), `retry` (backoff), `narrowing` (how far a refused batch is split),
//! `actor` (the actor and its `Deliver` message).

mod actor;
mod config;
mod delivery;
mod failed_ids;
mod narrowing;
mod request;
mod retry;

pub use actor::{
    CORE_ACTOR_GONE_WAIT, Deliver, DeliveryOutcome, GetSinkStats, LaravelSink, Refused, SinkStats,
};
pub use config::SinkConfig;
pub use failed_ids::FailedIds;
pub use request::{
    AttemptResult, COMBINED_PATH, Contract, batch_body, classify, combined_body, lane_key,
    request_signature, signature,
};
pub use retry::backoff_delay;
