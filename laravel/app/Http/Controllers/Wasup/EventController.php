<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use App\Wasup\Lane;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

/**
 * `POST /whatsapp/events/batch`: wasup's combined contract (`laravel.contract = "combined"`), every
 * lane that has items in one request instead of one call per lane. Each item is validated and
 * stored exactly as by its split call (QrController, StatusController, MessageController), all in
 * one transaction, lanes applied in the order qrs, statuses, messages; `failed_ids` and
 * `rejected` are reported per lane.
 */
final class EventController
{
    /**
     * `{"qrs":[...],"statuses":[...],"messages":[...]}`, any key absent, at least one item in all;
     * answers `{"success","updated","failed","failed_ids":{"qrs":[...],...},"rejected":{"qrs":{...},...}}`.
     */
    public function batch(Request $request): JsonResponse
    {
        $lanes = Lane::all();

        return BatchRunner::runLanes($lanes, BatchPayload::lanes($request, $lanes));
    }
}
