//! wasup's actor pipeline: no HTTP server, no config loading, just the actors and their messages.
//!
//! # Layout
//!
//! ```text
//! SessionRegistry ─starts/stops/restarts─> SessionActor (one per session, drives an Engine)
//!                                               │ QrCode / StatusChanged (try_send, held while full)
//!                                               v
//!                                          BatchActor (two lanes, per-session coalescing)
//!                                               │ Deliver { lane, items } → DeliveryOutcome
//!                                               v
//!                                          LaravelSink ──HTTP──> Laravel
//!                                               │ AcquirePermit / RecordOutcome
//!                                               v
//!                                          CircuitBreaker
//! ```
//!
//! - [`registry`]: `SessionRegistry` — receives start/stop/list/inspect/simulate/sweep commands
//!   and each session's state changes, deaths and endings.
//! - [`session`]: `SessionActor` — receives engine events, `Inspect`, `Simulate`, `StopSession`;
//!   tells the batch actor and the registry.
//! - [`batch`]: `BatchActor` — receives `QrCode`, `StatusChanged`, `Drain`; tells the sink.
//! - [`sink`]: `LaravelSink` — receives `Deliver`; asks and tells the breaker.
//! - [`breaker`]: `CircuitBreaker` — receives `AcquirePermit`, `RecordOutcome`.
//! - [`engine`]: the `Engine` trait sessions drive; implementations live in the service crate.
//! - [`supervision`]: `CoreAddr`, the address of a core actor every holder sends through, and
//!   `keep_running`, which starts a fresh batch queue, sink, cache or breaker when one dies.

pub mod batch;
pub mod breaker;
pub mod cache;
pub mod crash;
pub mod dispatch;
pub mod engine;
pub mod halt;
pub mod messages;
pub mod qr_image;
pub mod registry;
pub mod session;
pub mod sink;
pub mod store;
pub mod supervision;
