//! Dead letters: items Laravel refused for good (a validation error for the item alone, a 4xx
//! for the whole batch such as a wrong URL). They are kept, bounded, so an operator can see them
//! (`GET /dead-letters`) and send them again once the cause is fixed (`POST /dead-letters/replay`).
//!
//! The batch actor holds them in memory and mirrors them into one Redis hash
//! (`wasup:dead_letters`, field `lane|coalescing key` → `seq|json`) through the outbox's journal,
//! written before the outbox forgets the item, so a crash in between keeps it in one place or
//! the other. A newer item of the same session and lane that Laravel accepts supersedes a QR or
//! status dead letter (latest state wins). Past `batch.dead_letters_max` entries or
//! `batch.dead_letters_max_bytes`, the oldest is dropped and counted.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::{
    messages::{Lane, OutboundItem},
    sink::Refused,
    store::{HashJournal, split_stored},
};

/// One dead letter, as stored in Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Laravel's status code (200: refused inside an accepted batch; 0: never sent).
    pub status: u16,
    /// Laravel's reason (never the item's content).
    pub reason: String,
    /// When it was refused, ms since the epoch.
    pub at: u64,
    /// The item itself, to replay.
    pub item: OutboundItem,
}

/// What `GET /dead-letters` shows of a dead letter: where it came from and why, not its content
/// (no QR images, no message texts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// `qr`, `status` or `message`.
    pub lane: &'static str,
    /// The session.
    pub session_id: String,
    /// The coalescing key: the session, or session/message for messages.
    pub key: String,
    /// Laravel's status code.
    pub status: u16,
    /// Laravel's reason.
    pub reason: String,
    /// When it was refused, ms since the epoch.
    pub at: u64,
}

/// Bounds of the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Most dead letters kept.
    pub max_items: usize,
    /// Most bytes (of their JSON) kept.
    pub max_bytes: usize,
}

/// A dead letter held in memory.
#[derive(Debug)]
struct Held {
    /// The sequence number of the refused item.
    seq: u64,
    /// Its JSON size, for the byte bound.
    bytes: usize,
    /// The letter.
    letter: DeadLetter,
}

/// The dead letters, oldest first, by lane and coalescing key.
#[derive(Debug)]
pub struct DeadLetters {
    /// Oldest first.
    held: IndexMap<(Lane, String), Held>,
    /// Sum of `Held::bytes`.
    bytes: usize,
    /// Bounds.
    limits: DeadLetterLimits,
    /// The Redis hash they are mirrored into (`None`: Redis disabled, memory only).
    redis_key: Option<String>,
    /// Dead letters dropped (oldest first) to stay within the bounds, since start.
    pub dropped: u64,
    /// Dead letters replaced by a newer item of their session that Laravel accepted.
    pub superseded: u64,
    /// Dead letters sent again.
    pub replayed: u64,
}

/// The Redis field of a dead letter.
fn field_of(lane: Lane, key: &str) -> String {
    format!("{}|{key}", lane.name())
}

