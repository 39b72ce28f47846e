<?php

/**
 * `whatsapp_messages`: incoming messages, each stored once per (session_id, message_id, recipient,
 * sender). WhatsApp message ids are unique only within one chat (`recipient`) and sender, so the
 * same id in another chat or from another sender is another message. Databases that ran this
 * while its unique index was (session_id, message_id) get the new one from 2024_06_01_000006.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    public function up(): void
    {
        Schema::create('whatsapp_messages', static function (Blueprint $table): void {
            $table->id();
            $table->string('session_id', 191);
            $table->string('message_id', 191);
            $table->string('sender', 191);
            $table->string('recipient', 191);
            $table->string('type', 32);
            // MEDIUMTEXT on MySQL/MariaDB: their TEXT holds 65,535 bytes, and WhatsApp sends up to
            // 65,536 characters (up to 4 bytes each). Databases that ran this with `text` get
            // the wider column from 2024_06_01_000005.
            $table->mediumText('text')->nullable();
            // The message's time as wasup sent it, ms since the epoch, and as a date.
            $table->unsignedBigInteger('message_timestamp');
            $table->dateTime('sent_at');
            $table->timestamps();
            // message_id second: the index then also serves look-ups by (session_id, message_id).
            // Four varchar(191) of utf8mb4 make a 3,056-byte key, under InnoDB's 3,072. Named, since
            // the default name would be 63 characters before the table prefix (MySQL allows 64,
            // PostgreSQL 63).
            $table->unique(
                ['session_id', 'message_id', 'recipient', 'sender'],
                Schema::getConnection()->getTablePrefix() . 'whatsapp_messages_identity_unique'
            );
            $table->index(['session_id', 'message_timestamp']);
        });
    }

    public function down(): void
    {
        Schema::dropIfExists('whatsapp_messages');
    }
};
