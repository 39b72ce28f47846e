//! Handing a session's last event (its final status) to the batch queue so that it survives a
//! restart of the queue: the item and the `FlushOutbox` that confirms it go to one incarnation,
//! and when that incarnation dies first, both go again to the one that replaced it. Nothing else
//! would bring the event back: the session is gone, so it cannot report again.

use std::time::Duration;

use actix::prelude::*;

use super::{BatchActor, FlushOutbox};
use crate::supervision::CoreAddr;

/// Tries before giving up (a queue past its restart limit stays down; the process then exits).
const ATTEMPTS: u32 = 20;

/// Between two tries: a restart is immediate, so a short pause suffices.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long the outbox write is awaited. A live queue that is slow to write (Redis down) holds
/// the item already; only a queue that died is tried again.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Hands `item` to the batch queue, again after a restart; whether a live queue took it.
pub async fn hand_over<M>(batch: &CoreAddr<BatchActor>, item: M) -> bool
where
    M: Message<Result = ()> + Clone + Send + 'static,
    BatchActor: Handler<M>,
{
    for _ in 0..ATTEMPTS {
        let incarnation = batch.current();
        if incarnation.send::<M>(item.clone()).await.is_ok() {
            match actix_rt::time::timeout(FLUSH_WAIT, incarnation.send::<FlushOutbox>(FlushOutbox))
                .await
            {
                Ok(Ok(Ok(()))) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        actix_rt::time::sleep(RETRY_PAUSE).await;
    }
    false
}
