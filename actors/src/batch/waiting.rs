//! The items waiting in one lane, indexed so that every question the scheduler asks costs
//! O(log n) or O(batch), never a scan of the lane: at 100k sessions a lane holds 100k items and
//! the scheduler asks many times a second.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use super::lane::Timing;
use crate::messages::OutboundItem;

/// `by` before `instant`, or `instant` itself if that is before the clock's start: when an item
/// due at Laravel by a deadline must leave, `by` being the expected request latency.
pub(super) fn earlier_by(instant: Instant, by: Duration) -> Instant {
    instant.checked_sub(by).unwrap_or(instant)
}

/// An item waiting in a lane.
#[derive(Clone, Debug)]
pub(super) struct Waiting {
    /// What goes to Laravel.
    pub(super) item: OutboundItem,
    /// When it must leave and arrive.
    pub(super) timing: Timing,
    /// Failed deliveries of this session's item so far (drives its retry delay).
    pub(super) attempts: u32,
    /// Sequence number of the item (its version in the durable outbox).
    pub(super) seq: u64,
    /// An urgent status is (or was, before coalescing) in this slot: it goes first.
    pub(super) urgent: bool,
}

/// Where an item sits in its group's pick order (urgent items form one group, the others a
/// second): the soonest deadline, then the oldest version, then arrival. `slot` is unique and
/// grows with arrival.
type PickKey = (Instant, u64, u64);

/// A waiting item and its arrival slot.
#[derive(Debug)]
struct Entry {
    waiting: Waiting,
    slot: u64,
}

impl Entry {
    fn pick_key(&self) -> PickKey {
        (self.waiting.timing.deadline, self.waiting.seq, self.slot)
    }

    /// Its pick group: 0 urgent (picked first), 1 the others.
    fn group(&self) -> usize {
        usize::from(!self.waiting.urgent)
    }
}

/// Waiting items by coalescing key, with their pick order, arrival order and send-by times.
#[derive(Debug, Default)]
pub(super) struct WaitingSet {
    /// The items by coalescing key.
    entries: HashMap<String, Entry>,
    /// Coalescing keys in pick order: urgent items, then the others.
    by_pick: [BTreeMap<PickKey, String>; 2],
    /// Coalescing keys in arrival order (the oldest is dropped on overflow).
    by_arrival: BTreeMap<u64, String>,
    /// `send_by` times, for the earliest one.
    by_send_by: BTreeSet<(Instant, u64)>,
    /// The next arrival slot.
    next_slot: u64,
}

impl WaitingSet {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest deadline of an urgent item, if one waits.
    pub(super) fn earliest_urgent_deadline(&self) -> Option<Instant> {
        self.by_pick[0].first_key_value().map(|(key, _)| key.0)
    }

