//! Supervision of the core actors (batch queue, Laravel sink, cache, breaker): each runs behind a
//! [`CoreAddr`], the address every holder sends through, and [`keep_running`] starts a fresh
//! actor in its place when it stops or panics (a panic in an actix handler ends the actor's task;
//! its mailbox closes with it). The new actor reads its state back where it keeps one (the batch
//! queue reads the outbox in Redis). Restarts are bounded per window: past the limit the actor
//! stays down, the liveness probe fails and the process exits for systemd to restart it.

use std::{
    collections::VecDeque,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{dev::ToEnvelope, fut::wrap_future, prelude::*};
use slog::{Logger, error, warn};
use tokio::sync::oneshot;

/// The pause before the second restart within a window; doubled for each one after it.
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(100);

/// The current address of a core actor; a restart replaces it for every holder at once.
pub struct CoreAddr<A: Actor> {
    /// Shared by every clone; written only by the supervisor.
    current: Arc<RwLock<Addr<A>>>,
}

impl<A: Actor> Clone for CoreAddr<A> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
        }
    }
}

impl<A: Actor<Context = Context<A>>> From<Addr<A>> for CoreAddr<A> {
    fn from(addr: Addr<A>) -> Self {
        Self {
            current: Arc::new(RwLock::new(addr)),
        }
    }
}

impl<A: Actor<Context = Context<A>>> CoreAddr<A> {
    /// The address of the running incarnation. Hold it (rather than this handle) where two
    /// messages must reach the same incarnation, e.g. items and then the `FlushOutbox` that
    /// confirms them: after a restart the old address answers `Closed`, never a false success.
    pub fn current(&self) -> Addr<A> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, addr: Addr<A>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// [`Addr::send`] to the running incarnation.
    pub fn send<M>(&self, message: M) -> Request<A, M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.current().send(message)
    }

    /// [`Addr::do_send`] to the running incarnation.
    pub fn do_send<M>(&self, message: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.current().do_send(message);
    }

    /// [`Addr::try_send`] to the running incarnation.
    pub fn try_send<M>(&self, message: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.current().try_send(message)
    }

    /// Whether the running incarnation is alive.
    pub fn connected(&self) -> bool {
        self.current().connected()
    }
}

/// How often a core actor may be restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartLimit {
    /// Restarts allowed within `window`; one more and the actor stays down.
    pub restarts: u32,
    /// The window.
    pub window: Duration,
}

/// Restarts of one core actor, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct RestartCount {
    /// Restarts so far.
    restarts: AtomicU64,
}

