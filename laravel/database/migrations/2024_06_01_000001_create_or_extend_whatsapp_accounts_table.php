<?php

/**
 * `whatsapp_accounts`: one row per wasup session. Creates the table, or, where the application
 * already has one, adds only the columns it lacks (the seeds' qr_code, qr_generated_at,
 * last_status_update, qr_expires_at, and the event-time columns latest-wins needs). Applications
 * that ran it before qr_expires_at existed get that column from 2024_06_01_000004.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    /**
     * The columns wasup writes, by name, each with how to add it.
     *
     * @return array<string, \Closure(Blueprint): mixed>
     */
    private function columns(): array
    {
        return [
            'session_id' => static fn (Blueprint $table) => $table->string('session_id', 191)->nullable()->unique(),
            'user_id' => static fn (Blueprint $table) => $table->unsignedBigInteger('user_id')->nullable()->index(),
            'phone' => static fn (Blueprint $table) => $table->string('phone', 32)->nullable(),
            'qr_code' => static fn (Blueprint $table) => $table->text('qr_code')->nullable(),
            'qr_generated_at' => static fn (Blueprint $table) => $table->dateTime('qr_generated_at')->nullable(),
            // When WhatsApp stops accepting the stored QR (its `expires_at`, ms since the epoch).
            'qr_expires_at' => static fn (Blueprint $table) => $table->unsignedBigInteger('qr_expires_at')->nullable(),
            // Event time (ms since the epoch) of the stored QR: older QRs are skipped.
            'qr_timestamp' => static fn (Blueprint $table) => $table->unsignedBigInteger('qr_timestamp')->nullable(),
            'estado_qr' => static fn (Blueprint $table) => $table->string('estado_qr', 16)->nullable()->index(),
            'last_status_update' => static fn (Blueprint $table) => $table->dateTime('last_status_update')->nullable(),
            // Event time (ms since the epoch) of the stored status: older statuses are skipped.
            'status_timestamp' => static fn (Blueprint $table) => $table
                ->unsignedBigInteger('status_timestamp')
                ->nullable(),
        ];
    }

    public function up(): void
    {
        if (!Schema::hasTable('whatsapp_accounts')) {
            Schema::create('whatsapp_accounts', function (Blueprint $table): void {
                $table->id();
                foreach ($this->columns() as $add) {
                    $add($table);
                }
                $table->timestamps();
            });

            return;
        }
        foreach ($this->columns() as $name => $add) {
            if (!Schema::hasColumn('whatsapp_accounts', $name)) {
                Schema::table('whatsapp_accounts', static fn (Blueprint $table) => $add($table));
            }
        }
        foreach (['created_at', 'updated_at'] as $name) {
            if (!Schema::hasColumn('whatsapp_accounts', $name)) {
                Schema::table(
                    'whatsapp_accounts',
                    static fn (Blueprint $table) => $table->timestamp($name)->nullable()
                );
            }
        }
    }

    /** Drops the table only when it holds nothing but wasup's columns (i.e. this migration made it). */
    public function down(): void
    {
        if (!Schema::hasTable('whatsapp_accounts')) {
            return;
        }
        $ours = array_merge(['id', 'created_at', 'updated_at'], array_keys($this->columns()));
        if (array_diff(Schema::getColumnListing('whatsapp_accounts'), $ours) === []) {
            Schema::drop('whatsapp_accounts');
        }
    }
};