    pub(super) fn get(&self, key: &str) -> Option<&Waiting> {
        self.entries.get(key).map(|entry| &entry.waiting)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Adds `waiting` under `key` as the newest arrival (the key must not wait already).
    pub(super) fn insert(&mut self, key: String, waiting: Waiting) {
        let slot = self.next_slot;
        self.next_slot += 1;
        let entry = Entry { waiting, slot };
        self.index(&key, &entry);
        if let Some(replaced) = self.entries.insert(key, entry) {
            // Not expected; keep the indexes true if it happens.
            self.unindex(&replaced);
        }
    }

    /// Changes the item waiting under `key` in place (it keeps its arrival slot).
    pub(super) fn update(&mut self, key: &str, change: impl FnOnce(&mut Waiting)) {
        let Some(mut entry) = self.entries.remove(key) else {
            return;
        };
        self.unindex(&entry);
        change(&mut entry.waiting);
        self.index(key, &entry);
        self.entries.insert(key.to_string(), entry);
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<Waiting> {
        let entry = self.entries.remove(key)?;
        self.unindex(&entry);
        Some(entry.waiting)
    }

    /// Removes the item that arrived first.
    pub(super) fn pop_oldest(&mut self) -> Option<(String, Waiting)> {
        let key = self.by_arrival.values().next()?.clone();
        let waiting = self.remove(&key)?;
        Some((key, waiting))
    }

    /// When the first item must leave, items leaving `lead` before their deadline.
    pub(super) fn earliest_send_at(&self, lead: Duration) -> Option<Instant> {
        let send_by = self.by_send_by.first().map(|(at, _)| *at)?;
        let deadline = self.earliest_deadline()?;
        Some(send_by.min(earlier_by(deadline, lead)))
    }

    /// The earliest deadline: the first of the urgent items' and of the others'.
    pub(super) fn earliest_deadline(&self) -> Option<Instant> {
        self.by_pick
            .iter()
            .filter_map(|group| group.first_key_value().map(|(key, _)| key.0))
            .min()
    }

    /// Whether, sending `per_request` items per request and one request every `request_every`
    /// from `now`, one of the first `horizon` items in pick order would leave after its deadline
    /// less `lead`: the usual batch size cannot keep up (a backlog after an outage, or a wave of
    /// QRs from sessions that started together), so batches should grow.
    pub(super) fn late_at_pace(
        &self,
        now: Instant,
        lead: Duration,
        per_request: usize,
        request_every: Duration,
        horizon: usize,
    ) -> bool {
        let per_request = per_request.max(1);
        // The first request leaves now: only the items of the later ones can be late for want
        // of a larger batch.
        self.by_pick
            .iter()
            .flat_map(BTreeMap::keys)
            .take(horizon)
            .enumerate()
            .skip(per_request)
            .any(|(index, key)| {
                let later = u32::try_from(index / per_request).unwrap_or(u32::MAX);
                let leaves = now + request_every.saturating_mul(later);
                leaves > earlier_by(key.0, lead)
            })
    }

    /// Takes up to `max_items` items in pick order; items `keep` refuses are removed and handed to
    /// `refused` instead (they do not count toward `max_items`).
    pub(super) fn take(
        &mut self,
        max_items: usize,
        mut keep: impl FnMut(&Waiting) -> bool,
        mut refused: impl FnMut(String, Waiting),
    ) -> Vec<(String, Waiting, u64)> {
        let mut taken = Vec::with_capacity(max_items.min(self.len()));
        while taken.len() < max_items {
            let Some((group, pick, key)) =
                self.by_pick.iter().enumerate().find_map(|(group, picks)| {
                    picks
                        .first_key_value()
                        .map(|(pick, key)| (group, *pick, key.clone()))
                })
            else {
                break;
            };
            let Some(entry) = self.entries.remove(&key) else {
                // An index row without its entry (it should not happen): drop the row, so the
                // set never claims items it cannot hand out.
                self.by_pick[group].remove(&pick);
                continue;
            };
            self.unindex(&entry);
            if keep(&entry.waiting) {
                taken.push((key, entry.waiting, entry.slot));
            } else {
                refused(key, entry.waiting);
            }
        }
        taken
    }

    fn index(&mut self, key: &str, entry: &Entry) {
        self.by_pick[entry.group()].insert(entry.pick_key(), key.to_string());
        self.by_arrival.insert(entry.slot, key.to_string());
        self.by_send_by
            .insert((entry.waiting.timing.send_by, entry.slot));
    }

    fn unindex(&mut self, entry: &Entry) {
        self.by_pick[entry.group()].remove(&entry.pick_key());
        self.by_arrival.remove(&entry.slot);
        self.by_send_by
            .remove(&(entry.waiting.timing.send_by, entry.slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{EstadoQr, Payload};

    fn waiting(session: &str, deadline: Instant, seq: u64, urgent: bool) -> Waiting {
        Waiting {
            item: OutboundItem {
                session_id: session.into(),
                payload: Payload::Status {
                    estado_qr: EstadoQr::Pending,
                },
                user_id: None,
                timestamp: 0,
            },
            timing: Timing {
                send_by: deadline,
                deadline,
            },
            attempts: 0,
            seq,
            urgent,
        }
    }

    /// Random inserts, updates, removals and takes against a plain list sorted on every question.
    #[test]
    fn answers_like_a_sorted_list_under_random_churn() {
        let start = Instant::now();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut set = WaitingSet::default();
        // The model: key, deadline, seq, urgent, arrival.
        let mut model: Vec<(String, Instant, u64, bool, u64)> = Vec::new();
        let mut arrival = 0;
        for step in 0..4_000u64 {
            let key = format!("s{}", rng.u32(..300));
            let deadline = start + Duration::from_millis(rng.u64(..5_000));
            let urgent = rng.u8(..10) == 0;
            match rng.u8(..10) {
                0..=4 => {
                    if let Some(row) = model.iter_mut().find(|row| row.0 == key) {
                        set.update(&key, |waiting| {
                            waiting.timing.deadline = waiting.timing.deadline.min(deadline);
                            waiting.timing.send_by = waiting.timing.deadline;
                            waiting.seq = step;
                            waiting.urgent |= urgent;
                        });
                        row.1 = row.1.min(deadline);
                        row.2 = step;
                        row.3 |= urgent;
                    } else {
                        set.insert(key.clone(), waiting(&key, deadline, step, urgent));
                        model.push((key, deadline, step, urgent, arrival));
                        arrival += 1;
                    }
                }
                5 | 6 => {
                    let removed = set.remove(&key).is_some();
                    let before = model.len();
                    model.retain(|row| row.0 != key);
                    assert_eq!(removed, model.len() < before);
                }
                7 => {
                    let oldest = set.pop_oldest().map(|(key, _)| key);
                    let expected = model
                        .iter()
                        .min_by_key(|row| row.4)
                        .map(|row| row.0.clone());
                    assert_eq!(oldest, expected);
                    model.retain(|row| Some(&row.0) != expected.as_ref());
                }
                _ => {
                    let count = rng.usize(..20);
                    let taken: Vec<String> = set
                        .take(count, |_| true, |_, _| {})
                        .into_iter()
                        .map(|(key, ..)| key)
                        .collect();
                    model.sort_by_key(|row| (!row.3, row.1, row.2, row.4));
                    let expected: Vec<String> = model
                        .drain(..count.min(model.len()))
                        .map(|row| row.0)
                        .collect();
                    assert_eq!(taken, expected, "step {step}");
                }
            }
            assert_eq!(set.len(), model.len());
            let urgent_deadline = model.iter().filter(|row| row.3).map(|row| row.1).min();
            assert_eq!(set.earliest_urgent_deadline(), urgent_deadline);
            let lead = Duration::from_millis(300);
            let expected = model
                .iter()
                .map(|row| row.1.min(row.1.checked_sub(lead).unwrap_or(row.1)))
                .min();
            assert_eq!(set.earliest_send_at(lead), expected);
            let now = start + Duration::from_millis(2_500);
            let every = Duration::from_millis(200);
            model.sort_by_key(|row| (!row.3, row.1, row.2, row.4));
            let late = model
                .iter()
                .enumerate()
                .skip(10)
                .take(90)
                .any(|(index, row)| {
                    now + every * u32::try_from(index / 10).expect("small") > row.1 - lead
                });
            assert_eq!(set.late_at_pace(now, lead, 10, every, 100), late);
        }
    }
}
