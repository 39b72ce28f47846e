<?php

declare(strict_types=1);

namespace App\Wasup;

/**
 * Typed access to the `services.wasup` configuration (config/services.php, .env).
 */
final class Settings
{
    /** Table holding one row per wasup session. */
    public const ACCOUNTS_TABLE = 'whatsapp_accounts';

    /** Table holding incoming messages, one row per (session_id, message_id, recipient, sender). */
    public const MESSAGES_TABLE = 'whatsapp_messages';

    /** Table holding the outcome of each outgoing message, one row per (session_id, message_id). */
    public const OUTGOING_MESSAGES_TABLE = 'whatsapp_outgoing_messages';

    /** Table holding processed requests: idempotency keys and used signatures. */
    public const REQUESTS_TABLE = 'wasup_requests';

    /** The bearer token wasup sends (`LARAVEL_TOKEN` on wasup's side); empty refuses every request. */
    public static function token(): string
    {
        return (string) config('services.wasup.token', '');
    }

    /** The HMAC secret (`LARAVEL_SIGNING_SECRET` on wasup's side); empty disables signatures. */
    public static function signingSecret(): string
    {
        return (string) config('services.wasup.signing_secret', '');
    }

    /** How far `X-Wasup-Timestamp` may be from this server's clock, in seconds. */
    public static function timestampTolerance(): int
    {
        return max(1, (int) config('services.wasup.timestamp_tolerance', 300));
    }

    /**
     * How long processed requests are remembered, in seconds: a repeated Idempotency-Key gets the
     * stored answer within it. Never shorter than the replay window (twice the tolerance).
     */
    public static function idempotencyTtl(): int
    {
        $ttl = (int) config('services.wasup.idempotency_ttl', 86400);

        return max($ttl, 2 * self::timestampTolerance() + 60);
    }

    /** Most items one batch may carry; more is answered 413 (wasup then splits the batch). */
    public static function maxBatchItems(): int
    {
        return max(1, (int) config('services.wasup.max_batch_items', 1000));
    }

    /** URI prefix of the routes, matching the path of wasup's `laravel.base_url`. */
    public static function routePrefix(): string
    {
        return trim((string) config('services.wasup.route_prefix', 'api'), '/');
    }

    /** Whether to register the legacy single-item `POST /qr` and `POST /whatsapp/status`. */
    public static function legacyRoutes(): bool
    {
        return (bool) config('services.wasup.legacy_routes', false);
    }
}
