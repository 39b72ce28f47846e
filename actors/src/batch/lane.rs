//! One lane's queue: per-session coalescing (latest wins), deadlines, batches out, outcomes in.
//!
//! Plain data, no actix: the `BatchActor` drives it and the unit tests below call it directly.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::waiting::{Waiting, WaitingSet, earlier_by};
use crate::{
    messages::{Lane, OutboundItem, unix_millis},
    sink::{DeliveryOutcome, Refused, backoff_delay},
};

/// When an item must leave and arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// It waits for company at most until then (an urgent status lingers less than its deadline).
    pub send_by: Instant,
    /// It must be at Laravel by then: it leaves earlier by the expected request latency.
    pub deadline: Instant,
}

impl Timing {
    /// Leave by `deadline` less the request's latency.
    pub fn deadline(deadline: Instant) -> Self {
        Self {
            send_by: deadline,
            deadline,
        }
    }

    fn earliest(self, other: Timing) -> Timing {
        Timing {
            send_by: self.send_by.min(other.send_by),
            deadline: self.deadline.min(other.deadline),
        }
    }
}

/// How far ahead, in backlog-sized batches, a take looks for items the usual batch size would
/// leave late: far enough to see a whole wave of QRs (a combined request carries 200 of them and
/// a wave brings ~1,800), few enough to cost a few µs per request.
const LATE_CHECK_BACKLOGS: usize = 4;

/// How large a batch may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCap {
    /// The usual cap (`batch.max_items`).
    pub max_items: usize,
    /// The cap while a backlog drains: at `max_items` per request, one every `request_every`,
    /// some items would leave after their deadline.
    pub backlog_items: usize,
    /// How often this lane may expect to start a request under the current budget.
    pub request_every: Duration,
    /// The expected request latency: items leave that long before their deadline.
    pub lead: Duration,
}

/// A batch taken from a lane.
#[derive(Debug, Default)]
pub struct TakenBatch {
    /// What goes to Laravel.
    pub items: Vec<OutboundItem>,
    /// QRs dropped because they would reach Laravel after they expire.
    pub expired: Vec<Settled>,
}

/// An item in the batch at the sink.
#[derive(Clone, Copy, Debug)]
struct Sent {
    /// Failed deliveries before this one.
    attempts: u32,
    /// The item's sequence number.
    seq: u64,
}

/// Counters of a lane. `received = sent + coalesced + dead_lettered + dropped + expired + pending`
/// always.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LaneCounters {
    /// Items accepted.
    pub received: u64,
    /// Items replaced by a newer one for the same session before delivery.
    pub coalesced: u64,
    /// Items acknowledged by Laravel.
    pub sent: u64,
    /// Items Laravel refused for good.
    pub dead_lettered: u64,
    /// Items dropped because the lane hit `max_pending`.
    pub dropped: u64,
    /// QRs not sent because they would have reached Laravel after they expired.
    pub expired: u64,
    /// Items handed back for a later try.
    pub retried: u64,
    /// Items recovered from the durable outbox at start (counted in `received` too).
    pub recovered: u64,
    /// Requests made for this lane (one per batch handed to the sink).
    pub batches: u64,
}

/// A lane's figures for `/metrics/batch`.
#[derive(Clone, Debug, Serialize)]
pub struct LaneStats {
    /// Counters since start.
    #[serde(flatten)]
    pub counters: LaneCounters,
    /// Items waiting or in flight.
    pub pending: usize,
    /// Items in the batch out now.
    pub in_flight: usize,
    /// Size of the last batch.
    pub last_batch_size: usize,
    /// Largest batch so far.
    pub max_batch_size: usize,
    /// When the last batch left, in ms since the epoch.
    pub last_flush_at: Option<u64>,
    /// Milliseconds until the lane may send again, while it waits on a failure.
    pub blocked_for_ms: Option<u64>,
}

/// What [`LaneQueue::push`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new session's item joined the lane.
    Added,
    /// It replaced the waiting item of its session.
    Coalesced,
    /// It joined, and the lane's oldest item was dropped to stay within `max_pending`.
    DroppedOldest {
        /// The dropped item's coalescing key (its session, or session/message).
        key: String,
        /// The dropped item's sequence number.
        seq: u64,
    },
    /// A recovered item older than what the lane holds for its session: ignored.
    Stale,
}

