<?php

declare(strict_types=1);

namespace App\Wasup;

use Carbon\CarbonImmutable;
use Carbon\CarbonInterface;

/**
 * Event times as wasup sends them: milliseconds since the Unix epoch.
 */
final class Timestamps
{
    /** Below this a timestamp is taken as seconds (year 5138 in seconds, 1973 in milliseconds). */
    private const SECONDS_LIMIT = 100_000_000_000;

    /**
     * Milliseconds since the epoch for an item's `timestamp`; seconds are scaled up, and a missing
     * value means "now" (legacy senders that do not stamp their items).
     */
    public static function millis(mixed $value): int
    {
        if ($value === null || $value === '') {
            return self::nowMillis();
        }
        $value = (int) $value;

        return $value < self::SECONDS_LIMIT ? $value * 1000 : $value;
    }

    /** The current time in milliseconds since the epoch. */
    public static function nowMillis(): int
    {
        return (int) floor(microtime(true) * 1000);
    }

    /** A date (in the application's time zone) for milliseconds since the epoch. */
    public static function date(int $millis): CarbonInterface
    {
        return CarbonImmutable::createFromTimestampMs($millis)
            ->setTimezone((string) config('app.timezone', 'UTC'));
    }
}
