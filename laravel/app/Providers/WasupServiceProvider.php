<?php

declare(strict_types=1);

namespace App\Providers;

use App\Http\Middleware\Wasup\AuthenticateWasup;
use App\Http\Middleware\Wasup\EnsureOnce;
use App\Http\Middleware\Wasup\VerifyWasupSignature;
use Illuminate\Routing\Router;
use Illuminate\Support\ServiceProvider;

/**
 * Wires the wasup endpoints into the application: the middleware aliases `wasup.auth`,
 * `wasup.signed` and `wasup.once`, and the routes of routes/wasup.php (outside the `api` group,
 * so its rate limiter does not throttle wasup's batches).
 */
final class WasupServiceProvider extends ServiceProvider
{
    public function boot(Router $router): void
    {
        $router->aliasMiddleware('wasup.auth', AuthenticateWasup::class);
        $router->aliasMiddleware('wasup.signed', VerifyWasupSignature::class);
        $router->aliasMiddleware('wasup.once', EnsureOnce::class);
        $this->loadRoutesFrom(base_path('routes/wasup.php'));
    }
}