/// An item that left the queue for good (delivered, dead-lettered, withdrawn): its coalescing key
/// and sequence number, so the durable outbox can forget it.
pub type Settled = (String, u64);

/// What left a lane for good when a batch came back.
#[derive(Debug, Default)]
pub struct SettledBatch {
    /// Items Laravel acknowledged.
    pub delivered: Vec<Settled>,
    /// Items Laravel refused for good, with their sequence numbers: dead letters.
    pub refused: Vec<(Refused, u64)>,
}

/// The queue of one lane.
#[derive(Debug)]
pub struct LaneQueue {
    /// Which lane.
    lane: Lane,
    /// Waiting items by coalescing key (one per session; every message apart), indexed.
    waiting: WaitingSet,
    /// The batch at the sink, by coalescing key. At most one batch per lane is out, so a session's
    /// items reach Laravel in order.
    in_flight: Option<HashMap<String, Sent>>,
    /// No batch leaves before this (breaker open, retries used up).
    blocked_until: Option<Instant>,
    /// Counters.
    counters: LaneCounters,
    /// Size of the last batch.
    last_batch_size: usize,
    /// Largest batch so far.
    max_batch_size: usize,
    /// When the last batch left, in ms since the epoch.
    last_flush_at: Option<u64>,
}

impl LaneQueue {
    /// An empty lane.
    pub fn new(lane: Lane) -> Self {
        Self {
            lane,
            waiting: WaitingSet::default(),
            in_flight: None,
            blocked_until: None,
            counters: LaneCounters::default(),
            last_batch_size: 0,
            max_batch_size: 0,
            last_flush_at: None,
        }
    }

    /// When the first urgent item must leave (its deadline less the expected request latency
    /// `lead`), if one waits: around then a request carrying it may use the budget's reserve.
    pub fn urgent_send_at(&self, lead: Duration) -> Option<Instant> {
        let deadline = self.waiting.earliest_urgent_deadline()?;
        Some(earlier_by(deadline, lead))
    }

    /// Adds an item with its `timing`; a waiting item of the same session is replaced (its
    /// earlier times are kept). Past `max_pending`, the oldest waiting item is dropped. `seq`
    /// orders versions.
    pub fn push(
        &mut self,
        item: OutboundItem,
        seq: u64,
        timing: Timing,
        urgent: bool,
        max_pending: usize,
    ) -> Pushed {
        self.counters.received += 1;
        let key = item.coalescing_key();
        if let Some(waiting) = self.waiting.get(&key) {
            if waiting.seq > seq {
                // Only a recovered item can be older than the waiting one.
                self.counters.coalesced += 1;
                return Pushed::Stale;
            }
            self.waiting.update(&key, |waiting| {
                waiting.item = item;
                waiting.timing = waiting.timing.earliest(timing);
                waiting.attempts = 0;
                waiting.seq = seq;
                waiting.urgent |= urgent;
            });
            self.counters.coalesced += 1;
            return Pushed::Coalesced;
        }
        let mut pushed = Pushed::Added;
        if self.waiting.len() >= max_pending
            && let Some((key, dropped)) = self.waiting.pop_oldest()
        {
            self.counters.dropped += 1;
            pushed = Pushed::DroppedOldest {
                key,
                seq: dropped.seq,
            };
        }
        self.waiting.insert(
            key,
            Waiting {
                item,
                timing,
                attempts: 0,
                seq,
                urgent,
            },
        );
        pushed
    }

    /// Adds an item recovered from the durable outbox (counted as received and recovered).
    pub fn push_recovered(
        &mut self,
        item: OutboundItem,
        seq: u64,
        due: Instant,
        max_pending: usize,
    ) -> Pushed {
        self.counters.recovered += 1;
        self.push(item, seq, Timing::deadline(due), false, max_pending)
    }

    /// Withdraws a session's waiting item (it went stale: a QR once the session connected or
    /// closed). Counted as coalesced: a newer state replaced it. Returns whether one waited.
    pub fn retract(&mut self, session_id: &str) -> Option<u64> {
        let withdrawn = self.waiting.remove(session_id)?;
        self.counters.coalesced += 1;
        Some(withdrawn.seq)
    }

