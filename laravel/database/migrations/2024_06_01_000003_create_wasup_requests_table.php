<?php

/**
 * `wasup_requests`: the batches already applied, for idempotency (Idempotency-Key → stored
 * answer) and replay protection (signatures already used). Rows older than
 * `services.wasup.idempotency_ttl` are pruned by the middleware.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    public function up(): void
    {
        Schema::create('wasup_requests', static function (Blueprint $table): void {
            $table->id();
            $table->string('route', 191);
            $table->string('idempotency_key', 191)->nullable();
            $table->string('signature', 100)->nullable()->unique();
            $table->char('body_hash', 64);
            $table->unsignedSmallInteger('status');
            $table->mediumText('response');
            $table->dateTime('created_at')->index();
            $table->unique(['route', 'idempotency_key']);
        });
    }

    public function down(): void
    {
        Schema::dropIfExists('wasup_requests');
    }
};
