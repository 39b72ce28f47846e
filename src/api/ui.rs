//! The QR page for people (`/ui`): a login form (POST, never the key in a URL) that trades the
//! API key for a revocable cookie, the session
//! list and one session's live QR, as plain HTML, CSS and JS embedded in the binary (`ui/`).
//!
//! [`super::guard`] accepts the login cookie ([`cookie`]) like `X-Api-Key`, so the pages' script
//! calls the JSON API, but only same-origin for POST and DELETE (CSRF). With no key configured
//! (loopback only) the pages are as open as the API. None of these routes is in the OpenAPI
//! document.

mod cookie;

use actix_web::{
    HttpRequest, HttpResponse, HttpResponseBuilder,
    http::{StatusCode, header},
    web,
};
use serde::Deserialize;
use std::sync::Arc;
use wasup_actors::registry::{
    InspectSession, ListSessions, RegistryError, SessionList, SessionReport,
};

pub use cookie::{Revoked, cookie_grants, same_origin};

use super::{ApiError, AppState, Guard, resource};

/// Every page's Content-Security-Policy: wasup's own files only (the QR is a `data:` PNG), no
/// inline script or style, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Largest login form accepted.
const MAX_FORM_BYTES: usize = 4096;

/// Every page's frame: head, header bar with sign-out, notice line, `{{main}}`.
const LAYOUT_HTML: &str = include_str!("ui/layout.html");
/// The sign-in form.
const LOGIN_HTML: &str = include_str!("ui/login.html");
/// The session table.
const LIST_HTML: &str = include_str!("ui/list.html");
/// One session: QR, "connected" and "ended" views, shown by the script.
const SESSION_HTML: &str = include_str!("ui/session.html");
/// An unknown session.
const MISSING_HTML: &str = include_str!("ui/missing.html");
/// The pages' only script: polling, QR swaps, views.
const APP_JS: &str = include_str!("ui/app.js");
/// The pages' style sheet.
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Registers the `/ui` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let form = web::FormConfig::default()
        .limit(MAX_FORM_BYTES)
        .error_handler(|error, _| ApiError::BadRequest(error.to_string()).into());
    cfg.service(resource("/ui").route(web::get().to(index)))
        .service(
            resource("/ui/login")
                .app_data(form)
                .route(web::get().to(login_form))
                .route(web::post().to(login)),
        )
        .service(resource("/ui/logout").route(web::post().to(logout)))
        .service(resource("/ui/sessions/{id}").route(web::get().to(session_page)))
        .service(resource("/ui/assets/{name}").route(web::get().to(asset)));
}

/// Whether `path` is one of the UI's (refused with the login page rather than JSON).
pub fn is_page(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Whether the request needs no credential: the login and logout forms and the static files.
pub fn is_public(request: &HttpRequest) -> bool {
    match request.path() {
        "/ui/login" | "/ui/logout" => true,
        path => path.starts_with("/ui/assets/"),
    }
}

/// The login page (401) for a page request without a credential; back to that page afterwards.
pub fn login_required(request: &HttpRequest) -> HttpResponse {
    login_page(StatusCode::UNAUTHORIZED, request.path(), None)
}

/// `POST /ui/login` form.
#[derive(Debug, Deserialize)]
struct LoginForm {
    /// The API key.
    key: String,
    /// The page to go back to (a `/ui` path).
    next: Option<String>,
}

/// `GET /ui`: every session and its state (refreshed by the page).
async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list = state.registry.send(ListSessions).await?;
    Ok(page(
        StatusCode::OK,
        "Sessions",
        "list",
        nav(&state),
        &list_main(&list),
    ))
}

/// `GET /ui/sessions/{id}`: the session's QR, large, replaced as it rotates; then "connected".
async fn session_page(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = id.into_inner();
    let inspect = InspectSession {
        session_id: session_id.clone(),
    };
    let (status, main) = match state.registry.send(inspect).await? {
        Ok(report) => (StatusCode::OK, session_main(&report)),
        Err(RegistryError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            fill(MISSING_HTML, &[("id", &escape(&session_id))]),
        ),
        Err(other) => return Err(other.into()),
    };
    let title = format!("Session {session_id}");
    Ok(page(status, &title, "session", nav(&state), &main))
}

/// `GET /ui/login`: the form (straight to `/ui` when no key is configured).
async fn login_form(state: web::Data<AppState>) -> HttpResponse {
    if state.config.http.api_key.is_empty() {
        return see_other("/ui", None);
    }
    login_page(StatusCode::OK, "/ui", None)
}

/// `POST /ui/login` (form `key`, `next`): a cookie and back to `next`, or the form again.
async fn login(
    guard: web::Data<Arc<Guard>>,
    request: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let LoginForm { key, next } = form.into_inner();
    let next = safe_next(next.as_deref().unwrap_or("/ui"));
    if !same_origin(&request) {
        let message = "Sign in from wasup's own login page.";
        return login_page(StatusCode::FORBIDDEN, next, Some(message));
    }
    exchange(&guard, &request, &key, next)
}

/// `POST /ui/logout`: signs the cookie out on the server (it stops working even if kept) and
/// drops it from the browser.
async fn logout(guard: web::Data<Arc<Guard>>, request: HttpRequest) -> HttpResponse {
    cookie::revoke_cookies(&request, &guard.api_key, &guard.logins);
    see_other("/ui", Some(cookie::logout_cookie()))
}

