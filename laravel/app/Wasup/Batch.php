<?php

declare(strict_types=1);

namespace App\Wasup;

/**
 * A batch as BatchPayload checked it: the items that passed their lane's rules, and why the
 * others were rejected. Rejected items are never stored; the answer names them both in
 * `failed_ids` and in `rejected`. wasup dead-letters the ids in `rejected` (sending them again
 * would be refused again) and retries the other `failed_ids` (refused by the database, which may
 * take them later). So one bad item never costs the others their place.
 */
final class Batch
{
    /**
     * @param array<string, list<array<string, mixed>>> $items the valid items by lane key, one
     *        list (possibly empty) for each lane the request carried
     * @param array<string, array<string, string>> $rejected for the same lane keys, the reason
     *        each rejected item was refused, by its id (PHP turns numeric ids into int keys)
     */
    public function __construct(
        public readonly array $items,
        public readonly array $rejected,
    ) {
    }

    /**
     * One item already validated as a whole (the legacy single-item calls).
     *
     * @param array<string, mixed> $item
     */
    public static function one(Lane $lane, array $item): self
    {
        return new self([$lane->key => [$item]], [$lane->key => []]);
    }

    /** How many items the request carried, the rejected ones included. */
    public function size(): int
    {
        return array_sum(array_map('count', $this->items)) + array_sum(array_map('count', $this->rejected));
    }

    /**
     * `failed_ids` by lane key: the rejected items' ids, then those of `$notStored` (items the
     * database refused), each id once, as strings.
     *
     * @param array<string, list<string>> $notStored ids by lane key
     * @return array<string, list<string>>
     */
    public function failedIds(array $notStored): array
    {
        $failed = [];
        foreach (array_keys($this->items) as $key) {
            $rejected = array_map('strval', array_keys($this->rejected[$key] ?? []));
            $failed[$key] = array_values(array_unique(array_merge($rejected, $notStored[$key] ?? [])));
        }

        return $failed;
    }

    /**
     * `rejected` by lane key, each lane's reasons as an object: an empty or list-shaped PHP array
     * (ids "0", "1", ...) would encode as a JSON list, and wasup reads a map from id to reason.
     *
     * @return array<string, object>
     */
    public function rejectedObjects(): array
    {
        $objects = [];
        foreach (array_keys($this->items) as $key) {
            $objects[$key] = (object) ($this->rejected[$key] ?? []);
        }

        return $objects;
    }
}
