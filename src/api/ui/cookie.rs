//! The QR page's login cookie, `v1.{expiry}.{hex HMAC-SHA256(api_key, expiry)}`, and the
//! same-origin test that keeps it from authorising cross-site POSTs and DELETEs.
//!
//! Stateless on purpose: valid on every worker (and every node sharing the key) without a
//! session table, never the key itself, void once the key changes or the expiry passes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, http::header};
use subtle::ConstantTimeEq;
use wasup_actors::sink::signature;

/// The cookie's name.
pub const COOKIE_NAME: &str = "wasup_ui";
/// How long a login lasts.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// What the HMAC signs besides the expiry, keeping it apart from other uses of the key.
const COOKIE_PURPOSE: &[u8] = b"wasup-ui-session";

/// Whether the request carries a valid, unexpired login cookie for `api_key`.
pub fn cookie_grants(request: &HttpRequest, api_key: &str) -> bool {
    !api_key.is_empty()
        && cookie_values(request, COOKIE_NAME).any(|token| token_valid(token, api_key, unix_now()))
}

/// Whether a browser says the request comes from wasup's own pages: `Sec-Fetch-Site:
/// same-origin`, or without it an `Origin` naming this host. Requests without either fail.
pub fn same_origin(request: &HttpRequest) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin";
    }
    let host = request.connection_info().host().to_ascii_lowercase();
    header("origin")
        .and_then(|origin| origin.split_once("://"))
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(&host))
}

/// `Set-Cookie` for a fresh login under `api_key` (`Secure` when the request came over HTTPS).
pub fn login_cookie(request: &HttpRequest, api_key: &str) -> String {
    let secure = if request.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE_NAME}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        mint_token(api_key, unix_now()),
        LOGIN_TTL.as_secs()
    )
}

/// `Set-Cookie` that drops the login.
pub fn logout_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'a>(request: &'a HttpRequest, name: &'a str) -> impl Iterator<Item = &'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// A login token for `api_key`, valid for [`LOGIN_TTL`] from `now` (Unix seconds).
fn mint_token(api_key: &str, now: u64) -> String {
    let expires = now + LOGIN_TTL.as_secs();
    format!("v1.{expires}.{}", token_mac(api_key, expires))
}

/// Whether `token` was minted for `api_key` and is still valid at `now` (compared in constant time).
fn token_valid(token: &str, api_key: &str, now: u64) -> bool {
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    let fresh = expires > now && expires <= now.saturating_add(LOGIN_TTL.as_secs());
    fresh && bool::from(mac.as_bytes().ct_eq(token_mac(api_key, expires).as_bytes()))
}

/// The hex HMAC-SHA256 under `api_key` of the expiry and [`COOKIE_PURPOSE`].
fn token_mac(api_key: &str, expires: u64) -> String {
    let signed = signature(api_key, expires, COOKIE_PURPOSE);
    match signed.strip_prefix("sha256=") {
        Some(hex) => hex.to_string(),
        None => signed,
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hold_no_key_and_expire() {
        let now = 1_700_000_000;
        let ttl = LOGIN_TTL.as_secs();
        let token = mint_token("secret-key", now);
        assert!(!token.contains("secret-key"), "{token}");
        assert!(token_valid(&token, "secret-key", now));
        assert!(token_valid(&token, "secret-key", now + ttl - 1));
        assert!(!token_valid(&token, "secret-key", now + ttl));
        assert!(!token_valid(&token, "other-key", now), "a new key voids it");
        let far = now + 10 * ttl;
        let far = format!("v1.{far}.{}", token_mac("secret-key", far));
        assert!(
            !token_valid(&far, "secret-key", now),
            "no expiry past the TTL"
        );
        let tampered = token.replacen("v1.17", "v1.18", 1);
        assert!(!token_valid(&tampered, "secret-key", now));
        for junk in ["", "v1", "v1.x.y", "v2.1.2", &token[..token.len() - 1]] {
            assert!(!token_valid(junk, "secret-key", now), "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let token = mint_token("k", unix_now());
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, format!("a=1; {COOKIE_NAME}={token}; b=2")))
            .to_http_request();
        assert!(cookie_grants(&request, "k"));
        assert!(!cookie_grants(&request, ""), "no key, no cookie login");
        let other = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, format!("x{COOKIE_NAME}={token}")))
            .to_http_request();
        assert!(!cookie_grants(&other, "k"));
    }

    #[test]
    fn same_origin_trusts_fetch_metadata_then_origin() {
        let request = |headers: &[(&str, &str)]| {
            let mut request =
                actix_web::test::TestRequest::default().insert_header(("host", "wasup.test:4000"));
            for header in headers {
                request = request.insert_header(*header);
            }
            request.to_http_request()
        };
        assert!(same_origin(&request(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&request(&[(
            "origin",
            "http://wasup.test:4000"
        )])));
        for refused in [
            &[][..],
            &[("sec-fetch-site", "same-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://wasup.test:4000"),
            ],
            &[("origin", "http://evil.test")],
            &[("origin", "null")],
        ] {
            assert!(!same_origin(&request(refused)), "{refused:?}");
        }
    }
}