    /// Whether a batch should leave now, items leaving `lead` before their deadline.
    pub fn is_ready(&self, now: Instant, lead: Duration, max_items: usize, draining: bool) -> bool {
        self.next_wake(now, lead, max_items, draining)
            .is_some_and(|at| at <= now)
    }

    /// When this lane next needs attention, if it holds anything it could send.
    pub fn next_wake(
        &self,
        now: Instant,
        lead: Duration,
        max_items: usize,
        draining: bool,
    ) -> Option<Instant> {
        if self.in_flight.is_some() || self.waiting.is_empty() {
            return None;
        }
        let due = if draining || self.waiting.len() >= max_items {
            now
        } else {
            self.earliest_send_at(lead)?
        };
        Some(self.blocked_until.map_or(due, |until| until.max(due)))
    }

    /// Whether the lane must send (when ready) rather than may: it is draining, holds
    /// `max_items`, or its first deadline less `lead` came. A lane only past an item's linger
    /// time (`send_by`) may wait for one that must send.
    pub fn must_send(
        &self,
        now: Instant,
        lead: Duration,
        max_items: usize,
        draining: bool,
    ) -> bool {
        draining
            || self.waiting.len() >= max_items
            || self
                .waiting
                .earliest_deadline()
                .is_some_and(|deadline| earlier_by(deadline, lead) <= now)
    }

    /// Whether the lane could send now if asked (something waits, nothing is out, not blocked):
    /// it may join a request another lane's deadline starts.
    pub fn can_join(&self, now: Instant) -> bool {
        self.in_flight.is_none()
            && !self.waiting.is_empty()
            && self.blocked_until.is_none_or(|until| until <= now)
    }

    /// When the first waiting item must leave.
    pub fn earliest_send_at(&self, lead: Duration) -> Option<Instant> {
        self.waiting.earliest_send_at(lead)
    }

    /// Takes the next batch: the items due soonest, urgent ones first, up to `cap.max_items`
    /// (`cap.backlog_items` while batches of `max_items` would leave some late). QRs that would
    /// reach Laravel after `arrival_ms` (ms since the epoch) have expired: they are dropped.
    pub fn take_batch(&mut self, cap: BatchCap, now: Instant, arrival_ms: u64) -> TakenBatch {
        let backlog = self.waiting.late_at_pace(
            now,
            cap.lead,
            cap.max_items,
            cap.request_every,
            cap.backlog_items.saturating_mul(LATE_CHECK_BACKLOGS),
        );
        let max_items = if backlog {
            cap.backlog_items.max(cap.max_items)
        } else {
            cap.max_items
        };
        let mut expired = Vec::new();
        let counters = &mut self.counters;
        let alive = |waiting: &Waiting| {
            waiting
                .item
                .expires_at()
                .is_none_or(|expires_at| expires_at > arrival_ms)
        };
        // Urgent items first, then the soonest deadline, then the oldest; QRs that would arrive
        // expired are dropped on the way.
        let mut taken = self.waiting.take(max_items, alive, |key, waiting| {
            counters.expired += 1;
            expired.push((key, waiting.seq));
        });
        if taken.is_empty() {
            return TakenBatch {
                items: Vec::new(),
                expired,
            };
        }
        // The batch goes in arrival order (by sequence number, then arrival).
        taken.sort_unstable_by_key(|(_, waiting, slot)| (waiting.seq, *slot));
        // Laravel names the items it could not store by id alone (`failed_ids`, `rejected`), and
        // a WhatsApp message id is unique only per chat and sender: two items under one id wait
        // for separate requests, so a refusal of one never marks the other.
        let mut ids = HashSet::with_capacity(taken.len());
        let (taken, next_time): (Vec<_>, Vec<_>) = taken
            .into_iter()
            .partition(|(_, waiting, _)| ids.insert(waiting.item.ack_id().to_string()));
        for (key, waiting, _) in next_time {
            self.waiting.insert(key, waiting);
        }
        let mut in_flight = HashMap::with_capacity(taken.len());
        let mut items = Vec::with_capacity(taken.len());
        for (key, waiting, _) in taken {
            in_flight.insert(
                key,
                Sent {
                    attempts: waiting.attempts,
                    seq: waiting.seq,
                },
            );
            items.push(waiting.item);
        }
        self.in_flight = Some(in_flight);
        self.blocked_until = None;
        self.counters.batches += 1;
        self.last_batch_size = items.len();
        self.max_batch_size = self.max_batch_size.max(items.len());
        self.last_flush_at = Some(unix_millis());
        TakenBatch { items, expired }
    }

