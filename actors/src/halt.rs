//! [`Halt`]: stops a core actor (batch queue, Laravel sink, cache, breaker) on purpose, or makes
//! it panic. A test hook of the simulated engine (`POST /simulate/halt`), to prove that the
//! supervisor starts a fresh actor in its place (and, past its restart limit, that the liveness
//! probe ends the process for systemd to restart), rather than leaving a process that answers
//! and delivers nothing.

use actix::prelude::*;

use crate::{batch::BatchActor, breaker::CircuitBreaker, cache::CacheActor, sink::LaravelSink};

/// Stop now, as a crashed actor would; with `panic`, by panicking in the handler.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Halt {
    /// Panic rather than stop.
    pub panic: bool,
}

macro_rules! halts {
    ($($actor:ty),+) => {$(
        impl Handler<Halt> for $actor {
            type Result = ();

            fn handle(&mut self, halt: Halt, ctx: &mut Context<Self>) {
                if halt.panic {
                    panic!("halted on purpose (POST /simulate/halt)");
                }
                ctx.stop();
            }
        }
    )+};
}

halts!(BatchActor, LaravelSink, CacheActor, CircuitBreaker);
