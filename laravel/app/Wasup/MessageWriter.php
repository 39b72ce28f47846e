<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Database\QueryException;
use Illuminate\Support\Facades\DB;

/**
 * Stores incoming messages in `whatsapp_messages`, each once. A message is identified by
 * (session_id, recipient, sender, message_id): WhatsApp makes message ids unique only within one
 * chat and sender, not within an account, so the same id in another chat (`to`: our own JID for
 * a direct message, the group's otherwise) or from another sender is another message, and gets
 * its own row. A message already stored under the same four is counted as a duplicate and left
 * untouched.
 */
final class MessageWriter
{
    /** Outcomes counted in the batch answer. */
    public const OUTCOMES = ['updated', 'duplicates'];

    /** @param array<string, mixed> $item */
    public function store(array $item): string
    {
        $identity = self::identity($item);
        if ($this->exists($identity)) {
            return 'duplicates';
        }
        $millis = Timestamps::millis($item['timestamp']);
        $now = now();
        try {
            DB::transaction(static function () use ($item, $identity, $millis, $now): void {
                DB::table(Settings::MESSAGES_TABLE)->insert($identity + [
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
            if ($this->exists($identity)) {
                return 'duplicates';
            }
            throw $error;
        }

        return 'updated';
    }

    /**
     * The columns that identify `$item`, as stored: its session, its id, its chat (`to`) and its
     * sender (`from`). `to` may be null (a message without a recipient wasup can name): the
     * column is not nullable, so such a message is stored, and told apart, with an empty
     * recipient.
     *
     * @param array<string, mixed> $item
     * @return array{session_id: string, message_id: string, recipient: string, sender: string}
     */
    private static function identity(array $item): array
    {
        return [
            'session_id' => (string) $item['session_id'],
            'message_id' => (string) $item['message_id'],
            'recipient' => (string) ($item['to'] ?? ''),
            'sender' => (string) $item['from'],
        ];
    }

    /** @param array<string, string> $identity */
    private function exists(array $identity): bool
    {
        return DB::table(Settings::MESSAGES_TABLE)->where($identity)->exists();
    }
}
