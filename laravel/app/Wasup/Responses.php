<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Exceptions\HttpResponseException;

/**
 * The JSON answers of the wasup endpoints.
 */
final class Responses
{
    /** JSON with slashes and unicode left readable (QR data URLs stay as sent). */
    public static function json(array $body, int $status = 200, array $headers = []): JsonResponse
    {
        return new JsonResponse($body, $status, $headers, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }

    /** `{"success":false,"message":...}` with `$status`, plus any extra fields. */
    public static function error(int $status, string $message, array $extra = [], array $headers = []): JsonResponse
    {
        return self::json(['success' => false, 'message' => $message] + $extra, $status, $headers);
    }

    /** Stops the request with an error answer (rendered as is by Laravel's exception handler). */
    public static function abort(int $status, string $message, array $extra = []): never
    {
        throw new HttpResponseException(self::error($status, $message, $extra));
    }
}
