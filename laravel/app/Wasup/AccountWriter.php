<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Database\QueryException;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

/**
 * Writes QR codes and statuses into `whatsapp_accounts`, one row per session, latest event wins:
 * each lane keeps the event time (milliseconds, from the item's `timestamp`) of what it stored,
 * and an item older than that is skipped, so a late retry can never undo a newer state.
 */
final class AccountWriter
{
    /** Outcomes counted in the batch answer. */
    public const OUTCOMES = ['updated', 'skipped'];

    /** Column for a QR's `expires_at`, written where the table has it (see its migrations). */
    private const QR_EXPIRES_COLUMN = 'qr_expires_at';

    /** Whether the table has QR_EXPIRES_COLUMN; looked up once per process. */
    private static ?bool $storesQrExpiry = null;

    /**
     * Stores a QR item: `qr_code`, `qr_generated_at`, and `qr_expires_at` (the item's
     * `expires_at`, ms since the epoch; null when the item has none) where that column exists.
     *
     * @param array<string, mixed> $item
     */
    public function applyQr(array $item): string
    {
        $millis = Timestamps::millis($item['timestamp'] ?? null);
        $values = [
            'qr_code' => (string) $item['qr'],
            'qr_generated_at' => Timestamps::date($millis),
        ];
        if (self::storesQrExpiry()) {
            $values[self::QR_EXPIRES_COLUMN] = isset($item['expires_at']) ? (int) $item['expires_at'] : null;
        }

        return $this->applyIfNewer((string) $item['session_id'], 'qr_timestamp', $millis, $values + self::owner($item));
    }

    /**
     * Stores a status item: `estado_qr`, `last_status_update`.
     *
     * @param array<string, mixed> $item
     */
    public function applyStatus(array $item): string
    {
        $millis = Timestamps::millis($item['timestamp'] ?? null);

        return $this->applyIfNewer((string) $item['session_id'], 'status_timestamp', $millis, [
            'estado_qr' => (string) $item['estado_qr'],
            'last_status_update' => Timestamps::date($millis),
        ] + self::owner($item));
    }

    /**
     * Updates the session's row when `$column` (the lane's event time) is not newer than
     * `$millis`, creating the row when there is none. Answers `updated` or `skipped`.
     *
     * @param array<string, mixed> $values
     */
    private function applyIfNewer(string $sessionId, string $column, int $millis, array $values): string
    {
        $values[$column] = $millis;
        $values['updated_at'] = now();
        if ($this->conditionalUpdate($sessionId, $column, $millis, $values) > 0) {
            return 'updated';
        }
        if ($this->exists($sessionId)) {
            return 'skipped';
        }
        try {
            DB::transaction(static function () use ($sessionId, $values): void {
                DB::table(Settings::ACCOUNTS_TABLE)->insert(
                    ['session_id' => $sessionId, 'created_at' => $values['updated_at']] + $values
                );
            });

            return 'updated';
        } catch (QueryException $error) {
            // Another request created the row meanwhile: apply the item to it instead.
            if (!$this->exists($sessionId)) {
                throw $error;
            }

            return $this->conditionalUpdate($sessionId, $column, $millis, $values) > 0 ? 'updated' : 'skipped';
        }
    }

    /** @param array<string, mixed> $values */
    private function conditionalUpdate(string $sessionId, string $column, int $millis, array $values): int
    {
        return DB::table(Settings::ACCOUNTS_TABLE)
            ->where('session_id', $sessionId)
            ->where(static function ($query) use ($column, $millis): void {
                $query->whereNull($column)->orWhere($column, '<=', $millis);
            })
            ->update($values);
    }

    private static function storesQrExpiry(): bool
    {
        return self::$storesQrExpiry ??= Schema::hasColumn(Settings::ACCOUNTS_TABLE, self::QR_EXPIRES_COLUMN);
    }

    private function exists(string $sessionId): bool
    {
        return DB::table(Settings::ACCOUNTS_TABLE)->where('session_id', $sessionId)->exists();
    }

    /**
     * The owner fields an item carries (`user_id`, `phone`); absent ones leave the row as it is.
     *
     * @param array<string, mixed> $item
     * @return array<string, mixed>
     */
    private static function owner(array $item): array
    {
        $owner = [];
        if (isset($item['user_id'])) {
            $owner['user_id'] = (int) $item['user_id'];
        }
        if (isset($item['phone']) && $item['phone'] !== '') {
            $owner['phone'] = (string) $item['phone'];
        }

        return $owner;
    }
}
