//! Laravel's word on single items of a stored batch: `failed_ids` (not stored, retried) and
//! `rejected` (refused for good, with a reason), as a flat list for the split calls or one per
//! lane key for the combined call.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::request::{MAX_REASON_CHARS, lane_key};
use crate::messages::{Lane, OutboundItem};

/// Items Laravel listed in `failed_ids`: a flat list (split calls; ids of the request's lane) or,
/// for the combined call, one list per lane key. Those also listed in `rejected` (id → reason)
/// were refused for good (they failed validation); the others failed to store and are retried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedIds {
    /// Ids from a flat list: they match an item of any lane.
    pub any_lane: HashSet<String>,
    /// Ids per lane, by [`Lane::index`].
    pub by_lane: [HashSet<String>; 3],
    /// `rejected` as a flat map (split calls): id → Laravel's reason.
    pub rejected_any_lane: HashMap<String, String>,
    /// `rejected` per lane, by [`Lane::index`].
    pub rejected_by_lane: [HashMap<String, String>; 3],
}

impl FailedIds {
    /// Whether Laravel could not store `item` (for now or for good).
    pub fn contains(&self, item: &OutboundItem) -> bool {
        let id = item.ack_id();
        self.any_lane.contains(id)
            || self.by_lane[item.lane().index()].contains(id)
            || self.rejection(item).is_some()
    }

    /// Why Laravel refused `item` for good, when it did.
    pub fn rejection(&self, item: &OutboundItem) -> Option<&str> {
        let id = item.ack_id();
        self.rejected_any_lane
            .get(id)
            .or_else(|| self.rejected_by_lane[item.lane().index()].get(id))
            .map(String::as_str)
    }

    /// How many items Laravel named as failed or rejected (an id once per lane it is named in).
    pub fn named(&self) -> usize {
        let distinct = |ids: &HashSet<String>, rejected: &HashMap<String, String>| {
            ids.len() + rejected.keys().filter(|id| !ids.contains(*id)).count()
        };
        distinct(&self.any_lane, &self.rejected_any_lane)
            + (0..3)
                .map(|lane| distinct(&self.by_lane[lane], &self.rejected_by_lane[lane]))
                .sum::<usize>()
    }

    /// Whether no item failed.
    pub fn is_empty(&self) -> bool {
        self.any_lane.is_empty()
            && self.by_lane.iter().all(HashSet::is_empty)
            && self.rejected_any_lane.is_empty()
            && self.rejected_by_lane.iter().all(HashMap::is_empty)
    }

    /// Ids of a flat list (split calls).
    pub fn flat(ids: impl IntoIterator<Item = String>) -> Self {
        Self {
            any_lane: ids.into_iter().collect(),
            ..Self::default()
        }
    }
}

/// An id as Laravel wrote it: strings as they are, numbers in decimal.
fn id_text(id: Value) -> String {
    match id {
        Value::String(id) => id,
        other => other.to_string(),
    }
}

/// The lane a combined answer's key names (`qrs` or `qr`, ...).
fn lane_named(key: &str) -> Option<Lane> {
    Lane::ALL
        .into_iter()
        .find(|lane| lane_key(*lane) == key || lane.name() == key)
}

/// `failed_ids` as a flat list, or per lane key (`{"qrs":[...],"statuses":[...],...}`).
pub(super) fn read_failed_ids(ids: Value, failed: &mut FailedIds) {
    let list = |ids: Value| match ids {
        Value::Array(ids) => ids.into_iter().map(id_text).collect(),
        _ => HashSet::new(),
    };
    match ids {
        Value::Object(by_key) => {
            for (key, ids) in by_key {
                if let Some(lane) = lane_named(&key) {
                    failed.by_lane[lane.index()] = list(ids);
                }
            }
        }
        ids => failed.any_lane = list(ids),
    }
}

/// `rejected` as a flat map (`{"id":"reason"}`) or per lane key (`{"qrs":{"id":"reason"}}`).
pub(super) fn read_rejected(rejected: Value, failed: &mut FailedIds) {
    let reasons = |by_id: Map<String, Value>| -> HashMap<String, String> {
        by_id
            .into_iter()
            .map(|(id, reason)| {
                let reason = match reason {
                    Value::String(reason) => reason,
                    other => other.to_string(),
                };
                (id, reason.chars().take(MAX_REASON_CHARS).collect())
            })
            .collect()
    };
    let Value::Object(map) = rejected else { return };
    let per_lane = !map.is_empty()
        && map
            .iter()
            .all(|(key, value)| lane_named(key).is_some() && value.is_object());
    if per_lane {
        for (key, by_id) in map {
            if let (Some(lane), Value::Object(by_id)) = (lane_named(&key), by_id) {
                failed.rejected_by_lane[lane.index()] = reasons(by_id);
            }
        }
    } else {
        failed.rejected_any_lane = reasons(map);
    }
}
