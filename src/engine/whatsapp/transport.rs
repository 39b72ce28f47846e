//! A `TransportFactory` around the library's WebSocket transport that tells the session when
//! WhatsApp cannot be reached. Offline, whatsapp-rust emits no event (it logs and backs off), so
//! this wrapper is what turns "DNS failed / connection refused / timed out" (and a link that
//! closes before WhatsApp answered) into `error` with the reason and the time of the library's
//! next attempt.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc::UnboundedSender;
use wasup_actors::engine::EngineEvent;
use whatsapp_rust::{
    async_channel, async_trait,
    transport::{Transport, TransportEvent, TransportFactory},
};

/// Transport events waiting for the library's read loop (the relay waits when it is full).
const RELAY_CAPACITY: usize = 256;

/// The library's reconnect schedule (WA Web's): Fibonacci from 1 s, capped at 15 min, ±10 %.
const LIBRARY_BACKOFF_CAP: Duration = Duration::from_secs(900);

/// Wraps a transport factory; reports each failed attempt and counts consecutive failures.
pub struct ReportingTransportFactory<F> {
    /// The real transport.
    inner: F,
    /// Gives up on one attempt after this long (the library's own limit is 20 s).
    connect_timeout: Duration,
    /// Failed attempts since the last successful one.
    failures: Arc<AtomicU32>,
    /// Set by the event handler once WhatsApp answered on the current link (QR or login).
    established: Arc<AtomicBool>,
    /// Towards the session.
    events: UnboundedSender<EngineEvent>,
}

impl<F> ReportingTransportFactory<F> {
    /// Wraps `inner`.
    pub fn new(
        inner: F,
        connect_timeout: Duration,
        established: Arc<AtomicBool>,
        events: UnboundedSender<EngineEvent>,
    ) -> Self {
        Self {
            inner,
            connect_timeout,
            failures: Arc::new(AtomicU32::new(0)),
            established,
            events,
        }
    }
}

/// Tells the session an attempt failed; the library retries after its backoff.
fn report_failure(failures: &AtomicU32, events: &UnboundedSender<EngineEvent>, error: String) {
    let failures = failures.fetch_add(1, Ordering::Relaxed);
    let _ = events.send(EngineEvent::Unreachable {
        error,
        retry_in: library_backoff(failures),
    });
}

#[async_trait]
impl<F: TransportFactory + 'static> TransportFactory for ReportingTransportFactory<F> {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let attempt = tokio::time::timeout(self.connect_timeout, self.inner.create_transport());
        let error = match attempt.await {
            Ok(Ok((transport, link_events))) => {
                self.established.store(false, Ordering::Relaxed);
                return Ok((transport, self.relay(link_events)));
            }
            Ok(Err(error)) => error,
            Err(_) => anyhow::anyhow!(
                "no connection to WhatsApp within {}",
                humantime::format_duration(self.connect_timeout)
            ),
        };
        report_failure(&self.failures, &self.events, format!("{error:#}"));
        Err(error)
    }
}

impl<F> ReportingTransportFactory<F> {
    /// Passes the link's events on to the library, noticing a link that closes before WhatsApp
    /// answered (a failed attempt) and one that got answered (failures start over).
    fn relay(
        &self,
        link_events: async_channel::Receiver<TransportEvent>,
    ) -> async_channel::Receiver<TransportEvent> {
        let (relayed, library_side) = async_channel::bounded(RELAY_CAPACITY);
        let (failures, established, events) = (
            Arc::clone(&self.failures),
            Arc::clone(&self.established),
            self.events.clone(),
        );
        tokio::spawn(async move {
            while let Ok(event) = link_events.recv().await {
                if let TransportEvent::Disconnected(reason) = &event {
                    if established.load(Ordering::Relaxed) {
                        failures.store(0, Ordering::Relaxed);
                    } else {
                        let error = format!("link closed before WhatsApp answered: {reason}");
                        report_failure(&failures, &events, error);
                    }
                }
                if relayed.send(event).await.is_err() {
                    break;
                }
            }
        });
        library_side
    }
}