/// `GET /ui/assets/{name}`: the pages' script and style sheet.
async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (content_type, body) = match name.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        other => return Err(ApiError::NoRoute(format!("/ui/assets/{other}"))),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body))
}

/// Checks `key` (digests, constant time): a cookie and a redirect to `next`, or the form again
/// (401).
fn exchange(guard: &Guard, request: &HttpRequest, key: &str, next: &str) -> HttpResponse {
    if guard.api_key.is_empty() {
        return see_other(next, None);
    }
    if !guard.key_matches(key.as_bytes()) {
        return login_page(StatusCode::UNAUTHORIZED, next, Some("Wrong key."));
    }
    let https_proxy = guard.from_trusted_proxy(request)
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let cookie = cookie::login_cookie(request, &guard.api_key, https_proxy);
    see_other(next, Some(cookie))
}

/// A `303 See Other` to `location`, setting `cookie` when given.
fn see_other(location: &str, cookie: Option<String>) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if let Some(cookie) = cookie {
        response.insert_header((header::SET_COOKIE, cookie));
    }
    response.finish()
}

/// The login form with `status`, returning to `next`, with an optional error line.
fn login_page(status: StatusCode, next: &str, message: Option<&str>) -> HttpResponse {
    let error = message.map_or_else(String::new, |message| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
    });
    let next = escape(safe_next(next));
    let main = fill(LOGIN_HTML, &[("error", &error), ("next", &next)]);
    page(status, "Sign in", "login", "", &main)
}

/// A whole page: the layout around `main`, with the security headers.
fn page(status: StatusCode, title: &str, kind: &str, nav: &str, main: &str) -> HttpResponse {
    let title = escape(title);
    let values = [
        ("title", &*title),
        ("page", kind),
        ("nav", nav),
        ("main", main),
    ];
    secured(HttpResponse::build(status))
        .content_type("text/html; charset=utf-8")
        .body(fill(LAYOUT_HTML, &values))
}

/// Adds the headers every page carries.
fn secured(mut response: HttpResponseBuilder) -> HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// The sign-out button, when there is a key to sign in with.
fn nav(state: &AppState) -> &'static str {
    if state.config.http.api_key.is_empty() {
        return "";
    }
    "<form method=\"post\" action=\"/ui/logout\">\
     <button class=\"link\" type=\"submit\">Sign out</button></form>"
}

/// The session table (the page's script redraws the same rows).
fn list_main(list: &SessionList) -> String {
    let rows: String = if list.sessions.is_empty() {
        "<tr class=\"empty\"><td colspan=\"4\">No sessions. Start one with POST /start.</td></tr>"
            .into()
    } else {
        list.sessions
            .iter()
            .map(|session| {
                let id = escape(&session.session_id);
                let state = session.state.as_str();
                let user = session
                    .user_id
                    .map_or_else(|| "—".into(), |id| id.to_string());
                format!(
                    "<tr><td><a href=\"/ui/sessions/{id}\">{id}</a></td><td>{user}</td>\
                     <td><span class=\"state state-{state}\">{state}</span></td><td>{}</td></tr>",
                    age(session.age_ms)
                )
            })
            .collect()
    };
    let count = list.sessions.len().to_string();
    let pending = list.pending_count.to_string();
    let values = [("count", &*count), ("pending", &*pending), ("rows", &*rows)];
    fill(LIST_HTML, &values)
}

/// One session's page; the script fills in the QR and follows the state.
fn session_main(report: &SessionReport) -> String {
    let id = escape(&report.session_id);
    fill(
        SESSION_HTML,
        &[("id", &id), ("state", report.state.as_str())],
    )
}

/// An age as people read it: `42 s`, `5 min`, `3 h`, `2 d`.
fn age(ms: u64) -> String {
    match ms / 1000 {
        seconds @ 0..60 => format!("{seconds} s"),
        seconds @ 60..3600 => format!("{} min", seconds / 60),
        seconds @ 3600..86_400 => format!("{} h", seconds / 3600),
        seconds => format!("{} d", seconds / 86_400),
    }
}

/// `template` with each `{{name}}` replaced by its value, in one pass (values are not rescanned).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = &rest[start..];
            break;
        };
        let name = &after[..end];
        match values.iter().find(|(key, _)| *key == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `text` safe inside HTML text and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `next` when it is a plain `/ui` path (no open redirect), else `/ui`.
fn safe_next(next: &str) -> &str {
    let plain = next
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_'));
    if plain && !next.contains("//") && is_page(next) {
        next
    } else {
        "/ui"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_ui() {
        assert_eq!(safe_next("/ui/sessions/abc-1_2"), "/ui/sessions/abc-1_2");
        for bad in [
            "//evil.example",
            "https://evil.example/ui",
            "/uix",
            "/ui//x",
            "/ui/../x",
            "/sessions",
        ] {
            assert_eq!(safe_next(bad), "/ui", "{bad}");
        }
    }

    #[test]
    fn templates_fill_once_and_escape_is_complete() {
        let html = fill(
            "<t>{{a}}</t>{{b}}{{missing}}{{",
            &[("a", "{{b}}"), ("b", "x")],
        );
        assert_eq!(html, "<t>{{b}}</t>x{{missing}}{{");
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(age(999), "0 s");
        assert_eq!(age(61_000), "1 min");
        assert_eq!(age(7_200_000), "2 h");
        assert_eq!(age(200_000_000), "2 d");
    }
}
