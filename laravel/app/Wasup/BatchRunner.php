<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Database\DetectsConcurrencyErrors;
use Illuminate\Database\DetectsLostConnections;
use Illuminate\Http\JsonResponse;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Log;
use Throwable;

/**
 * Applies a batch in one database transaction, each item in its own savepoint: an item that
 * cannot be stored is rolled back alone and reported in `failed_ids` (wasup retries only those);
 * a failure of the batch as a whole is answered 503, which wasup retries with backoff. Items
 * BatchPayload rejected are not stored at all: they are reported in `failed_ids` too, and in
 * `rejected` with their reason (wasup dead-letters those rather than retrying them). A split
 * call's batch holds one lane (run()), a combined call's several (runLanes()); both go through
 * apply(), so an item is stored the same way whichever call carried it.
 */
final class BatchRunner
{
    /**
     * A split call: `{"success","updated","failed","failed_ids":[ids...],"rejected":{id: reason}}`
     * plus a count of each of the lane's outcomes (`skipped`, `duplicates`).
     */
    public static function run(Lane $lane, Batch $batch): JsonResponse
    {
        $result = self::apply([$lane], $batch->items);
        if ($result === null) {
            return self::unavailable($batch->size());
        }
        [$counts, $notStored] = $result;
        $failedIds = $batch->failedIds($notStored)[$lane->key];

        return self::answer($counts, $failedIds, $batch->rejectedObjects()[$lane->key], count($failedIds));
    }

    /**
     * A combined call: the lanes of `$batch` applied in the order of `$lanes`, all in one
     * transaction. The answer is that of a split call, counts summed over the lanes, with
     * `failed_ids` and `rejected` per lane (`"failed_ids":{"qrs":[session ids],...}`,
     * `"rejected":{"qrs":{id: reason},...}`), one entry, possibly empty, for each lane the request
     * carried.
     *
     * @param list<Lane> $lanes
     */
    public static function runLanes(array $lanes, Batch $batch): JsonResponse
    {
        $result = self::apply($lanes, $batch->items);
        if ($result === null) {
            return self::unavailable($batch->size());
        }
        [$counts, $notStored] = $result;
        $failedIds = $batch->failedIds($notStored);

        return self::answer(
            $counts,
            $failedIds,
            (object) $batch->rejectedObjects(),
            array_sum(array_map('count', $failedIds))
        );
    }

    /**
     * Stores every item of `$batch` with its lane's writer, lane by lane in the order of `$lanes`,
     * in one transaction with a savepoint per item. Answers the count of each outcome and the ids
     * of the items not stored, per lane key (for each lane `$batch` holds), or null when the
     * transaction as a whole failed (nothing stored).
     *
     * @param list<Lane> $lanes
     * @param array<string, list<array<string, mixed>>> $batch
     * @return array{array<string, int>, array<string, list<string>>}|null
     */
    private static function apply(array $lanes, array $batch): ?array
    {
        $lanes = array_values(array_filter(
            $lanes,
            static fn (Lane $lane): bool => array_key_exists($lane->key, $batch)
        ));
        $counts = ['updated' => 0];
        $failedIds = [];
        foreach ($lanes as $lane) {
            $counts += array_fill_keys($lane->outcomes, 0);
            $failedIds[$lane->key] = [];
        }
        try {
            DB::transaction(static function () use ($lanes, $batch, &$counts, &$failedIds): void {
                foreach ($lanes as $lane) {
                    $apply = $lane->writer();
                    foreach ($batch[$lane->key] as $item) {
                        try {
                            $outcome = DB::transaction(static fn (): string => $apply($item));
                            $counts[$outcome] = ($counts[$outcome] ?? 0) + 1;
                        } catch (Throwable $error) {
                            if (self::abortsTransaction($error)) {
                                // A deadlock or a lost connection ends the whole transaction: no
                                // savepoint is left to go on from, so the batch is retried whole.
                                throw $error;
                            }
                            Log::warning('wasup: item not stored', [
                                'lane' => $lane->name,
                                'id' => $lane->id($item),
                                'error' => self::describe($error),
                            ]);
                            $failedIds[$lane->key][] = (string) $lane->id($item);
                        }
                    }
                }
            });
        } catch (Throwable $error) {
            Log::error('wasup: batch not stored', [
                'lane' => implode(',', array_map(static fn (Lane $lane): string => $lane->name, $lanes)),
                'error' => self::describe($error),
            ]);

            return null;
        }

        return [$counts, $failedIds];
    }

    /**
     * `{"success":true,"updated":N,"failed":M,"failed_ids":...,"rejected":...}` plus the other
     * outcome counts.
     *
     * @param array<string, int> $counts
     * @param array<int|string, mixed> $failedIds a list, or lists by lane key
     * @param object $rejected reasons by id, or objects of them by lane key
     * @param int $failed how many items `$failedIds` names
     */
    private static function answer(array $counts, array $failedIds, object $rejected, int $failed): JsonResponse
    {
        return Responses::json([
            'success' => true,
            'updated' => $counts['updated'],
            'failed' => $failed,
            'failed_ids' => $failedIds,
            'rejected' => $rejected,
        ] + $counts);
    }

    /** The answer when the transaction failed as a whole: 503, retried by wasup after Retry-After. */
    private static function unavailable(int $items): JsonResponse
    {
        return Responses::error(503, 'The batch could not be stored; retry it.', [
            'updated' => 0,
            'failed' => $items,
        ], ['Retry-After' => '5']);
    }

    /** Whether an error ends the whole transaction rather than one statement. */
    private static function abortsTransaction(Throwable $error): bool
    {
        $detector = new class () {
            use DetectsConcurrencyErrors;
            use DetectsLostConnections;

            public function check(Throwable $error): bool
            {
                return $this->causedByConcurrencyError($error) || $this->causedByLostConnection($error);
            }
        };

        return $detector->check($error);
    }

    /**
     * An error as logs may show it: its class and code. Not its message: a QueryException's
     * message holds the SQL with its bindings, i.e. message texts and QR images.
     */
    private static function describe(Throwable $error): string
    {
        return $error::class . ' (code ' . (string) $error->getCode() . ')';
    }
}