/// The delay whatsapp-rust waits after its `failures`-th failed attempt in a row (0-based),
/// without its ±10 % jitter.
pub fn library_backoff(failures: u32) -> Duration {
    let (mut current, mut next) = (Duration::from_secs(1), Duration::from_secs(1));
    for _ in 0..failures {
        let following = (current + next).min(LIBRARY_BACKOFF_CAP);
        current = next;
        next = following;
        if current >= LIBRARY_BACKOFF_CAP {
            break;
        }
    }
    current.min(LIBRARY_BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use whatsapp_rust::{bytes::Bytes, transport::DisconnectReason};

    use super::*;

    /// A link that does nothing; its events are whatever the test feeds the channel.
    struct SilentLink;

    #[async_trait]
    impl Transport for SilentLink {
        async fn send(&self, _data: Bytes) -> Result<(), anyhow::Error> {
            Ok(())
        }

        async fn disconnect(&self) {}
    }

    /// A fake WhatsApp endpoint: refuses connections, or opens links that drop at once.
    enum FakeEndpoint {
        Refusing,
        DroppingLinks,
    }

    #[async_trait]
    impl TransportFactory for FakeEndpoint {
        async fn create_transport(
            &self,
        ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error>
        {
            match self {
                FakeEndpoint::Refusing => Err(anyhow::anyhow!("Connection refused (os error 111)")),
                FakeEndpoint::DroppingLinks => {
                    let (sender, receiver) = async_channel::unbounded();
                    let _ = sender.try_send(TransportEvent::Connected);
                    let _ = sender
                        .try_send(TransportEvent::Disconnected(DisconnectReason::StreamEnded));
                    Ok((Arc::new(SilentLink), receiver))
                }
            }
        }
    }

    fn wrapped(
        endpoint: FakeEndpoint,
    ) -> (
        ReportingTransportFactory<FakeEndpoint>,
        Arc<AtomicBool>,
        UnboundedReceiver<EngineEvent>,
    ) {
        let (events, reported) = unbounded_channel();
        let established = Arc::new(AtomicBool::new(false));
        let factory = ReportingTransportFactory::new(
            endpoint,
            Duration::from_secs(1),
            Arc::clone(&established),
            events,
        );
        (factory, established, reported)
    }

    fn unreachable(event: Option<EngineEvent>) -> (String, Duration) {
        match event {
            Some(EngineEvent::Unreachable { error, retry_in }) => (error, retry_in),
            other => panic!("expected an Unreachable event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_connections_are_reported_with_the_library_schedule() {
        let (factory, _, mut reported) = wrapped(FakeEndpoint::Refusing);
        let mut delays = Vec::new();
        for _ in 0..4 {
            assert!(factory.create_transport().await.is_err());
            let (error, retry_in) = unreachable(reported.recv().await);
            assert!(error.contains("refused"), "{error}");
            delays.push(retry_in.as_secs());
        }
        assert_eq!(delays, [1, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_link_dropped_before_whatsapp_answered_is_a_failed_attempt() {
        let (factory, established, mut reported) = wrapped(FakeEndpoint::DroppingLinks);
        let Ok((_, library_side)) = factory.create_transport().await else {
            panic!("the fake endpoint opens links");
        };
        let (error, retry_in) = unreachable(reported.recv().await);
        assert!(error.contains("before WhatsApp answered"), "{error}");
        assert_eq!(retry_in, Duration::from_secs(1));
        // The library still sees every event of the link, in order.
        assert!(matches!(
            library_side.recv().await,
            Ok(TransportEvent::Connected)
        ));
        assert!(matches!(
            library_side.recv().await,
            Ok(TransportEvent::Disconnected(_))
        ));

        // Once WhatsApp answered on a link, its drop is the library's to report (and the
        // failure count starts over).
        let Ok((_, library_side)) = factory.create_transport().await else {
            panic!("the fake endpoint opens links");
        };
        established.store(true, std::sync::atomic::Ordering::Relaxed);
        while library_side.recv().await.is_ok() {}
        assert!(reported.try_recv().is_err());
        assert_eq!(factory.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_backoff_follows_fibonacci_and_is_capped() {
        let seconds: Vec<u64> = (0..8).map(|n| library_backoff(n).as_secs()).collect();
        assert_eq!(seconds, [1, 1, 2, 3, 5, 8, 13, 21]);
        assert_eq!(library_backoff(40), LIBRARY_BACKOFF_CAP);
        assert_eq!(library_backoff(u32::MAX), LIBRARY_BACKOFF_CAP);
    }
}
