<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use App\Wasup\Lane;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

/**
 * `POST /qr/batch` (and the legacy `POST /qr`): the QR code each session shows now. Rules and
 * storage are those of Lane::qrs(), shared with `POST /whatsapp/events/batch`.
 */
final class QrController
{
    /** `{"qrs":[{"session_id","qr","expires_at"?,"user_id"?,"timestamp"?,"phone"?}]}`. */
    public function batch(Request $request): JsonResponse
    {
        $lane = Lane::qrs();

        return BatchRunner::run($lane, BatchPayload::items($request, $lane));
    }

    /** The legacy call: the body is one QR item. */
    public function single(Request $request): JsonResponse
    {
        $lane = Lane::qrs();

        return BatchRunner::run($lane, BatchPayload::single($request, $lane));
    }
}
