//! wasup's actor pipeline: no HTTP server, no config loading, just the actors and their messages.
//!
//! # Layout
//!
//! ```text
//! MessageDispatcher ─outgoing texts─┐
//!                                   v
//! SessionRegistry ─starts/stops/restarts─> SessionActor (one per session, drives an Engine)
//!                                               │ │ QR, status, connection, info
//!                                               │ └──────────────> CacheActor (Redis TTL cache)
//!                                               │ QrCode / StatusChanged / incoming messages
//!                                               v (try_send, held while full)
//!                                          BatchActor (qr, status and message lanes, coalesced
//!                                               │      per session, deadline batching, outbox)
//!                                               │ Deliver { items } → DeliveryOutcome
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
//!   tells the batch actor, the cache and the registry.
//! - [`batch`]: `BatchActor` — receives `QrCode`, `StatusChanged`, incoming messages, `Drain`;
//!   keeps the durable outbox and tells the sink.
//! - [`sink`]: `LaravelSink` — receives `Deliver`; asks and tells the breaker.
//! - [`breaker`]: `CircuitBreaker` — receives `AcquirePermit`, `RecordOutcome`.
//! - [`cache`]: `CacheActor` — the Redis TTL cache of each session's QR, status, connection and
//!   info, the QR dedupe memory and the three-tier `is_session_active` check.
//! - [`dispatch`]: `MessageDispatcher` — the bounded, durable queue of outgoing text messages.
//! - [`store`]: Redis itself: the pool, key names and the write journal the others persist through.
//! - [`engine`]: the `Engine` trait sessions drive; implementations live in the service crate.
//! - [`messages`]: the events and items that cross actors (what Laravel finally receives).
//! - [`qr_image`]: a QR string rendered once as PNG bytes, shown as the data URL Laravel stores.
//! - [`crash`]: the `DeathNotice` that tells the registry a session actor panicked.
//! - [`halt`]: the test hook that stops or panics a core actor to prove the supervisor.
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
