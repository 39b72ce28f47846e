<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use App\Wasup\MessageWriter;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

/**
 * `POST /whatsapp/messages/batch`: incoming messages, each stored once by
 * (session_id, message_id). Not coalesced: every message is kept. `failed_ids` lists message ids.
 */
final class MessageController
{
    /** @return array<string, array<int, mixed>> */
    private static function rules(): array
    {
        return [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'message_id' => ['required', 'string', 'max:191'],
            'from' => ['required', 'string', 'max:191'],
            'to' => ['required', 'string', 'max:191'],
            'timestamp' => ['required', 'integer', 'min:0'],
            'type' => ['required', 'string', 'max:32'],
            'text' => ['nullable', 'string', 'max:65535'],
        ];
    }

    /** `{"messages":[{"session_id","message_id","from","to","timestamp","type","text"}]}`. */
    public function batch(Request $request, MessageWriter $writer): JsonResponse
    {
        $items = BatchPayload::items($request, 'messages', self::rules());

        return BatchRunner::run('messages', $items, 'message_id', [$writer, 'store'], MessageWriter::OUTCOMES);
    }
}
