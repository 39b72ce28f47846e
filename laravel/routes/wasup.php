<?php

declare(strict_types=1);

/*
 * The endpoints wasup calls, under `services.wasup.route_prefix` (default `api`, matching
 * wasup's `laravel.base_url = https://your-app/api`). Loaded by App\Providers\WasupServiceProvider.
 */

use App\Http\Controllers\Wasup\EventController;
use App\Http\Controllers\Wasup\MessageController;
use App\Http\Controllers\Wasup\QrController;
use App\Http\Controllers\Wasup\StatusController;
use App\Wasup\Settings;
use Illuminate\Support\Facades\Route;

Route::prefix(Settings::routePrefix())
    ->middleware('wasup.auth')
    ->group(static function (): void {
        Route::get('whatsapp/status/{sessionId}', [StatusController::class, 'show'])
            ->where('sessionId', '[A-Za-z0-9_-]{1,191}')
            ->name('wasup.status.show');

        Route::middleware(['wasup.signed', 'wasup.once'])->group(static function (): void {
            Route::post('qr/batch', [QrController::class, 'batch'])->name('wasup.qr.batch');
            Route::post('whatsapp/status/batch', [StatusController::class, 'batch'])->name('wasup.status.batch');
            Route::post('whatsapp/messages/batch', [MessageController::class, 'batch'])->name('wasup.messages.batch');
            // The combined contract (wasup's `laravel.contract = "combined"`): all three lanes at once.
            Route::post('whatsapp/events/batch', [EventController::class, 'batch'])->name('wasup.events.batch');
            if (Settings::legacyRoutes()) {
                Route::post('qr', [QrController::class, 'single'])->name('wasup.qr.single');
                Route::post('whatsapp/status', [StatusController::class, 'single'])->name('wasup.status.single');
            }
        });
    });
