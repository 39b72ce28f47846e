<?php

/**
 * `whatsapp_messages`: incoming messages, each stored once per (session_id, message_id).
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
            $table->unique(['session_id', 'message_id']);
            $table->index(['session_id', 'message_timestamp']);
        });
    }

    public function down(): void
    {
        Schema::dropIfExists('whatsapp_messages');
    }
};