impl RestartCount {
    /// Restarts so far.
    pub fn get(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// Resolves when the actor it was attached to is gone (stopped, or dropped by a panic).
struct Lifeline(oneshot::Receiver<()>);

/// Starts the actor `build` makes, with a [`Lifeline`] tied to its context: the sender lives in
/// a future spawned there, dropped with the context however the actor ends.
fn start_watched<A, F>(build: &F) -> (Addr<A>, Lifeline)
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A,
{
    let (alive, gone) = oneshot::channel::<()>();
    let addr = A::create(|ctx| {
        ctx.spawn(wrap_future(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        }));
        build()
    });
    (addr, Lifeline(gone))
}

/// One supervised core actor: what [`keep_running`] needs to start it again.
pub struct Supervised<F> {
    /// For logs and metrics: `batch`, `sink`, `cache`, `breaker`.
    pub name: &'static str,
    /// Makes a fresh actor (its state read back, where it keeps one, in `started`).
    pub build: F,
    /// Told after each restart (e.g. the registry asks sessions to report their state again,
    /// covering what died in the old mailbox).
    pub after_restart: Box<dyn Fn()>,
    /// Restart bound.
    pub limit: RestartLimit,
    /// Counted here.
    pub count: Arc<RestartCount>,
}

impl<F> Supervised<F> {
    /// `build`, restarted within `limit`, counted in `count`, with nothing to tell after a
    /// restart.
    pub fn new(
        name: &'static str,
        build: F,
        limit: RestartLimit,
        count: &Arc<RestartCount>,
    ) -> Self {
        Self {
            name,
            build,
            after_restart: Box::new(|| {}),
            limit,
            count: Arc::clone(count),
        }
    }
}

/// Starts the actor and returns its [`CoreAddr`]; a task on the current arbiter starts a fresh
/// one whenever it ends, until `limit` restarts happened within one window.
pub fn keep_running<A, F>(supervised: Supervised<F>, log: Logger) -> CoreAddr<A>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + 'static,
{
    let (addr, mut lifeline) = start_watched(&supervised.build);
    let link = CoreAddr::from(addr);
    let watched = link.clone();
    actix_rt::spawn(async move {
        let Supervised {
            name,
            build,
            after_restart,
            limit,
            count,
        } = supervised;
        let mut recent: VecDeque<Instant> = VecDeque::new();
        loop {
            let _ = (&mut lifeline.0).await;
            // Core actors and this task share the arbiter's thread, so a panic's message is here.
            let cause = crate::crash::take_last_panic().unwrap_or_else(|| "stopped".into());
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|at| now.duration_since(*at) > limit.window)
            {
                recent.pop_front();
            }
            if recent.len() >= limit.restarts as usize {
                error!(log, "A core actor keeps stopping; leaving it down for the process to exit.";
                    "actor" => name, "cause" => &cause, "restarts" => recent.len(), "window" => ?limit.window);
                return;
            }
            // A pause growing with the restarts in the window (none for the first): an actor
            // that dies as it starts does not use up its restarts at once.
            if let Some(shift) = recent.len().checked_sub(1) {
                let pause = FIRST_RESTART_PAUSE * 2_u32.saturating_pow(shift.min(8) as u32);
                actix_rt::time::sleep(pause).await;
            }
            recent.push_back(Instant::now());
            count.restarts.fetch_add(1, Ordering::Relaxed);
            let (addr, next) = start_watched(&build);
            watched.replace(addr);
            lifeline = next;
            warn!(log, "A core actor stopped; started a fresh one in its place.";
                "actor" => name, "cause" => &cause, "restarts" => count.get());
            after_restart();
        }
    });
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        seen: u32,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Bump;

    impl Handler<Bump> for Counter {
        type Result = u32;

        fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> u32 {
            self.seen += 1;
            self.seen
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for Counter {
        type Result = ();

        fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
            panic!("on purpose");
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Quit;

    impl Handler<Quit> for Counter {
        type Result = ();

        fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    fn supervised(
        limit: u32,
        count: &Arc<RestartCount>,
    ) -> Supervised<impl Fn() -> Counter + use<>> {
        let limit = RestartLimit {
            restarts: limit,
            window: Duration::from_secs(60),
        };
        Supervised::new("counter", || Counter { seen: 0 }, limit, count)
    }

    async fn answered(link: &CoreAddr<Counter>) -> Option<u32> {
        for _ in 0..100 {
            if let Ok(seen) = link.send(Bump).await {
                return Some(seen);
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    #[actix_rt::test]
    async fn a_stopped_or_panicked_actor_is_replaced_until_the_limit() {
        let log = Logger::root(slog::Discard, slog::o!());
        let count = Arc::new(RestartCount::default());
        let link = keep_running(supervised(2, &count), log);
        assert_eq!(link.send(Bump).await.ok(), Some(1));
        assert_eq!(link.send(Bump).await.ok(), Some(2));
        let before = link.current();

        link.do_send(Quit);
        assert_eq!(answered(&link).await, Some(1), "a fresh actor, fresh state");
        assert_eq!(count.get(), 1);
        assert!(!before.connected(), "the old incarnation stays closed");

        // Two at once: the second, still queued when the first unwinds, is never handled
        // (a panic while panicking would abort the process).
        link.do_send(Crash);
        link.do_send(Crash);
        assert_eq!(answered(&link).await, Some(1), "a panic is survived too");
        assert_eq!(count.get(), 2);

        link.do_send(Quit);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert!(!link.connected(), "past the limit it stays down");
        assert_eq!(count.get(), 2);
    }
}
