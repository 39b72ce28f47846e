<?php

declare(strict_types=1);

namespace App\Http\Middleware\Wasup;

use App\Wasup\Responses;
use App\Wasup\Settings;
use Closure;
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response;

/**
 * `wasup.auth`: checks `Authorization: Bearer <services.wasup.token>` in constant time, and makes
 * every answer on these routes JSON (wasup sends no `Accept` header) with an explicit
 * Content-Length. Fails closed: without a token configured every request is refused (the
 * `GET /whatsapp/status/{id}` lookup is unsigned, so the token is its only protection).
 */
final class AuthenticateWasup
{
    public function handle(Request $request, Closure $next): Response
    {
        $request->headers->set('Accept', 'application/json');
        $token = Settings::token();
        if ($token === '') {
            return self::withLength(Responses::error(500, 'wasup integration not configured: set WASUP_TOKEN.'));
        }
        if (!hash_equals($token, (string) $request->bearerToken())) {
            return self::withLength(
                Responses::error(401, 'Missing or wrong bearer token.', [], ['WWW-Authenticate' => 'Bearer'])
            );
        }

        return self::withLength($next($request));
    }

    /**
     * Sets Content-Length: wasup's HTTP client (awc) reads no body at all from an HTTP/1.1 answer
     * that has neither Content-Length nor chunked encoding (php -S, some FastCGI setups close the
     * connection instead), and would then miss `failed_ids`.
     */
    private static function withLength(Response $response): Response
    {
        $content = $response->getContent();
        if (is_string($content) && !$response->headers->has('Transfer-Encoding')) {
            $response->headers->set('Content-Length', (string) strlen($content));
        }

        return $response;
    }
}
