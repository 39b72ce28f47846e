//! [`Halt`]: stops a core actor (batch queue, Laravel sink, cache, breaker) on purpose. A test
//! hook of the simulated engine (`POST /simulate/halt`), to prove that a stopped core actor is
//! noticed by the liveness probe and ends the process for its supervisor to restart, rather than
//! leaving a process that answers and delivers nothing.

use actix::prelude::*;

use crate::{batch::BatchActor, breaker::CircuitBreaker, cache::CacheActor, sink::LaravelSink};

/// Stop now, as a crashed actor would.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Halt;

macro_rules! halts {
    ($($actor:ty),+) => {$(
        impl Handler<Halt> for $actor {
            type Result = ();

            fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
    )+};
}

halts!(BatchActor, LaravelSink, CacheActor, CircuitBreaker);
