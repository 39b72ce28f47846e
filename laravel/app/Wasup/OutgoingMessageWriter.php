<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Database\QueryException;
use Illuminate\Support\Facades\DB;

/**
 * Stores the outcomes of outgoing messages (those wasup sent for the application) in
 * `whatsapp_outgoing_messages`, one row per (session_id, message_id): `message_id` is wasup's
 * own id of the message, unique within its session. wasup reports an outcome at least once, so
 * the same one may come again, and a retry of an earlier one may come after a later one: the
 * latest wins, by the outcome's `timestamp` (ms), as AccountWriter does for statuses. An outcome
 * not older than the stored one replaces it (`updated`); an older one is `skipped`.
 */
final class OutgoingMessageWriter
{
    /** Outcomes counted in the batch answer. */
    public const OUTCOMES = ['updated', 'skipped'];

    /** @param array<string, mixed> $item */
    public function apply(array $item): string
    {
        $sessionId = (string) $item['session_id'];
        $messageId = (string) $item['message_id'];
        $millis = Timestamps::millis($item['timestamp']);
        $values = [
            'recipient' => (string) $item['to'],
            'state' => (string) $item['state'],
            'whatsapp_id' => isset($item['whatsapp_id']) ? (string) $item['whatsapp_id'] : null,
            'error' => isset($item['error']) ? (string) $item['error'] : null,
            'outcome_timestamp' => $millis,
            'outcome_at' => Timestamps::date($millis),
            'updated_at' => now(),
        ];
        if ($this->updateIfNotNewer($sessionId, $messageId, $millis, $values) > 0) {
            return 'updated';
        }
        if ($this->exists($sessionId, $messageId)) {
            return 'skipped';
        }
        try {
            DB::transaction(static function () use ($sessionId, $messageId, $values): void {
                DB::table(Settings::OUTGOING_MESSAGES_TABLE)->insert([
                    'session_id' => $sessionId,
                    'message_id' => $messageId,
                    'created_at' => $values['updated_at'],
                ] + $values);
            });

            return 'updated';
        } catch (QueryException $error) {
            // Another request stored an outcome of this message meanwhile: the latest wins there too.
            if (!$this->exists($sessionId, $messageId)) {
                throw $error;
            }

            return $this->updateIfNotNewer($sessionId, $messageId, $millis, $values) > 0 ? 'updated' : 'skipped';
        }
    }

    /**
     * Replaces the stored outcome of the message when it is not newer than `$millis`; answers
     * how many rows changed (0: none stored yet, or a newer one).
     *
     * @param array<string, mixed> $values
     */
    private function updateIfNotNewer(string $sessionId, string $messageId, int $millis, array $values): int
    {
        return DB::table(Settings::OUTGOING_MESSAGES_TABLE)
            ->where('session_id', $sessionId)
            ->where('message_id', $messageId)
            ->where('outcome_timestamp', '<=', $millis)
            ->update($values);
    }

    private function exists(string $sessionId, string $messageId): bool
    {
        return DB::table(Settings::OUTGOING_MESSAGES_TABLE)
            ->where('session_id', $sessionId)
            ->where('message_id', $messageId)
            ->exists();
    }
}