    /// Takes the sink's answer for the batch in flight and answers what left for good. Deferred
    /// items come back unless a newer item of their session arrived meanwhile; each waits
    /// `retry_base * 2^attempts` (capped), or for the lane's `retry_after`.
    pub fn settle(
        &mut self,
        outcome: DeliveryOutcome,
        now: Instant,
        retry_base: Duration,
        retry_max: Duration,
    ) -> SettledBatch {
        let in_flight = self.in_flight.take().unwrap_or_default();
        let sent_of = |item: &OutboundItem| {
            in_flight
                .get(&item.coalescing_key())
                .copied()
                .unwrap_or(Sent {
                    attempts: 0,
                    seq: 0,
                })
        };
        self.counters.sent += outcome.delivered.len() as u64;
        self.counters.dead_lettered += outcome.dead_lettered.len() as u64;
        let settled = SettledBatch {
            delivered: outcome
                .delivered
                .iter()
                .map(|item| (item.coalescing_key(), sent_of(item).seq))
                .collect(),
            refused: outcome
                .dead_lettered
                .into_iter()
                .map(|refused| {
                    let seq = sent_of(&refused.item).seq;
                    (refused, seq)
                })
                .collect(),
        };
        for item in outcome.deferred {
            self.counters.retried += 1;
            if self.waiting.contains_key(&item.coalescing_key()) {
                self.counters.coalesced += 1;
                continue;
            }
            let Sent { attempts, seq } = sent_of(&item);
            let attempts = attempts + 1;
            let due = match outcome.retry_after {
                Some(_) => now,
                None => now + backoff_delay(retry_base, retry_max, attempts - 1),
            };
            self.waiting.insert(
                item.coalescing_key(),
                Waiting {
                    item,
                    timing: Timing::deadline(due),
                    attempts,
                    seq,
                    urgent: false,
                },
            );
        }
        if let Some(retry_after) = outcome.retry_after {
            self.blocked_until = Some(now + retry_after);
        }
        settled
    }

    /// Whether an item of coalescing key `key` waits or is in flight.
    pub fn holds(&self, key: &str) -> bool {
        self.waiting.contains_key(key)
            || self
                .in_flight
                .as_ref()
                .is_some_and(|in_flight| in_flight.contains_key(key))
    }

    /// Items waiting (not out at Laravel).
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Items waiting or in flight.
    pub fn pending(&self) -> usize {
        self.waiting.len() + self.in_flight.as_ref().map_or(0, HashMap::len)
    }

    /// Whether nothing waits and nothing is out.
    pub fn is_idle(&self) -> bool {
        self.pending() == 0
    }

