//! The write journal: changes to Redis hashes (and expiring cache keys) wait here, coalesced per
//! field (latest wins), and leave in pipelined round trips of at most [`MAX_OPS_PER_WRITE`], the
//! longest-waiting first; one write is out at a time, so Redis sees them in order.
//! A failed write goes back into the journal (under newer changes) and is retried with backoff,
//! so Redis being down costs memory bounded by the number of fields, never by outage length.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use actix::prelude::*;
use deadpool_redis::redis;
use futures_util::future::LocalBoxFuture;
use indexmap::IndexMap;

use super::{RedisPool, StoreError, StoredValue};
use crate::{messages::unix_millis, sink::backoff_delay};

/// Deletes a hash field only if its stored sequence number is not newer than the one acknowledged
/// (values are stored as `seq|payload`).
const DELETE_IF_NOT_NEWER: &str = r"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local seq = tonumber(string.match(stored, '^(%d+)|'))
  if seq == nil or seq <= tonumber(ARGV[2]) then
    return redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
return 0
";

/// Changes per pipelined write. At 100k sessions the journal can hold 200k changes of ~2 KB (QR
/// images); one pipeline of all of them outlasts `redis.timeout`, fails and is retried whole,
/// forever. A thousand (about 2 MB) take Redis a few milliseconds.
pub const MAX_OPS_PER_WRITE: usize = 1000;

static LAST_SEQ: AtomicU64 = AtomicU64::new(0);

/// A sequence number that grows across calls and, through the clock, across restarts
/// (milliseconds × 1000, kept below 2^53 so Lua compares it exactly).
pub fn next_seq() -> u64 {
    let floor = unix_millis().saturating_mul(1000);
    let previous = LAST_SEQ
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(last.saturating_add(1).max(floor))
        })
        .unwrap_or(floor);
    previous.saturating_add(1).max(floor)
}

/// Splits a stored `seq|payload` value.
pub fn split_stored(value: &str) -> Option<(u64, &str)> {
    let (seq, payload) = value.split_once('|')?;
    Some((seq.parse().ok()?, payload))
}

/// A pending change of one hash field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalOp {
    /// Store `seq|value`.
    Put {
        /// Sequence number of the value.
        seq: u64,
        /// The payload.
        value: StoredValue,
    },
    /// Delete the field; with `up_to_seq`, only if what is stored is not newer.
    Remove {
        /// Compare-and-delete bound.
        up_to_seq: Option<u64>,
    },
    /// A plain key (not a hash field) set to `value`, expiring after `ttl`.
    Expiring {
        /// The value.
        value: StoredValue,
        /// Time to live.
        ttl: Duration,
    },
}

/// `(hash key, field)`.
type FieldKey = (String, String);

/// Pending changes, one per field, in the order the fields were first queued, each with when
/// it was first queued (how long changes wait to be written is the write-behind window).
#[derive(Debug, Default)]
pub struct HashJournal {
    ops: IndexMap<FieldKey, (JournalOp, Instant)>,
    /// The first-queued times of `ops`, counted: the oldest one says which changes are still
    /// unwritten (a waiter for "everything queued before T" need not wait for newer ones).
    queued_at: BTreeMap<Instant, usize>,
}

impl HashJournal {
    /// Queues `op` for a field, keeping the field's place and first-queued time if it waits.
    fn upsert(&mut self, field_key: FieldKey, op: JournalOp, since: Instant) {
        match self.ops.entry(field_key) {
            indexmap::map::Entry::Occupied(mut waiting) => waiting.get_mut().0 = op,
            indexmap::map::Entry::Vacant(free) => {
                free.insert((op, since));
                *self.queued_at.entry(since).or_default() += 1;
            }
        }
    }

    /// Forgets one change first queued at `since` (it left the journal).
    fn unqueued(&mut self, since: Instant) {
        uncount(&mut self.queued_at, since);
    }

