<?php

declare(strict_types=1);

namespace App\Http\Middleware\Wasup;

use App\Wasup\Responses;
use App\Wasup\Settings;
use Closure;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Log;
use PDOException;
use Symfony\Component\HttpFoundation\Response;
use Throwable;

/**
 * `wasup.once`: each batch is applied at most once.
 *
 * - A repeated `Idempotency-Key` (wasup's retry of a batch it got no answer for) gets the stored
 *   answer back, with `Idempotent-Replayed: true`, and nothing is applied again; the same key with
 *   a different body is refused with 422. Checked first: a retry within the same second carries
 *   the same signature, and must get its answer, not a 409.
 * - Otherwise a signature already used (a captured request sent again under a new key) is
 *   refused with 409.
 * - The batch and the record of it (key, signature, answer) are written in one transaction, so a
 *   batch that failed (non-2xx) leaves no trace and its retry is processed normally.
 */
final class EnsureOnce
{
    public function handle(Request $request, Closure $next): Response
    {
        $key = trim((string) $request->header('Idempotency-Key', ''));
        if (strlen($key) > 191) {
            return Responses::error(422, 'Idempotency-Key is longer than 191 characters.');
        }
        $key = $key === '' ? null : $key;
        $signature = $request->attributes->get(VerifyWasupSignature::ATTRIBUTE);
        $route = $request->method() . ' ' . $request->path();
        $bodyHash = hash('sha256', $request->getContent());
        $this->prune();

        $earlier = $this->earlier($route, $key, $signature, $bodyHash);
        if ($earlier !== null) {
            return $earlier;
        }

        $connection = DB::connection();
        $level = $connection->transactionLevel();
        $connection->beginTransaction();
        try {
            $response = $next($request);
            if (!$response->isSuccessful()) {
                $this->rollBackTo($level);

                return $response;
            }
            DB::table(Settings::REQUESTS_TABLE)->insert([
                'route' => $route,
                'idempotency_key' => $key,
                'signature' => $signature,
                'body_hash' => $bodyHash,
                'status' => $response->getStatusCode(),
                'response' => (string) $response->getContent(),
                'created_at' => now(),
            ]);
            $connection->commit();

            return $response;
        } catch (PDOException $error) {
            // Most likely a concurrent copy of this request committed first (unique key or
            // signature): answer as if this one had arrived second. Otherwise the database
            // failed (locked, commit refused): 503, which wasup retries.
            $this->rollBackTo($level);
            $earlier = $this->earlier($route, $key, $signature, $bodyHash);
            if ($earlier !== null) {
                return $earlier;
            }
            Log::error('wasup: request not recorded', ['route' => $route, 'error' => $error->getMessage()]);

            return Responses::error(503, 'The batch could not be stored; retry it.', [], ['Retry-After' => '5']);
        } catch (Throwable $error) {
            $this->rollBackTo($level);
            throw $error;
        }
    }

    /** The answer for a request seen before (repeated key, or replayed signature), if any. */
    private function earlier(string $route, ?string $key, ?string $signature, string $bodyHash): ?Response
    {
        $stored = $key === null ? null : DB::table(Settings::REQUESTS_TABLE)
            ->where('route', $route)
            ->where('idempotency_key', $key)
            ->first();
        if ($stored !== null) {
            if (!hash_equals((string) $stored->body_hash, $bodyHash)) {
                return Responses::error(422, 'Idempotency-Key already used with a different body.');
            }

            return new Response((string) $stored->response, (int) $stored->status, [
                'Content-Type' => 'application/json',
                'Idempotent-Replayed' => 'true',
            ]);
        }
        if (
            $signature !== null
            && DB::table(Settings::REQUESTS_TABLE)->where('signature', $signature)->exists()
        ) {
            return Responses::error(409, 'Replayed request: this signature was already used.');
        }

        return null;
    }

    private function rollBackTo(int $level): void
    {
        $connection = DB::connection();
        while ($connection->transactionLevel() > $level) {
            $connection->rollBack();
        }
    }

    /** Now and then (1 request in 100), forgets requests older than the idempotency TTL. */
    private function prune(): void
    {
        if (random_int(1, 100) !== 1) {
            return;
        }
        try {
            DB::table(Settings::REQUESTS_TABLE)
                ->where('created_at', '<', now()->subSeconds(Settings::idempotencyTtl()))
                ->delete();
        } catch (Throwable $error) {
            Log::warning('wasup: pruning old requests failed', ['error' => $error->getMessage()]);
        }
    }
}
