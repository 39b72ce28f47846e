//! The durable outbox: every item the batch actor accepts is written to a Redis hash per lane
//! (coalescing key, i.e. session or session/message → `seq|item`) and leaves it only once Laravel acknowledged it (or refused it for good),
//! by a compare-and-delete on its sequence number, so a newer item is never deleted by an older
//! acknowledgement. On start, whatever is in the hashes is delivered again (at-least-once).

use deadpool_redis::redis;

use crate::{
    messages::{Lane, OutboundItem},
    store::{Keys, PersistQueue, RedisPool, RepeatGate, StoreError, StoredValue, split_stored},
};

/// A hash's fields and values, as `HGETALL` answers.
pub type HashEntries = Vec<(String, String)>;

/// The outbox's journal and where it writes.
pub struct DurableOutbox {
    /// Journal and write loop.
    pub queue: PersistQueue,
    /// Key names.
    keys: Keys,
    /// The pool, for recovery reads.
    pool: RedisPool,
    /// Whether the items stored by an earlier run were loaded.
    pub recovered: bool,
    /// Says once (then once a minute) that the outbox cannot be read yet.
    pub unreadable_log: RepeatGate,
}

/// What an earlier run left in Redis.
pub struct Recovered {
    /// Undelivered items, oldest first.
    pub items: Vec<StoredItem>,
    /// The dead letters hash, as `HGETALL` answers it.
    pub dead_letters: HashEntries,
}

/// An item read back from the outbox.
pub struct StoredItem {
    /// The hash field it was stored under (an older release keyed messages differently).
    pub field: String,
    /// Its lane.
    pub lane: Lane,
    /// Its sequence number.
    pub seq: u64,
    /// The item.
    pub item: OutboundItem,
}

impl DurableOutbox {
    /// An outbox writing through `queue`'s pool.
    pub fn new(pool: RedisPool, keys: Keys, queue: PersistQueue) -> Self {
        Self {
            queue,
            keys,
            pool,
            recovered: false,
            unreadable_log: RepeatGate::default(),
        }
    }

    /// Queues the write of an accepted item. It waits as the item itself (sharing a QR's
    /// rendering) and is serialised when its write is built.
    pub fn record(&mut self, item: &OutboundItem, seq: u64) {
        let key = self.keys.outbox(item.lane());
        self.queue.journal().put(
            &key,
            &item.coalescing_key(),
            seq,
            StoredValue::json(item.clone()),
        );
    }

    /// Moves a recovered item stored under another field (messages were keyed by session and id
    /// before) to its coalescing key, so its acknowledgement deletes it.
    pub fn rekey(&mut self, old_field: &str, item: &OutboundItem, seq: u64) {
        self.record(item, seq);
        let key = self.keys.outbox(item.lane());
        self.queue.journal().remove(&key, old_field, None);
    }

    /// Queues the removal of an item that left for good, unless a newer one replaced it.
    pub fn forget(&mut self, lane: Lane, item_key: &str, seq: u64) {
        let key = self.keys.outbox(lane);
        self.queue.journal().remove(&key, item_key, Some(seq));
    }

    /// The Redis hash of dead letters.
    pub fn dead_letters_key(&self) -> String {
        self.keys.dead_letters()
    }

    /// Reads every stored item (every lane) and the dead letters. Unreadable items are skipped.
    pub fn load(
        &self,
    ) -> impl std::future::Future<Output = Result<Recovered, StoreError>> + 'static {
        let pool = self.pool.clone();
        let keys = Lane::ALL.map(|lane| self.keys.outbox(lane));
        let dead_letters_key = self.keys.dead_letters();
        async move {
            let mut pipeline = redis::pipe();
            for key in &keys {
                pipeline.hgetall(key);
            }
            pipeline.hgetall(&dead_letters_key);
            let (qrs, statuses, messages, dead_letters): (
                HashEntries,
                HashEntries,
                HashEntries,
                HashEntries,
            ) = pool.pipeline(&pipeline).await?;
            let parse = |lane: Lane, entries: HashEntries| {
                entries.into_iter().filter_map(move |(field, stored)| {
                    let (seq, json) = split_stored(&stored)?;
                    let item: OutboundItem = serde_json::from_str(json).ok()?;
                    Some(StoredItem {
                        field,
                        lane,
                        seq,
                        item,
                    })
                })
            };
            // By sequence number: recovered items keep their arrival order (messages, in
            // particular, stay in order per session).
            let mut items: Vec<StoredItem> = parse(Lane::Qr, qrs)
                .chain(parse(Lane::Status, statuses))
                .chain(parse(Lane::Message, messages))
                .collect();
            items.sort_unstable_by_key(|item| item.seq);
            Ok(Recovered {
                items,
                dead_letters,
            })
        }
    }
}