    /// When the longest-waiting change still queued was first queued.
    pub fn oldest_queued(&self) -> Option<Instant> {
        self.queued_at.keys().next().copied()
    }

    /// Queues a store of `value` (replacing whatever was queued for the field).
    pub fn put(&mut self, key: &str, field: &str, seq: u64, value: impl Into<StoredValue>) {
        self.upsert(
            (key.to_string(), field.to_string()),
            JournalOp::Put {
                seq,
                value: value.into(),
            },
            Instant::now(),
        );
    }

    /// Queues a delete. A queued store newer than `up_to_seq` survives it.
    pub fn remove(&mut self, key: &str, field: &str, up_to_seq: Option<u64>) {
        let field_key = (key.to_string(), field.to_string());
        let merged = match (self.ops.get(&field_key).map(|(op, _)| op), up_to_seq) {
            (Some(JournalOp::Put { seq, .. }), Some(bound)) if *seq > bound => return,
            (
                Some(JournalOp::Remove {
                    up_to_seq: Some(earlier),
                }),
                Some(bound),
            ) => Some(bound.max(*earlier)),
            _ => up_to_seq,
        };
        self.upsert(
            field_key,
            JournalOp::Remove { up_to_seq: merged },
            Instant::now(),
        );
    }

    /// Queues a delete behind every change queued so far (a queued change of the field itself
    /// is dropped): for a removal that must reach Redis after writes queued before it.
    pub fn remove_behind(&mut self, key: &str, field: &str) {
        let field_key = (key.to_string(), field.to_string());
        if let Some((_, since)) = self.ops.shift_remove(&field_key) {
            self.unqueued(since);
        }
        let now = Instant::now();
        self.ops
            .insert(field_key, (JournalOp::Remove { up_to_seq: None }, now));
        *self.queued_at.entry(now).or_default() += 1;
    }

    /// Queues `SET key value PX ttl` (a cache entry; the field part of its journal key is empty).
    pub fn set_expiring(&mut self, key: &str, value: impl Into<StoredValue>, ttl: Duration) {
        self.upsert(
            (key.to_string(), String::new()),
            JournalOp::Expiring {
                value: value.into(),
                ttl,
            },
            Instant::now(),
        );
    }

    /// The value queued for a plain key, not yet written (read-your-writes for caches).
    pub fn queued_value(&self, key: &str) -> Option<String> {
        match self.ops.get(&(key.to_string(), String::new())) {
            Some((JournalOp::Expiring { value, .. }, _)) => value.render().map(Cow::into_owned),
            _ => None,
        }
    }

    /// Queues `op` again on top of what waits for its field (a failed write given back).
    fn apply(&mut self, (key, field): FieldKey, op: JournalOp, since: Instant) {
        match op {
            // An unconditional delete queued after the failed write's changes stays after them
            // (`remove_behind`'s promise: a dead letter's removal after its item's outbox write).
            JournalOp::Remove { up_to_seq: None } => {
                self.remove_behind(&key, &field);
                if let Some((_, queued)) = self.ops.get_mut(&(key, field)) {
                    *queued = since;
                }
            }
            JournalOp::Remove { up_to_seq } => {
                self.remove(&key, &field, up_to_seq);
                if let Some((_, queued)) = self.ops.get_mut(&(key, field)) {
                    *queued = (*queued).min(since);
                }
            }
            op => self.upsert((key, field), op, since),
        }
    }

    /// Takes up to `max` changes, those queued longest first.
    pub fn take(&mut self, max: usize) -> Vec<(FieldKey, JournalOp)> {
        self.take_timed(max).0
    }

    /// [`take`](Self::take), with when the longest-waiting of them was first queued.
    pub fn take_timed(&mut self, max: usize) -> (Vec<(FieldKey, JournalOp)>, Option<Instant>) {
        let count = max.min(self.ops.len());
        let queued_at = &mut self.queued_at;
        let mut oldest: Option<Instant> = None;
        let ops = self
            .ops
            .drain(..count)
            .map(|(field_key, (op, since))| {
                uncount(queued_at, since);
                oldest = Some(oldest.map_or(since, |earlier| earlier.min(since)));
                (field_key, op)
            })
            .collect();
        (ops, oldest)
    }