impl DeadLetters {
    /// No dead letters yet, mirrored into `redis_key` when given.
    pub fn new(limits: DeadLetterLimits, redis_key: Option<String>) -> Self {
        Self {
            held: IndexMap::new(),
            bytes: 0,
            limits,
            redis_key,
            dropped: 0,
            superseded: 0,
            replayed: 0,
        }
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Their JSON size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps a refused item (replacing an older dead letter of the same key), queues its write,
    /// and drops the oldest past the bounds.
    pub fn add(
        &mut self,
        refused: Refused,
        seq: u64,
        at: u64,
        mut journal: Option<&mut HashJournal>,
    ) {
        let letter = DeadLetter {
            status: refused.status,
            reason: refused.reason,
            at,
            item: refused.item,
        };
        // Plain data: serialising cannot fail; if it did, the letter stays in memory only.
        let json = serde_json::to_string(&letter).unwrap_or_default();
        let lane = letter.item.lane();
        let key = letter.item.coalescing_key();
        if let (Some(redis_key), Some(journal)) = (&self.redis_key, journal.as_deref_mut())
            && !json.is_empty()
        {
            journal.put(redis_key, &field_of(lane, &key), seq, json.clone());
        }
        self.remove_held(lane, &key, None);
        self.bytes += json.len();
        self.held.insert(
            (lane, key),
            Held {
                seq,
                bytes: json.len(),
                letter,
            },
        );
        self.trim(journal);
    }

    /// A newer item of `key` reached Laravel: an older QR or status dead letter of it no longer
    /// says anything (latest state wins). Messages are each their own key and never superseded.
    pub fn supersede(
        &mut self,
        lane: Lane,
        key: &str,
        seq: u64,
        journal: Option<&mut HashJournal>,
    ) {
        if lane == Lane::Message || self.held.is_empty() {
            return;
        }
        if self.remove_held(lane, key, Some(seq)).is_some() {
            self.superseded += 1;
            self.queue_removal(lane, key, journal);
        }
    }

    /// Takes the dead letters of `lane` (every lane when `None`), oldest first, to send again.
    /// Their Redis copies stay until the caller, having queued the items' outbox writes, calls
    /// [`forget_replayed`](Self::forget_replayed).
    pub fn take(&mut self, lane: Option<Lane>) -> Vec<DeadLetter> {
        let keys: Vec<(Lane, String)> = self
            .held
            .keys()
            .filter(|(of_lane, _)| lane.is_none_or(|lane| lane == *of_lane))
            .cloned()
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for (of_lane, key) in keys {
            if let Some(held) = self.remove_held(of_lane, &key, None) {
                taken.push(held.letter);
            }
        }
        taken
    }

    /// Queues the Redis removal of a taken letter behind everything queued so far (its item's
    /// outbox write in particular), so a crash never leaves it in neither place.
    pub fn forget_replayed(&self, letter: &DeadLetter, journal: Option<&mut HashJournal>) {
        if let (Some(redis_key), Some(journal)) = (&self.redis_key, journal) {
            let field = field_of(letter.item.lane(), &letter.item.coalescing_key());
            journal.remove_behind(redis_key, &field);
        }
    }

    /// Queues the Redis removal of the letter of `key`.
    fn queue_removal(&self, lane: Lane, key: &str, journal: Option<&mut HashJournal>) {
        if let (Some(redis_key), Some(journal)) = (&self.redis_key, journal) {
            journal.remove(redis_key, &field_of(lane, key), None);
        }
    }

    /// The newest `limit` dead letters of `lane` (every lane when `None`), newest first.
    pub fn list(&self, lane: Option<Lane>, limit: usize) -> Vec<DeadLetterView> {
        self.held
            .iter()
            .rev()
            .filter(|((of_lane, _), _)| lane.is_none_or(|lane| lane == *of_lane))
            .take(limit)
            .map(|((of_lane, key), held)| DeadLetterView {
                lane: of_lane.name(),
                session_id: held.letter.item.session_id.to_string(),
                key: key.clone(),
                status: held.letter.status,
                reason: held.letter.reason.clone(),
                at: held.letter.at,
            })
            .collect()
    }

    /// Takes in what an earlier run stored in Redis (`HGETALL` of the hash): unreadable entries
    /// are removed, the rest kept oldest first within the bounds.
    pub fn load(&mut self, entries: Vec<(String, String)>, mut journal: Option<&mut HashJournal>) {
        let mut letters = Vec::with_capacity(entries.len());
        for (field, stored) in entries {
            let parsed = split_stored(&stored).and_then(|(seq, json)| {
                let letter: DeadLetter = serde_json::from_str(json).ok()?;
                Some((seq, json.len(), letter))
            });
            match parsed {
                Some(parsed) => letters.push(parsed),
                None => {
                    if let (Some(redis_key), Some(journal)) =
                        (&self.redis_key, journal.as_deref_mut())
                    {
                        journal.remove(redis_key, &field, None);
                    }
                }
            }
        }
        letters.sort_by_key(|(seq, _, letter)| (letter.at, *seq));
        // Letters refused in this run (before Redis answered) are newer: they stay, after these.
        let this_run = std::mem::take(&mut self.held);
        for (seq, bytes, letter) in letters {
            let lane = letter.item.lane();
            let key = letter.item.coalescing_key();
            if this_run.contains_key(&(lane, key.clone())) {
                continue;
            }
            self.bytes += bytes;
            self.held.insert((lane, key), Held { seq, bytes, letter });
        }
        self.held.extend(this_run);
        self.trim(journal);
    }

    /// Removes the letter of `key` (only if older than `newer_than`, when given).
    fn remove_held(&mut self, lane: Lane, key: &str, newer_than: Option<u64>) -> Option<Held> {
        let index = self.held.get_index_of(&(lane, key.to_string()))?;
        if newer_than.is_some_and(|seq| self.held[index].seq >= seq) {
            return None;
        }
        let (_, held) = self.held.shift_remove_index(index)?;
        self.bytes -= held.bytes;
        Some(held)
    }

    /// Drops the oldest letters past the bounds.
    fn trim(&mut self, mut journal: Option<&mut HashJournal>) {
        while self.held.len() > self.limits.max_items
            || (self.bytes > self.limits.max_bytes && self.held.len() > 1)
        {
            let Some(((lane, key), held)) = self.held.shift_remove_index(0) else {
                break;
            };
            self.bytes -= held.bytes;
            self.dropped += 1;
            self.queue_removal(lane, &key, journal.as_deref_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        messages::{EstadoQr, IncomingMessage, Payload},
        store::JournalOp,
    };

    fn status(session: &str) -> OutboundItem {
        OutboundItem {
            session_id: session.into(),
            payload: Payload::Status {
                estado_qr: EstadoQr::Active,
            },
            user_id: None,
            timestamp: 1,
        }
    }

    fn message(id: &str) -> OutboundItem {
        OutboundItem {
            session_id: "s".into(),
            payload: Payload::Message(IncomingMessage {
                message_id: id.into(),
                from: "a".into(),
                to: "b".into(),
                kind: "text".into(),
                text: Some("x".repeat(100)),
            }),
            user_id: None,
            timestamp: 1,
        }
    }

    fn refused(item: OutboundItem) -> Refused {
        Refused {
            item,
            status: 422,
            reason: "HTTP 422: bad".into(),
        }
    }

    fn limits(max_items: usize) -> DeadLetterLimits {
        DeadLetterLimits {
            max_items,
            max_bytes: usize::MAX,
        }
    }

    #[test]
    fn the_oldest_are_dropped_past_the_bound_and_counted() {
        let mut journal = HashJournal::default();
        let mut letters = DeadLetters::new(limits(3), Some("dl".into()));
        for id in 0..5u64 {
            letters.add(
                refused(message(&id.to_string())),
                id,
                id,
                Some(&mut journal),
            );
        }
        assert_eq!(letters.len(), 3);
        assert_eq!(letters.dropped, 2);
        let keys: Vec<String> = letters
            .list(None, 10)
            .into_iter()
            .map(|view| view.key)
            .collect();
        assert_eq!(keys, ["s/b/a/4", "s/b/a/3", "s/b/a/2"], "newest first");
        let ops = journal.take(usize::MAX);
        let removed: Vec<&str> = ops
            .iter()
            .filter(|(_, op)| matches!(op, JournalOp::Remove { .. }))
            .map(|((_, field), _)| field.as_str())
            .collect();
        assert_eq!(removed, ["message|s/b/a/0", "message|s/b/a/1"]);
    }

    #[test]
    fn a_byte_bound_holds_too() {
        let mut letters = DeadLetters::new(
            DeadLetterLimits {
                max_items: 100,
                max_bytes: 1_000,
            },
            None,
        );
        for id in 0..20u64 {
            letters.add(refused(message(&id.to_string())), id, id, None);
        }
        assert!(letters.bytes() <= 1_000, "{}", letters.bytes());
        assert!(letters.dropped > 0);
    }

    #[test]
    fn a_newer_accepted_status_supersedes_an_older_dead_letter_only() {
        let mut letters = DeadLetters::new(limits(10), None);
        letters.add(refused(status("a")), 5, 1, None);
        letters.supersede(Lane::Status, "a", 4, None);
        assert_eq!(letters.len(), 1, "an older item does not supersede");
        letters.supersede(Lane::Status, "a", 6, None);
        assert!(letters.is_empty());
        assert_eq!(letters.superseded, 1);
        letters.add(refused(message("m")), 7, 1, None);
        letters.supersede(Lane::Message, "s/b/a/m", 8, None);
        assert_eq!(letters.len(), 1, "messages are never superseded");
    }

    #[test]
    fn taking_by_lane_leaves_the_others_and_removes_them_behind_the_outbox_write() {
        let mut journal = HashJournal::default();
        let mut letters = DeadLetters::new(limits(10), Some("dl".into()));
        letters.add(refused(status("a")), 1, 1, Some(&mut journal));
        letters.add(refused(message("m")), 2, 2, Some(&mut journal));
        let taken = letters.take(Some(Lane::Message));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].item, message("m"));
        assert_eq!(letters.len(), 1);
        journal.put("outbox", "s/m", 3, "again");
        letters.forget_replayed(&taken[0], Some(&mut journal));
        let ops = journal.take(usize::MAX);
        let fields: Vec<&str> = ops.iter().map(|((_, field), _)| field.as_str()).collect();
        assert_eq!(
            fields,
            ["status|a", "s/m", "message|s/b/a/m"],
            "the removal goes behind the outbox write, even over its own queued put"
        );
    }

    #[test]
    fn what_redis_held_comes_back_oldest_first_and_junk_is_cleared() {
        let mut journal = HashJournal::default();
        let mut source = DeadLetters::new(limits(10), Some("dl".into()));
        source.add(refused(message("old")), 1, 10, Some(&mut journal));
        source.add(refused(message("new")), 2, 20, Some(&mut journal));
        let mut stored: Vec<(String, String)> = journal
            .take(usize::MAX)
            .into_iter()
            .filter_map(|((_, field), op)| match op {
                JournalOp::Put { seq, value } => Some((field, format!("{seq}|{value}"))),
                _ => None,
            })
            .collect();
        stored.reverse();
        stored.push(("message|junk".into(), "not a letter".into()));
        let mut loaded = DeadLetters::new(limits(10), Some("dl".into()));
        loaded.load(stored, Some(&mut journal));
        let keys: Vec<String> = loaded
            .list(None, 10)
            .into_iter()
            .map(|view| view.key)
            .collect();
        assert_eq!(keys, ["s/b/a/new", "s/b/a/old"]);
        let ops = journal.take(usize::MAX);
        assert_eq!(ops.len(), 1, "the unreadable entry is removed");
        assert_eq!(ops[0].0.1, "message|junk");
    }
}
