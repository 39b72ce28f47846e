<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use App\Wasup\Lane;
use App\Wasup\Responses;
use App\Wasup\Settings;
use DateTimeInterface;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;
use Illuminate\Support\Carbon;
use Illuminate\Support\Facades\DB;

/**
 * `POST /whatsapp/status/batch` (and the legacy `POST /whatsapp/status`): session statuses;
 * `GET /whatsapp/status/{id}`: what wasup asks when neither its memory nor Redis knows. Rules and
 * storage of statuses are those of Lane::statuses(), shared with `POST /whatsapp/events/batch`.
 */
final class StatusController
{
    /** The `estado_qr` values wasup sends. */
    public const ESTADOS = Lane::ESTADOS;

    /** `{"statuses":[{"session_id","estado_qr","user_id"?,"timestamp"?,"phone"?}]}`. */
    public function batch(Request $request): JsonResponse
    {
        $lane = Lane::statuses();

        return BatchRunner::run($lane, BatchPayload::items($request, $lane));
    }

    /** The legacy call: the body is one status item. */
    public function single(Request $request): JsonResponse
    {
        $lane = Lane::statuses();

        return BatchRunner::run($lane, BatchPayload::single($request, $lane));
    }

    /**
     * `{"session_id","estado_qr",...}`, or 404 for an unknown session (wasup then treats it as
     * inactive and does not reconnect it). A row with a QR but no status yet is `pending`.
     */
    public function show(string $sessionId): JsonResponse
    {
        $account = DB::table(Settings::ACCOUNTS_TABLE)->where('session_id', $sessionId)->first();
        if ($account === null) {
            return Responses::error(404, 'Unknown session.', ['session_id' => $sessionId]);
        }

        return Responses::json([
            'session_id' => $sessionId,
            'estado_qr' => $account->estado_qr ?? 'pending',
            'user_id' => $account->user_id !== null ? (int) $account->user_id : null,
            'last_status_update' => self::iso($account->last_status_update),
            'qr_generated_at' => self::iso($account->qr_generated_at),
        ]);
    }

    private static function iso(mixed $value): ?string
    {
        if ($value === null || $value === '') {
            return null;
        }

        return Carbon::parse($value)->format(DateTimeInterface::ATOM);
    }
}
