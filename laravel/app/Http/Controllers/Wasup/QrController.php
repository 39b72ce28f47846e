<?php

declare(strict_types=1);

namespace App\Http\Controllers\Wasup;

use App\Wasup\AccountWriter;
use App\Wasup\BatchPayload;
use App\Wasup\BatchRunner;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

/**
 * `POST /qr/batch` (and the legacy `POST /qr`): the QR code each session shows now.
 */
final class QrController
{
    /** @return array<string, array<int, mixed>> */
    private static function rules(): array
    {
        return [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'qr' => ['required', 'string', 'max:65535'],
            'user_id' => ['nullable', 'integer', 'min:0'],
            'timestamp' => ['nullable', 'integer', 'min:0'],
            'phone' => ['nullable', 'string', 'max:32'],
        ];
    }

    /** `{"qrs":[{"session_id","qr","user_id"?,"timestamp"?}]}`. */
    public function batch(Request $request, AccountWriter $writer): JsonResponse
    {
        $items = BatchPayload::items($request, 'qrs', self::rules());

        return BatchRunner::run('qr', $items, 'session_id', [$writer, 'applyQr'], AccountWriter::OUTCOMES);
    }

    /** The legacy call: the body is one QR item. */
    public function single(Request $request, AccountWriter $writer): JsonResponse
    {
        $item = BatchPayload::single($request, self::rules());

        return BatchRunner::run('qr', [$item], 'session_id', [$writer, 'applyQr'], AccountWriter::OUTCOMES);
    }
}
