<?php

/**
 * `whatsapp_outgoing_messages`: the outcome of each message wasup sent for the application
 * (`POST /sessions/{id}/messages` on wasup), one row per (session_id, message_id): `message_id`
 * is wasup's id of the message, unique within its session. The row holds the latest outcome
 * wasup reported (`sent` or `failed`), by its time in ms (`outcome_timestamp`), which decides
 * "latest wins" when wasup reports it again.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    public function up(): void
    {
        Schema::create('whatsapp_outgoing_messages', static function (Blueprint $table): void {
            $prefix = Schema::getConnection()->getTablePrefix();
            $table->id();
            $table->string('session_id', 191);
            $table->string('message_id', 191);
            // The recipient's JID (the item's `to`).
            $table->string('recipient', 191);
            // `sent`, or `failed` once wasup gave up after its retries.
            $table->string('state', 16);
            // WhatsApp's id of the message, once sent.
            $table->string('whatsapp_id', 191)->nullable();
            // Why it failed, as wasup reports it (up to 500 characters).
            $table->string('error', 500)->nullable();
            // When the outcome happened, ms since the epoch, and as a date.
            $table->unsignedBigInteger('outcome_timestamp');
            $table->dateTime('outcome_at');
            $table->timestamps();
            // Named, since the default names would be long enough to pass PostgreSQL's 63
            // characters once a table prefix is added.
            $table->unique(['session_id', 'message_id'], $prefix . 'whatsapp_outgoing_messages_identity_unique');
            $table->index(
                ['session_id', 'outcome_timestamp'],
                $prefix . 'whatsapp_outgoing_messages_session_time_index'
            );
        });
    }

    public function down(): void
    {
        Schema::dropIfExists('whatsapp_outgoing_messages');
    }
};