    /// Puts back the changes of a failed write, first in line and in their order (so Redis still
    /// sees every change in the order it was queued: an outbox write before the removal of the
    /// dead letter it replays, say); changes queued since then apply on top. They count as
    /// queued `since` (the failed write's oldest).
    pub fn give_back(&mut self, failed: Vec<(FieldKey, JournalOp)>, since: Instant) {
        let newer = std::mem::take(&mut self.ops);
        self.ops.reserve(failed.len() + newer.len());
        self.ops.extend(
            failed
                .into_iter()
                .map(|(field_key, op)| (field_key, (op, since))),
        );
        for (field_key, (op, queued)) in newer {
            self.apply(field_key, op, queued);
        }
        // `apply` moves first-queued times about: count them afresh (a failed write is rare).
        self.queued_at.clear();
        for (_, since) in self.ops.values() {
            *self.queued_at.entry(*since).or_default() += 1;
        }
    }

    /// Fields with a queued change.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Takes one change first queued at `since` off `counts`.
fn uncount(counts: &mut BTreeMap<Instant, usize>, since: Instant) {
    if let Some(count) = counts.get_mut(&since) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&since);
        }
    }
}

/// What a write did, for the owner's bookkeeping.
pub struct WriteOutcome {
    ops: Vec<(FieldKey, JournalOp)>,
    /// When its longest-waiting change was queued.
    oldest: Instant,
    result: Result<(), StoreError>,
}

/// Upper bounds (ms) of the buckets of [`WriteDelays`].
const DELAY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, u64::MAX];

/// How long changes waited between being queued and being in Redis (the write-behind window:
/// what a kill -9 can lose), per successful write, by its longest-waiting change.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteDelays {
    /// The last write's, in ms.
    pub last_ms: u64,
    /// The longest since start, in ms.
    pub max_ms: u64,
    /// Writes by delay: `counts[i]` took at most [`DELAY_BUCKETS_MS`]`[i]` ms.
    #[serde(skip)]
    counts: [u64; 12],
}

