//! The QR page's login cookie, `v2.{expiry}.{nonce}.{hex HMAC-SHA256(api_key, expiry, nonce)}`,
//! its revocation on sign-out, and the same-origin test that keeps it from authorising
//! cross-site POSTs and DELETEs.
//!
//! Signed, so valid on every worker (and every node sharing the key) without a session table,
//! never the key itself, void once the key changes or the expiry passes; signing out puts the
//! token on this process's [`Revoked`] list until it would have expired.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{HttpRequest, http::header};
use subtle::ConstantTimeEq;
use wasup_actors::sink::signature;

/// The cookie's name.
pub const COOKIE_NAME: &str = "wasup_ui";
/// How long a login lasts.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// What the HMAC signs besides the expiry, keeping it apart from other uses of the key.
const COOKIE_PURPOSE: &[u8] = b"wasup-ui-session";
/// Most signed-out tokens remembered; past it the ones closest to expiry are forgotten first.
const MAX_REVOKED: usize = 10_000;

/// Tokens signed out before their expiry (token → expiry, Unix seconds).
#[derive(Default)]
pub struct Revoked(Mutex<HashMap<String, u64>>);

impl Revoked {
    /// Whether `token` was signed out.
    fn contains(&self, token: &str) -> bool {
        self.0
            .lock()
            .map_or(true, |revoked| revoked.contains_key(token))
    }

    /// Signs `token` out (valid under `api_key`; anything else is ignored).
    fn revoke(&self, token: &str, api_key: &str, now: u64) {
        let Some(expires) = token_expiry(token, api_key, now) else {
            return;
        };
        let Ok(mut revoked) = self.0.lock() else {
            return;
        };
        if revoked.len() >= MAX_REVOKED {
            revoked.retain(|_, expires| *expires > now);
        }
        while revoked.len() >= MAX_REVOKED {
            let Some(first) = revoked
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(token, _)| token.clone())
            else {
                break;
            };
            revoked.remove(&first);
        }
        revoked.insert(token.to_string(), expires);
    }
}

/// Whether the request carries a valid, unexpired, not signed-out login cookie for `api_key`.
pub fn cookie_grants(request: &HttpRequest, api_key: &str, revoked: &Revoked) -> bool {
    !api_key.is_empty()
        && cookie_values(request, COOKIE_NAME)
            .any(|token| token_valid(token, api_key, unix_now()) && !revoked.contains(token))
}

/// Signs out every login cookie the request carries.
pub fn revoke_cookies(request: &HttpRequest, api_key: &str, revoked: &Revoked) {
    for token in cookie_values(request, COOKIE_NAME) {
        revoked.revoke(token, api_key, unix_now());
    }
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

/// `Set-Cookie` for a fresh login under `api_key`; `Secure` when the request came over HTTPS
/// (`https_proxy`: a trusted proxy says so).
pub fn login_cookie(request: &HttpRequest, api_key: &str, https_proxy: bool) -> String {
    let secure = if request.app_config().secure() || https_proxy {
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
    let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    format!(
        "v2.{expires}.{nonce}.{}",
        token_mac(api_key, expires, &nonce)
    )
}

/// Whether `token` was minted for `api_key` and is still valid at `now` (compared in constant time).
fn token_valid(token: &str, api_key: &str, now: u64) -> bool {
    token_expiry(token, api_key, now).is_some()
}

/// The expiry of `token` when it was minted for `api_key` and is still valid at `now`.
fn token_expiry(token: &str, api_key: &str, now: u64) -> Option<u64> {
    let mut parts = token.splitn(4, '.');
    let (Some("v2"), Some(expires), Some(nonce), Some(mac)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expires = expires.parse::<u64>().ok()?;
    let fresh = expires > now && expires <= now.saturating_add(LOGIN_TTL.as_secs());
    let genuine = bool::from(
        mac.as_bytes()
            .ct_eq(token_mac(api_key, expires, nonce).as_bytes()),
    );
    (fresh && genuine).then_some(expires)
}

/// The hex HMAC-SHA256 under `api_key` of the expiry, [`COOKIE_PURPOSE`] and the nonce.
fn token_mac(api_key: &str, expires: u64, nonce: &str) -> String {
    let signed = signature(
        api_key,
        expires,
        &[COOKIE_PURPOSE, b".", nonce.as_bytes()].concat(),
    );
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
        let far = format!("v2.{far}.n.{}", token_mac("secret-key", far, "n"));
        assert!(
            !token_valid(&far, "secret-key", now),
            "no expiry past the TTL"
        );
        let tampered = token.replacen("v2.17", "v2.18", 1);
        assert!(!token_valid(&tampered, "secret-key", now));
        assert_ne!(
            token,
            mint_token("secret-key", now),
            "each login is its own token"
        );
        for junk in ["", "v1", "v2.x.y.z", "v1.1.2", &token[..token.len() - 1]] {
            assert!(!token_valid(junk, "secret-key", now), "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let token = mint_token("k", unix_now());
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, format!("a=1; {COOKIE_NAME}={token}; b=2")))
            .to_http_request();
        let revoked = Revoked::default();
        assert!(cookie_grants(&request, "k", &revoked));
        assert!(
            !cookie_grants(&request, "", &revoked),
            "no key, no cookie login"
        );
        revoke_cookies(&request, "k", &revoked);
        assert!(!cookie_grants(&request, "k", &revoked), "signed out");
        let again = actix_web::test::TestRequest::default()
            .insert_header((
                header::COOKIE,
                format!("{COOKIE_NAME}={}", mint_token("k", unix_now())),
            ))
            .to_http_request();
        assert!(
            cookie_grants(&again, "k", &revoked),
            "a new login still works"
        );
        let other = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, format!("x{COOKIE_NAME}={token}")))
            .to_http_request();
        assert!(!cookie_grants(&other, "k", &Revoked::default()));
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
