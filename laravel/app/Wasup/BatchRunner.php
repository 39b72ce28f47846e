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
 * a failure of the batch as a whole is answered 503, which wasup retries with backoff.
 */
final class BatchRunner
{
    /**
     * Runs `$apply` on every item; it answers one of `$outcomes` (e.g. `updated`, `skipped`), each
     * counted in the answer. `$idField` names the item field reported in `failed_ids`.
     *
     * @param list<array<string, mixed>> $items
     * @param callable(array<string, mixed>): string $apply
     * @param list<string> $outcomes
     */
    public static function run(
        string $lane,
        array $items,
        string $idField,
        callable $apply,
        array $outcomes
    ): JsonResponse {
        $counts = array_fill_keys($outcomes, 0);
        $failedIds = [];
        try {
            DB::transaction(function () use ($items, $idField, $apply, &$counts, &$failedIds, $lane): void {
                foreach ($items as $item) {
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
                            'lane' => $lane,
                            'id' => $item[$idField] ?? null,
                            'error' => $error->getMessage(),
                        ]);
                        $failedIds[] = (string) $item[$idField];
                    }
                }
            });
        } catch (Throwable $error) {
            Log::error('wasup: batch not stored', ['lane' => $lane, 'error' => $error->getMessage()]);

            return Responses::error(503, 'The batch could not be stored; retry it.', [
                'updated' => 0,
                'failed' => count($items),
            ], ['Retry-After' => '5']);
        }
        $failedIds = array_values(array_unique($failedIds));

        return Responses::json([
            'success' => true,
            'updated' => $counts['updated'] ?? 0,
            'failed' => count($failedIds),
            'failed_ids' => $failedIds,
        ] + $counts);
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
}