impl WriteDelays {
    fn record(&mut self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.last_ms = ms;
        self.max_ms = self.max_ms.max(ms);
        if let Some(bucket) = DELAY_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            self.counts[bucket] += 1;
        }
    }

    /// The bucket bound (ms) that `quantile` (0..=1) of the writes stayed within.
    pub fn quantile_ms(&self, quantile: f64) -> Option<u64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (quantile * total as f64).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Some(DELAY_BUCKETS_MS[bucket].min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

/// A journal and its write loop. The owning actor calls [`start_write`](Self::start_write),
/// spawns the future, and hands its outcome to [`finish_write`](Self::finish_write).
pub struct PersistQueue {
    /// Where writes go.
    pool: RedisPool,
    /// Changes not yet written.
    journal: HashJournal,
    /// Changes in the write under way.
    in_flight: usize,
    /// When the longest-waiting change of the write under way was first queued.
    in_flight_since: Option<Instant>,
    /// Consecutive failed writes (drives the retry delay).
    failures: u32,
    /// Retry backoff.
    retry_base: Duration,
    /// Retry cap.
    retry_max: Duration,
    /// Changes written since start.
    pub written: u64,
    /// Writes that failed since start.
    pub failed_writes: u64,
    /// How long changes waited to be written.
    pub delays: WriteDelays,
}

impl PersistQueue {
    /// An empty queue writing through `pool`.
    pub fn new(pool: RedisPool, retry_base: Duration, retry_max: Duration) -> Self {
        Self {
            pool,
            journal: HashJournal::default(),
            in_flight: 0,
            in_flight_since: None,
            failures: 0,
            retry_base,
            retry_max,
            written: 0,
            failed_writes: 0,
            delays: WriteDelays::default(),
        }
    }

    /// The journal, to queue changes.
    pub fn journal(&mut self) -> &mut HashJournal {
        &mut self.journal
    }

    /// Changes not yet known to be in Redis.
    pub fn unwritten(&self) -> usize {
        self.journal.len() + self.in_flight
    }

    /// Whether every change queued up to `asked` is in Redis (newer ones may still wait: under
    /// steady traffic the journal is seldom empty, and a waiter must not wait for it to be).
    pub fn written_through(&self, asked: Instant) -> bool {
        let unwritten_since = [self.journal.oldest_queued(), self.in_flight_since];
        unwritten_since
            .into_iter()
            .flatten()
            .all(|since| since > asked)
    }

    /// A cache value queued and not yet written (read-your-writes).
    pub fn queued_value(&self, key: &str) -> Option<String> {
        self.journal.queued_value(key)
    }

    /// Whether a write is under way.
    pub fn is_writing(&self) -> bool {
        self.in_flight > 0
    }

    /// Starts writing everything queued, unless a write is under way or nothing waits.
    pub fn start_write(&mut self) -> Option<LocalBoxFuture<'static, WriteOutcome>> {
        if self.in_flight > 0 || self.journal.is_empty() {
            return None;
        }
        let (ops, oldest) = self.journal.take_timed(MAX_OPS_PER_WRITE);
        let oldest = oldest.unwrap_or_else(Instant::now);
        self.in_flight = ops.len();
        self.in_flight_since = Some(oldest);
        let mut pipeline = redis::pipe();
        for ((key, field), op) in &ops {
            match op {
                JournalOp::Put { seq, value } => {
                    // A value that cannot be serialised is not written; the item it records
                    // still travels in memory.
                    if let Some(stored) = value.render_after(&format!("{seq}|")) {
                        pipeline.hset(key, field, stored).ignore();
                    }
                }
                JournalOp::Remove { up_to_seq: None } => {
                    pipeline.hdel(key, field).ignore();
                }
                JournalOp::Expiring { value, ttl } => {
                    let Some(text) = value.render() else {
                        continue;
                    };
                    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                    pipeline
                        .cmd("SET")
                        .arg(key)
                        .arg(&*text)
                        .arg("PX")
                        .arg(millis)
                        .ignore();
                }
                JournalOp::Remove {
                    up_to_seq: Some(seq),
                } => {
                    pipeline
                        .cmd("EVAL")
                        .arg(DELETE_IF_NOT_NEWER)
                        .arg(1)
                        .arg(key)
                        .arg(field)
                        .arg(*seq)
                        .ignore();
                }
            }
        }
        let pool = self.pool.clone();
        Some(Box::pin(async move {
            let result = pool.pipeline::<()>(&pipeline).await;
            WriteOutcome {
                ops,
                oldest,
                result,
            }
        }))
    }

    /// Ends a write. On failure its changes go back to the journal and the answer is how long
    /// to wait before the next attempt.
    pub fn finish_write(&mut self, outcome: WriteOutcome) -> Option<(Duration, StoreError)> {
        self.in_flight = 0;
        self.in_flight_since = None;
        match outcome.result {
            Ok(()) => {
                self.failures = 0;
                self.delays.record(outcome.oldest.elapsed());
                self.written += outcome.ops.len() as u64;
                None
            }
            Err(error) => {
                self.failed_writes += 1;
                self.journal.give_back(outcome.ops, outcome.oldest);
                let delay = backoff_delay(self.retry_base, self.retry_max, self.failures);
                self.failures = self.failures.saturating_add(1);
                Some((delay, error))
            }
        }
    }
}

