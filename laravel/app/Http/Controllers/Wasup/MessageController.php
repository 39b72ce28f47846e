<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use App\Wasup\Lane;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

/**
 * `POST /whatsapp/messages/batch`: incoming messages, each stored once by (session_id,
 * message_id, recipient, sender), not coalesced: every message is kept; and the outcomes of
 * outgoing messages (`"direction":"outgoing"`), one row per (session_id, message_id), latest
 * wins. `failed_ids` lists message ids. Rules and storage are those of Lane::messages(), shared
 * with `POST /whatsapp/events/batch`.
 */
final class MessageController
{
    /**
     * `{"messages":[...]}`, each item either an incoming message
     * `{"session_id","message_id","from","to","timestamp","type","text"}` (`"direction":"incoming"`
     * or none) or an outgoing one's outcome
     * `{"session_id","direction":"outgoing","message_id","state","whatsapp_id","to","error","timestamp"}`.
     */
    public function batch(Request $request): JsonResponse
    {
        $lane = Lane::messages();

        return BatchRunner::run($lane, BatchPayload::items($request, $lane));
    }
}