    /// The lane's figures.
    pub fn stats(&self, now: Instant) -> LaneStats {
        LaneStats {
            counters: self.counters.clone(),
            pending: self.pending(),
            in_flight: self.in_flight.as_ref().map_or(0, HashMap::len),
            last_batch_size: self.last_batch_size,
            max_batch_size: self.max_batch_size,
            last_flush_at: self.last_flush_at,
            blocked_for_ms: self
                .blocked_until
                .filter(|until| *until > now)
                .map(|until| u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Which lane.
    pub fn lane(&self) -> Lane {
        self.lane
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{EstadoQr, Payload};

    fn status(session: &str, estado_qr: EstadoQr) -> OutboundItem {
        OutboundItem {
            session_id: session.into(),
            payload: Payload::Status { estado_qr },
            user_id: None,
            timestamp: 0,
        }
    }

    fn cap(max_items: usize) -> BatchCap {
        BatchCap {
            max_items,
            backlog_items: max_items,
            request_every: Duration::ZERO,
            lead: Duration::ZERO,
        }
    }

    fn qr(session: &str, expires_at: u64) -> OutboundItem {
        OutboundItem {
            session_id: session.into(),
            payload: Payload::Qr {
                qr: crate::qr_image::QrDataUrl::from_png(vec![0; 3]),
                expires_at,
            },
            user_id: None,
            timestamp: 0,
        }
    }

    fn message(chat: &str, id: &str) -> OutboundItem {
        OutboundItem {
            session_id: "s".into(),
            payload: Payload::Message(crate::messages::IncomingMessage {
                message_id: id.into(),
                from: "34600000001@s.whatsapp.net".into(),
                to: chat.into(),
                kind: "text".into(),
                text: Some("hola".into()),
            }),
            user_id: None,
            timestamp: 0,
        }
    }

    #[test]
    fn two_messages_under_one_whatsapp_id_never_share_a_request() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Message);
        lane.push(
            message("a@g.us", "3EB0X"),
            1,
            Timing::deadline(now),
            false,
            10,
        );
        lane.push(
            message("b@g.us", "3EB0X"),
            2,
            Timing::deadline(now),
            false,
            10,
        );
        lane.push(
            message("a@g.us", "3EB0Y"),
            3,
            Timing::deadline(now),
            false,
            10,
        );
        let first = lane.take_batch(cap(10), now, 0);
        assert_eq!(
            first.items,
            vec![message("a@g.us", "3EB0X"), message("a@g.us", "3EB0Y")]
        );
        assert_eq!(
            lane.waiting.len(),
            1,
            "the other waits for the next request"
        );
        lane.settle(
            DeliveryOutcome {
                delivered: first.items,
                ..DeliveryOutcome::default()
            },
            now,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let second = lane.take_batch(cap(10), now, 0);
        assert_eq!(second.items, vec![message("b@g.us", "3EB0X")]);
    }

    #[test]
    fn qrs_that_would_arrive_expired_are_dropped_and_counted() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Qr);
        lane.push(qr("old", 1_000), 1, Timing::deadline(now), false, 10);
        lane.push(qr("fresh", 9_000), 2, Timing::deadline(now), false, 10);
        let taken = lane.take_batch(cap(10), now, 1_000);
        assert_eq!(taken.items, vec![qr("fresh", 9_000)]);
        assert_eq!(taken.expired, vec![("old".to_string(), 1)]);
        assert_eq!(lane.counters.expired, 1);
        assert!(holds_invariant(&lane));
    }

    #[test]
    fn items_leave_early_by_the_expected_latency_and_urgent_ones_linger_less() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut lane = LaneQueue::new(Lane::Status);
        lane.push(
            status("a", EstadoQr::Pending),
            1,
            Timing::deadline(now + second),
            false,
            10,
        );
        let lead = Duration::from_millis(300);
        assert_eq!(
            lane.earliest_send_at(lead),
            Some(now + Duration::from_millis(700))
        );
        assert!(!lane.is_ready(now + Duration::from_millis(699), lead, 10, false));
        assert!(lane.is_ready(now + Duration::from_millis(700), lead, 10, false));
        let urgent = Timing {
            send_by: now + Duration::from_millis(250),
            deadline: now + Duration::from_millis(500),
        };
        lane.push(status("b", EstadoQr::Active), 2, urgent, true, 10);
        assert_eq!(
            lane.earliest_send_at(Duration::from_millis(100)),
            Some(now + Duration::from_millis(250))
        );
        assert_eq!(
            lane.earliest_send_at(lead),
            Some(now + Duration::from_millis(200))
        );
    }

    #[test]
    fn a_lane_past_only_a_linger_time_may_send_and_one_at_a_deadline_or_full_must() {
        let now = Instant::now();
        let lead = Duration::from_millis(100);
        let at = |ms: u64| now + Duration::from_millis(ms);
        let mut lane = LaneQueue::new(Lane::Status);
        let urgent = Timing {
            send_by: at(275),
            deadline: at(500),
        };
        lane.push(status("a", EstadoQr::Active), 1, urgent, true, 10);
        assert!(lane.is_ready(at(300), lead, 10, false));
        assert!(!lane.must_send(at(300), lead, 10, false), "only lingering");
        assert!(lane.must_send(at(400), lead, 10, false), "at its deadline");
        assert!(lane.must_send(at(300), lead, 1, false), "full");
        assert!(lane.must_send(at(0), lead, 10, true), "draining");
        assert_eq!(lane.urgent_send_at(lead), Some(at(400)));
    }