/// Drives an actor's [`PersistQueue`]: starts a write when none is under way, and when it ends
/// starts the next (or, after a failure, retries after the backoff). `after` hears of each end.
pub fn drive_writes<A>(
    actor: &mut A,
    ctx: &mut Context<A>,
    queue: fn(&mut A) -> Option<&mut PersistQueue>,
    after: fn(&mut A, &mut Context<A>, Option<&StoreError>),
) where
    A: Actor<Context = Context<A>>,
{
    let Some(write) = queue(actor).and_then(PersistQueue::start_write) else {
        return;
    };
    write
        .into_actor(actor)
        .map(move |outcome, actor, ctx| {
            let Some(persist) = queue(actor) else { return };
            match persist.finish_write(outcome) {
                None => {
                    after(actor, ctx, None);
                    drive_writes(actor, ctx, queue, after);
                }
                Some((delay, error)) => {
                    after(actor, ctx, Some(&error));
                    ctx.run_later(delay, move |actor, ctx| {
                        drive_writes(actor, ctx, queue, after)
                    });
                }
            }
        })
        .spawn(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_op(journal: &mut HashJournal) -> JournalOp {
        let mut ops = journal.take(usize::MAX);
        assert_eq!(ops.len(), 1);
        ops.remove(0).1
    }

    #[test]
    fn the_latest_change_of_a_field_wins_but_a_newer_put_survives_an_older_ack() {
        let mut journal = HashJournal::default();
        journal.put("k", "a", 1, "one");
        journal.put("k", "a", 2, "two");
        journal.remove("k", "a", Some(1));
        assert_eq!(
            only_op(&mut journal),
            JournalOp::Put {
                seq: 2,
                value: "two".into()
            }
        );

        journal.put("k", "a", 3, "three");
        journal.remove("k", "a", Some(3));
        assert_eq!(
            only_op(&mut journal),
            JournalOp::Remove { up_to_seq: Some(3) }
        );
    }

    #[test]
    fn writes_take_a_bounded_share_longest_waiting_first() {
        let mut journal = HashJournal::default();
        for field in 0..2_500 {
            journal.put("k", &field.to_string(), 1, "v");
        }
        // A field queued again keeps its place.
        journal.put("k", "0", 2, "newer");
        let first = journal.take(MAX_OPS_PER_WRITE);
        assert_eq!(first.len(), MAX_OPS_PER_WRITE);
        assert_eq!(first[0].0.1, "0");
        assert_eq!(
            first[0].1,
            JournalOp::Put {
                seq: 2,
                value: "newer".into()
            }
        );
        assert_eq!(first[MAX_OPS_PER_WRITE - 1].0.1, "999");
        assert_eq!(journal.len(), 1_500);
        assert_eq!(journal.take(MAX_OPS_PER_WRITE)[0].0.1, "1000");
    }

    #[test]
    fn the_oldest_unwritten_change_is_known_through_takes_give_backs_and_removals() {
        let mut journal = HashJournal::default();
        assert_eq!(journal.oldest_queued(), None);
        journal.put("k", "a", 1, "one");
        let first = journal.oldest_queued().expect("a waits");
        let asked = Instant::now();
        journal.put("k", "b", 1, "one");
        journal.put("k", "a", 2, "two");
        assert_eq!(
            journal.oldest_queued(),
            Some(first),
            "a keeps its first time"
        );

        let (taken, oldest) = journal.take_timed(1);
        assert_eq!(oldest, Some(first));
        let after = journal.oldest_queued().expect("b waits");
        assert!(after > asked, "only changes queued after the ask wait");

        journal.give_back(taken, first);
        assert_eq!(
            journal.oldest_queued(),
            Some(first),
            "the failed write waits again"
        );
        journal.take(usize::MAX);
        assert_eq!(journal.oldest_queued(), None);

        journal.put("k", "c", 1, "one");
        let queued = journal.oldest_queued().expect("c waits");
        journal.remove_behind("k", "c");
        assert!(journal.oldest_queued().expect("the removal waits") >= queued);
        assert_eq!(journal.take(usize::MAX).len(), 1);
        assert_eq!(journal.oldest_queued(), None);
    }

    #[test]
    fn a_failed_write_goes_back_under_newer_changes() {
        let mut journal = HashJournal::default();
        journal.put("k", "a", 1, "one");
        journal.put("k", "b", 1, "one");
        let failed = journal.take(usize::MAX);
        journal.remove("k", "a", Some(1));
        journal.give_back(failed, Instant::now());
        let mut ops = journal.take(usize::MAX);
        ops.sort_by(|left, right| left.0.cmp(&right.0));
        assert_eq!(
            ops[0].1,
            JournalOp::Remove { up_to_seq: Some(1) },
            "the ack came later: it wins"
        );
        assert_eq!(
            ops[1].1,
            JournalOp::Put {
                seq: 1,
                value: "one".into()
            }
        );
    }

    #[test]
    fn a_failed_write_goes_back_first_in_line_in_its_order() {
        let mut journal = HashJournal::default();
        journal.put("outbox", "a", 1, "one");
        journal.put("outbox", "b", 1, "one");
        let failed = journal.take(usize::MAX);
        journal.remove("dead", "a", None);
        journal.put("outbox", "b", 2, "two");
        journal.give_back(failed, Instant::now());
        let order: Vec<(String, String)> = journal
            .take(usize::MAX)
            .into_iter()
            .map(|(field_key, _)| field_key)
            .collect();
        assert_eq!(
            order,
            [
                ("outbox".to_string(), "a".to_string()),
                ("outbox".to_string(), "b".to_string()),
                ("dead".to_string(), "a".to_string()),
            ]
        );
    }

    #[test]
    fn a_delete_queued_behind_a_failed_write_stays_behind_it() {
        let mut journal = HashJournal::default();
        journal.put("dead", "f", 1, "letter");
        journal.remove("outbox", "k", Some(1));
        let failed = journal.take(usize::MAX);
        // A replay meanwhile: the item back in the outbox, then its dead letter removed.
        journal.put("outbox", "k", 2, "again");
        journal.remove_behind("dead", "f");
        journal.give_back(failed, Instant::now());
        let order: Vec<(String, JournalOp)> = journal
            .take(usize::MAX)
            .into_iter()
            .map(|((key, _), op)| (key, op))
            .collect();
        assert_eq!(order[0].0, "outbox", "{order:?}");
        assert_eq!(
            order[1],
            ("dead".to_string(), JournalOp::Remove { up_to_seq: None }),
            "the removal is written after the outbox write"
        );
    }

    #[test]
    fn write_delays_keep_the_longest_wait_and_quantiles_by_bucket() {
        let mut delays = WriteDelays::default();
        for ms in [0, 1, 1, 3, 40] {
            delays.record(Duration::from_millis(ms));
        }
        assert_eq!(delays.last_ms, 40);
        assert_eq!(delays.max_ms, 40);
        assert_eq!(delays.quantile_ms(0.5), Some(1));
        assert_eq!(delays.quantile_ms(0.8), Some(5));
        assert_eq!(delays.quantile_ms(1.0), Some(40), "never above the maximum");
        let mut journal = HashJournal::default();
        journal.put("k", "a", 1, "one");
        let queued = Instant::now();
        journal.put("k", "b", 1, "one");
        journal.put("k", "a", 2, "two");
        let (_, oldest) = journal.take_timed(usize::MAX);
        assert!(
            oldest.is_some_and(|oldest| oldest <= queued),
            "a re-queued field keeps its first time"
        );
    }

    #[test]
    fn sequence_numbers_grow_and_stay_exact_in_lua() {
        let first = next_seq();
        let second = next_seq();
        assert!(second > first);
        assert!(second < 1 << 53);
        assert_eq!(split_stored("17|{\"x\":1}"), Some((17, "{\"x\":1}")));
        assert_eq!(split_stored("nope"), None);
    }
}
