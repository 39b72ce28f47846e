<?php

declare(strict_types=1);

namespace App\Http\Middleware\Wasup;

use App\Wasup\Responses;
use App\Wasup\Settings;
use Closure;
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response;

/**
 * `wasup.signed`: checks `X-Wasup-Signature: sha256=<hex HMAC-SHA256(secret,
 * "{ts}.{Idempotency-Key}.{raw body}")>` and that `X-Wasup-Timestamp` (Unix seconds) is within
 * the tolerance of this server's clock. The key is signed, so two batches with the same body in
 * the same second still differ; replays of a valid signature are answered by `wasup.once`.
 * Without a signing secret configured, requests pass unsigned.
 */
final class VerifyWasupSignature
{
    /** Request attribute holding the verified signature, for the replay check. */
    public const ATTRIBUTE = 'wasup.signature';

    public function handle(Request $request, Closure $next): Response
    {
        $secret = Settings::signingSecret();
        if ($secret === '') {
            return $next($request);
        }
        $timestamp = (string) $request->header('X-Wasup-Timestamp', '');
        $signature = (string) $request->header('X-Wasup-Signature', '');
        if ($signature === '' || preg_match('/^\d{1,12}$/', $timestamp) !== 1) {
            return Responses::error(401, 'Missing X-Wasup-Signature or X-Wasup-Timestamp.');
        }
        $skew = abs(time() - (int) $timestamp);
        if ($skew > Settings::timestampTolerance()) {
            return Responses::error(401, 'Stale or future X-Wasup-Timestamp.', ['skew_seconds' => $skew]);
        }
        $key = (string) $request->header('Idempotency-Key', '');
        $signed = $timestamp . '.' . $key . '.' . $request->getContent();
        $expected = 'sha256=' . hash_hmac('sha256', $signed, $secret);
        if (!hash_equals($expected, $signature)) {
            return Responses::error(401, 'Bad X-Wasup-Signature.');
        }
        $request->attributes->set(self::ATTRIBUTE, $signature);

        return $next($request);
    }
}
