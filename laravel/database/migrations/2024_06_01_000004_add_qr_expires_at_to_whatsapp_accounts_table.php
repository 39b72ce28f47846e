<?php

/**
 * `whatsapp_accounts.qr_expires_at`: when WhatsApp stops accepting the stored QR (the QR item's
 * `expires_at`, ms since the epoch). For applications that ran 2024_06_01_000001 before it listed
 * this column; elsewhere that migration has created it already and this one does nothing.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    public function up(): void
    {
        if (Schema::hasTable('whatsapp_accounts') && !Schema::hasColumn('whatsapp_accounts', 'qr_expires_at')) {
            Schema::table('whatsapp_accounts', static function (Blueprint $table): void {
                $table->unsignedBigInteger('qr_expires_at')->nullable();
            });
        }
    }

    /**
     * Leaves the column: it is one of wasup's columns, dropped with the table by 000001's down
     * where that migration made the table, and nullable (harmless) on a table the application
     * owns. Dropping a column would also need doctrine/dbal on SQLite before Laravel 11.
     */
    public function down(): void
    {
    }
};