    #[test]
    fn a_backlog_past_its_deadlines_drains_in_larger_batches() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        for index in 0..30u64 {
            lane.push(
                status(&format!("s{index}"), EstadoQr::Pending),
                index,
                Timing::deadline(now),
                false,
                100,
            );
        }
        let mut cap = BatchCap {
            max_items: 10,
            backlog_items: 25,
            request_every: Duration::ZERO,
            lead: Duration::ZERO,
        };
        let settle = |lane: &mut LaneQueue| {
            let outcome = DeliveryOutcome::default();
            lane.settle(outcome, now, Duration::from_secs(1), Duration::from_secs(8));
        };
        assert_eq!(
            lane.take_batch(cap, now, 0).items.len(),
            10,
            "leaving at the deadline is in time"
        );
        settle(&mut lane);
        cap.lead = Duration::from_millis(1);
        assert_eq!(lane.take_batch(cap, now, 0).items.len(), 20, "all late");
    }

    #[test]
    fn batches_grow_when_the_usual_size_cannot_meet_the_deadlines_at_the_budgets_pace() {
        let now = Instant::now();
        let wave = |lane: &mut LaneQueue| {
            for index in 0..100u64 {
                let deadline = now + Duration::from_secs(1);
                let item = qr(&format!("s{index}"), u64::MAX);
                lane.push(item, index, Timing::deadline(deadline), false, 1_000);
            }
        };
        let cap = |request_every_ms: u64| BatchCap {
            max_items: 10,
            backlog_items: 60,
            request_every: Duration::from_millis(request_every_ms),
            lead: Duration::from_millis(100),
        };
        // One request every 50 ms carries ten items each: the tenth request leaves at 450 ms,
        // in time for the 900 ms the items may wait.
        let mut lane = LaneQueue::new(Lane::Qr);
        wave(&mut lane);
        assert_eq!(lane.take_batch(cap(50), now, 0).items.len(), 10);
        // One every 200 ms: the sixth would leave at 1 s, late; the batch grows now.
        let mut lane = LaneQueue::new(Lane::Qr);
        wave(&mut lane);
        assert_eq!(lane.take_batch(cap(200), now, 0).items.len(), 60);
    }

    fn holds_invariant(lane: &LaneQueue) -> bool {
        let counters = &lane.counters;
        counters.received
            == counters.sent
                + counters.coalesced
                + counters.dead_lettered
                + counters.dropped
                + counters.expired
                + lane.pending() as u64
    }

    #[test]
    fn coalesces_per_session_and_keeps_the_earliest_due_time() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        lane.push(
            status("a", EstadoQr::Pending),
            1,
            Timing::deadline(now + Duration::from_secs(1)),
            false,
            100,
        );
        lane.push(
            status("a", EstadoQr::Active),
            1,
            Timing::deadline(now + Duration::from_secs(5)),
            false,
            100,
        );
        lane.push(
            status("b", EstadoQr::Pending),
            1,
            Timing::deadline(now + Duration::from_secs(3)),
            false,
            100,
        );
        assert_eq!(lane.pending(), 2);
        assert!(!lane.is_ready(now, Duration::ZERO, 10, false));
        assert!(lane.is_ready(now + Duration::from_secs(1), Duration::ZERO, 10, false));
        let batch = lane.take_batch(cap(10), now, 0).items;
        assert_eq!(
            batch,
            vec![
                status("a", EstadoQr::Active),
                status("b", EstadoQr::Pending)
            ]
        );
        assert!(holds_invariant(&lane));
    }

    #[test]
    fn batches_take_the_soonest_due_items_up_to_the_limit() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        for index in 0..5u64 {
            lane.push(
                status(&format!("s{index}"), EstadoQr::Pending),
                1,
                Timing::deadline(now + Duration::from_secs(10 - index)),
                false,
                100,
            );
        }
        assert!(
            lane.is_ready(now, Duration::ZERO, 3, false),
            "a full batch leaves at once"
        );
        let batch = lane.take_batch(cap(3), now, 0).items;
        let ids: Vec<_> = batch.iter().map(|item| item.session_id.as_str()).collect();
        assert_eq!(ids, vec!["s2", "s3", "s4"]);
        assert!(
            !lane.is_ready(now, Duration::ZERO, 3, true),
            "one batch in flight at a time"
        );
    }

    #[test]
    fn deferred_items_come_back_unless_a_newer_one_arrived() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        lane.push(
            status("a", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            100,
        );
        lane.push(
            status("b", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            100,
        );
        lane.push(
            status("c", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            100,
        );
        let batch = lane.take_batch(cap(10), now, 0).items;
        lane.push(
            status("a", EstadoQr::Active),
            1,
            Timing::deadline(now),
            false,
            100,
        );
        let mut outcome = DeliveryOutcome::default();
        let mut batch = batch.into_iter();
        outcome.deferred.push(batch.next().expect("a"));
        outcome.deferred.push(batch.next().expect("b"));
        outcome.dead_lettered.push(Refused {
            item: batch.next().expect("c"),
            status: 422,
            reason: "HTTP 422".into(),
        });
        lane.settle(outcome, now, Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(lane.pending(), 2);
        assert_eq!(lane.counters.coalesced, 1);
        assert_eq!(lane.counters.dead_lettered, 1);
        assert!(holds_invariant(&lane));
        let batch = lane.take_batch(cap(10), now, 0).items;
        assert!(batch.contains(&status("a", EstadoQr::Active)));
        assert!(batch.contains(&status("b", EstadoQr::Pending)));
    }

    #[test]
    fn items_due_together_leave_in_arrival_order_across_batches() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        for seq in 1..=5u64 {
            lane.push(
                status(&format!("s{seq}"), EstadoQr::Pending),
                seq,
                Timing::deadline(now),
                false,
                100,
            );
        }
        let mut sent = Vec::new();
        while lane.pending() > 0 {
            let batch = lane.take_batch(cap(2), now, 0).items;
            sent.extend(batch.iter().map(|item| item.session_id.clone()));
            let outcome = DeliveryOutcome {
                delivered: batch,
                ..DeliveryOutcome::default()
            };
            lane.settle(outcome, now, Duration::from_secs(1), Duration::from_secs(8));
        }
        assert_eq!(sent, ["s1", "s2", "s3", "s4", "s5"]);
        assert!(holds_invariant(&lane));
    }

    #[test]
    fn urgent_items_are_picked_first_whatever_their_due_time() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Status);
        for index in 0..5u64 {
            lane.push(
                status(&format!("old{index}"), EstadoQr::Pending),
                1,
                Timing::deadline(now),
                false,
                100,
            );
        }
        lane.push(
            status("urgent", EstadoQr::Active),
            1,
            Timing::deadline(now + Duration::from_secs(1)),
            true,
            100,
        );
        let lead = Duration::from_millis(100);
        assert_eq!(
            lane.urgent_send_at(lead),
            Some(now + Duration::from_secs(1) - lead)
        );
        let batch = lane.take_batch(cap(2), now, 0).items;
        assert!(
            batch.iter().any(|item| item.session_id == "urgent"),
            "{batch:?}"
        );
        assert_eq!(lane.urgent_send_at(lead), None);
        assert!(holds_invariant(&lane));
    }

    #[test]
    fn a_retracted_item_counts_as_coalesced() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Qr);
        lane.push(
            status("a", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            10,
        );
        assert_eq!(lane.retract("a"), Some(1));
        assert_eq!(lane.retract("a"), None);
        assert_eq!(lane.pending(), 0);
        assert!(holds_invariant(&lane));
    }

    #[test]
    fn a_blocked_lane_waits_and_overflow_drops_the_oldest() {
        let now = Instant::now();
        let mut lane = LaneQueue::new(Lane::Qr);
        lane.push(
            status("a", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            2,
        );
        let batch = lane.take_batch(cap(10), now, 0).items;
        lane.settle(
            DeliveryOutcome {
                deferred: batch,
                retry_after: Some(Duration::from_secs(5)),
                ..DeliveryOutcome::default()
            },
            now,
            Duration::from_secs(1),
            Duration::from_secs(8),
        );
        assert!(!lane.is_ready(now + Duration::from_secs(4), Duration::ZERO, 10, true));
        assert!(lane.is_ready(now + Duration::from_secs(5), Duration::ZERO, 10, false));
        lane.push(
            status("b", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            2,
        );
        lane.push(
            status("c", EstadoQr::Pending),
            1,
            Timing::deadline(now),
            false,
            2,
        );
        assert_eq!(lane.counters.dropped, 1);
        assert!(holds_invariant(&lane));
    }
}
