//! How far a batch Laravel refuses as a whole (400, 413, 422) is split to find its refused
//! items: cheap while Laravel may be refusing everything, thorough once it accepted a part.

/// Splits allowed while narrowing a refused batch of `items` down to its refused items. Until
/// Laravel accepted a part of the batch, about two per halving level plus a few (a 50-item
/// batch: 16), so a Laravel refusing everything (a new rule, a wrong body) costs a handful of
/// requests; once it accepted a part, the refusal is about some items only, and as many splits
/// as isolating every item takes (`items - 1`, at most `2 * items - 1` requests in all), so
/// however many bad items a backlog holds, no good one is dead-lettered with them.
pub(super) fn narrowing_budget(items: usize, accepted_a_part: bool) -> usize {
    if accepted_a_part {
        return items.saturating_sub(1);
    }
    let levels = usize::BITS - items.max(1).leading_zeros();
    2 * levels as usize + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_splits_until_a_part_is_accepted_then_enough_to_isolate_every_item() {
        assert_eq!(narrowing_budget(50, false), 16);
        assert_eq!(narrowing_budget(500, false), 22);
        assert_eq!(narrowing_budget(1, false), 6);
        // A binary split tree over N items has N - 1 inner nodes.
        assert_eq!(narrowing_budget(50, true), 49);
        assert_eq!(narrowing_budget(0, true), 0);
    }
}
