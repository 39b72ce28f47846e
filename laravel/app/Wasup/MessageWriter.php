<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Database\QueryException;
use Illuminate\Support\Facades\DB;

/**
 * Stores incoming messages in `whatsapp_messages`, each once: a message already stored under the
 * same (session_id, message_id) is counted as a duplicate and left untouched.
 */
final class MessageWriter
{
    /** Outcomes counted in the batch answer. */
    public const OUTCOMES = ['updated', 'duplicates'];

    /** @param array<string, mixed> $item */
    public function store(array $item): string
    {
        $sessionId = (string) $item['session_id'];
        $messageId = (string) $item['message_id'];
        if ($this->exists($sessionId, $messageId)) {
            return 'duplicates';
        }
        $millis = Timestamps::millis($item['timestamp']);
        $now = now();
        try {
            DB::transaction(static function () use ($item, $sessionId, $messageId, $millis, $now): void {
                DB::table(Settings::MESSAGES_TABLE)->insert([
                    'session_id' => $sessionId,
                    'message_id' => $messageId,
                    'sender' => (string) $item['from'],
                    // `to` may be null (a message without a recipient wasup can name): the column is
                    // not nullable, so such a message is stored with an empty recipient.
                    'recipient' => (string) ($item['to'] ?? ''),
                    'type' => (string) $item['type'],
                    'text' => isset($item['text']) ? (string) $item['text'] : null,
                    'message_timestamp' => $millis,
                    'sent_at' => Timestamps::date($millis),
                    'created_at' => $now,
                    'updated_at' => $now,
                ]);
            });
        } catch (QueryException $error) {
            // A concurrent request stored it first: that is the one copy.
            if ($this->exists($sessionId, $messageId)) {
                return 'duplicates';
            }
            throw $error;
        }

        return 'updated';
    }

    private function exists(string $sessionId, string $messageId): bool
    {
        return DB::table(Settings::MESSAGES_TABLE)
            ->where('session_id', $sessionId)
            ->where('message_id', $messageId)
            ->exists();
    }
}
