//! The QR page (`/ui`): login by key (POST form) → revocable cookie, the pages behind it, the cookie on the JSON API,
//! CSRF refusals, security headers, and no API key in anything it serves.

mod common;

use std::time::Duration;

use awc::http::{Method, header::HeaderMap};
use common::{Laravel, TestWasup, fast_config, service::API_KEY};
use wasup::{config::Config, engine::EngineKind};

/// `fast_config` with the simulated engine, whose sessions show QR codes at once.
fn config(laravel: &Laravel) -> Config {
    let mut config = fast_config(&laravel.url);
    config.engine.kind = EngineKind::Simulated;
    config
}

/// What wasup answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

/// A client like a browser: no API key, no redirects followed, the cookie and headers it is given.
async fn send(
    wasup: &TestWasup,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Answer {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .disable_redirects()
        .finish();
    let mut request = client.request(method, format!("{}{path}", wasup.base));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = match form {
        Some(form) => {
            request
                .content_type("application/x-www-form-urlencoded")
                .send_body(form.to_string())
                .await
        }
        None => request.send().await,
    }
    .expect("wasup answers");
    let bytes = response.body().limit(1 << 22).await.expect("body");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `Origin` as wasup's own pages send it.
fn own_origin(wasup: &TestWasup) -> String {
    wasup.base.clone()
}

/// Signs in through the form; returns the `Cookie` header value to send back.
async fn sign_in(wasup: &TestWasup) -> String {
    let origin = own_origin(wasup);
    let answer = send(
        wasup,
        Method::POST,
        "/ui/login",
        &[("Origin", &origin)],
        Some(&format!("key={API_KEY}&next=%2Fui")),
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    cookie_of(&answer)
}

/// The `name=value` part of the answer's `Set-Cookie`, after checking its attributes.
fn cookie_of(answer: &Answer) -> String {
    let set_cookie = answer.header("set-cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(API_KEY),
        "the cookie holds the key: {set_cookie}"
    );
    let pair = set_cookie.split(';').next().unwrap_or_default();
    assert!(pair.starts_with("wasup_ui=v2."), "{set_cookie}");
    pair.to_string()
}

/// Asserts the headers every UI page carries.
fn assert_page_headers(answer: &Answer) {
    assert!(
        answer.header("content-type").starts_with("text/html"),
        "{}",
        answer.header("content-type")
    );
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert!(
        !answer.body.contains("<script>"),
        "inline script: {}",
        answer.body
    );
}

#[actix_rt::test]
async fn without_a_credential_ui_pages_ask_to_sign_in_and_the_api_stays_json() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(config(&laravel)).await;
    for path in ["/ui", "/ui/sessions/abc"] {
        let answer = send(&wasup, Method::GET, path, &[], None).await;
        assert_eq!(answer.status, 401, "{path}");
        assert_page_headers(&answer);
        assert!(
            answer
                .body
                .contains("<form method=\"post\" action=\"/ui/login\">"),
            "{}",
            answer.body
        );
        assert!(
            answer
                .body
                .contains(&format!("name=\"next\" value=\"{path}\"")),
            "{}",
            answer.body
        );
    }
    let answer = send(&wasup, Method::GET, "/sessions", &[], None).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.body.contains("\"code\":\"unauthorized\""),
        "{}",
        answer.body
    );
    let forged = "wasup_ui=v1.99999999999.0000";
    let answer = send(
        &wasup,
        Method::GET,
        "/sessions",
        &[("Cookie", forged)],
        None,
    )
    .await;
    assert_eq!(answer.status, 401, "a forged cookie is refused");
    for asset in ["/ui/assets/app.js", "/ui/assets/style.css"] {
        let answer = send(&wasup, Method::GET, asset, &[], None).await;
        assert_eq!(
            answer.status, 200,
            "{asset} is public: the login page needs it"
        );
    }
}

#[actix_rt::test]
async fn a_wrong_key_is_refused_and_the_right_one_buys_a_cookie() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(config(&laravel)).await;
    let origin = own_origin(&wasup);
    for key in ["wrong", &API_KEY[..API_KEY.len() - 1], ""] {
        let form = format!("key={key}");
        let answer = send(
            &wasup,
            Method::POST,
            "/ui/login",
            &[("Origin", &origin)],
            Some(&form),
        )
        .await;
        assert_eq!(answer.status, 401, "key {key:?}");
        assert!(answer.body.contains("Wrong key."), "{}", answer.body);
        assert!(answer.header("set-cookie").is_empty());
    }
    // The key never goes in a URL: `?key=` is no login.
    for path in ["/ui?key=wrong".to_string(), format!("/ui?key={API_KEY}")] {
        let answer = send(&wasup, Method::GET, &path, &[], None).await;
        assert_eq!(answer.status, 401, "{path}");
        assert!(answer.header("set-cookie").is_empty(), "{path}");
    }
    let cookie = sign_in(&wasup).await;
    let answer = send(&wasup, Method::GET, "/ui", &[("Cookie", &cookie)], None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Back to the page asked for, never off the UI.
    for (next, location) in [
        ("%2Fui%2Fsessions%2Fabc", "/ui/sessions/abc"),
        ("https%3A%2F%2Fevil.example%2F", "/ui"),
        ("%2F%2Fevil.example", "/ui"),
    ] {
        let form = format!("key={API_KEY}&next={next}");
        let answer = send(
            &wasup,
            Method::POST,
            "/ui/login",
            &[("Origin", &origin)],
            Some(&form),
        )
        .await;
        assert_eq!(answer.status, 303);
        assert_eq!(answer.header("location"), location, "next={next}");
    }

    // A login form posted from another site is refused (login CSRF).
    let form = format!("key={API_KEY}");
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![],
    ] {
        let answer = send(&wasup, Method::POST, "/ui/login", &headers, Some(&form)).await;
        assert_eq!(answer.status, 403, "{headers:?}");
        assert!(answer.header("set-cookie").is_empty());
    }

    let answer = send(
        &wasup,
        Method::POST,
        "/ui/logout",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "same-origin")],
        None,
    )
    .await;
    assert_eq!(answer.status, 303);
    assert!(
        answer.header("set-cookie").contains("Max-Age=0"),
        "{}",
        answer.header("set-cookie")
    );
    // Signed out on the server too: the old cookie, kept, no longer works.
    let answer = send(&wasup, Method::GET, "/ui", &[("Cookie", &cookie)], None).await;
    assert_eq!(answer.status, 401, "a signed-out cookie still works");
    let answer = send(
        &wasup,
        Method::GET,
        "/sessions",
        &[("Cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(
        answer.status, 401,
        "a signed-out cookie still works on the API"
    );
    let fresh = sign_in(&wasup).await;
    let answer = send(&wasup, Method::GET, "/ui", &[("Cookie", &fresh)], None).await;
    assert_eq!(answer.status, 200, "a new login works");
}

#[actix_rt::test]
async fn the_cookie_is_secure_only_when_https_is_known() {
    let laravel = Laravel::start().await;
    for (trusted, proto, secure) in [
        (false, Some("https"), false),
        (true, Some("https"), true),
        (true, Some("http"), false),
        (true, None, false),
    ] {
        let mut config = config(&laravel);
        if trusted {
            config.http.trusted_proxies = vec!["127.0.0.1".into()];
        }
        let wasup = TestWasup::start(config).await;
        let origin = own_origin(&wasup);
        let mut headers = vec![("Origin", origin.as_str())];
        if let Some(proto) = proto {
            headers.push(("X-Forwarded-Proto", proto));
        }
        let form = format!("key={API_KEY}");
        let answer = send(&wasup, Method::POST, "/ui/login", &headers, Some(&form)).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert_eq!(
            answer.header("set-cookie").contains("; Secure"),
            secure,
            "trusted {trusted}, proto {proto:?}: {}",
            answer.header("set-cookie")
        );
    }
}

#[actix_rt::test]
async fn signed_in_the_pages_show_the_sessions_and_the_cookie_reads_the_api() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(config(&laravel)).await;
    let session_id = wasup.start_session(7).await;
    let cookie = sign_in(&wasup).await;
    let with_cookie = [("Cookie", cookie.as_str())];

    let list = send(&wasup, Method::GET, "/ui", &with_cookie, None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_page_headers(&list);
    assert!(
        list.body.contains(&format!(
            "<a href=\"/ui/sessions/{session_id}\">{session_id}</a>"
        )),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains("<script src=\"/ui/assets/app.js\" defer></script>"),
        "{}",
        list.body
    );

    let page = send(
        &wasup,
        Method::GET,
        &format!("/ui/sessions/{session_id}"),
        &with_cookie,
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_page_headers(&page);
    assert!(
        page.body
            .contains(&format!("data-session-id=\"{session_id}\"")),
        "{}",
        page.body
    );
    assert!(page.body.contains("<img id=\"qr\""), "{}", page.body);
    let unknown = send(&wasup, Method::GET, "/ui/sessions/nope", &with_cookie, None).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("No such session"), "{}", unknown.body);

    // The JSON API the page's script calls takes the cookie instead of the key.
    let answer = send(&wasup, Method::GET, "/sessions", &with_cookie, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains(&session_id), "{}", answer.body);
    let inspect = format!("/sessions/{session_id}");
    let answer = send(&wasup, Method::GET, &inspect, &with_cookie, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let qr = format!("/sessions/{session_id}/qr");
    common::wait_until(
        "the QR is served to the cookie",
        common::PATIENCE,
        || async {
            send(&wasup, Method::GET, &qr, &with_cookie, None)
                .await
                .body
                .contains("data:image/png;base64,")
        },
    )
    .await;

    // Nothing served carries the key.
    let script = send(&wasup, Method::GET, "/ui/assets/app.js", &[], None).await;
    let login = send(&wasup, Method::GET, "/ui", &[], None).await;
    for body in [&list.body, &page.body, &script.body, &login.body] {
        assert!(!body.contains(API_KEY), "the key leaked: {body}");
    }
}

#[actix_rt::test]
async fn a_cookie_post_or_delete_needs_the_same_origin() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(config(&laravel)).await;
    let cookie = sign_in(&wasup).await;
    let body = "{\"user_id\":1}";
    let post_start = |headers: Vec<(&'static str, String)>| {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let mut request = client
            .post(format!("{}/start", wasup.base))
            .insert_header(("Cookie", cookie.clone()))
            .content_type("application/json");
        for (name, value) in headers {
            request = request.insert_header((name, value));
        }
        async move {
            let mut response = request.send_body(body).await.expect("answers");
            let bytes = response.body().await.expect("body");
            (
                response.status().as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };
    for headers in [
        vec![],
        vec![("Origin", "http://evil.example".to_string())],
        vec![("Sec-Fetch-Site", "cross-site".to_string())],
        vec![("Sec-Fetch-Site", "same-site".to_string())],
        vec![
            ("Sec-Fetch-Site", "cross-site".to_string()),
            ("Origin", own_origin(&wasup)),
        ],
    ] {
        let (status, answer) = post_start(headers.clone()).await;
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert!(answer.contains("\"code\":\"cross_origin\""), "{answer}");
    }
    let (status, sessions) = wasup.get("/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(
        sessions["sessions"],
        serde_json::json!([]),
        "nothing started"
    );

    let (status, answer) = post_start(vec![("Sec-Fetch-Site", "same-origin".into())]).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = post_start(vec![("Origin", own_origin(&wasup))]).await;
    assert_eq!(status, 201, "{answer}");
}

#[actix_rt::test]
async fn without_an_api_key_the_pages_are_as_open_as_the_api() {
    let laravel = Laravel::start().await;
    let mut config = config(&laravel);
    config.http.api_key = String::new();
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(3).await;
    let answer = send(&wasup, Method::GET, "/ui", &[], None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains(&session_id), "{}", answer.body);
    assert!(!answer.body.contains("Sign out"), "nothing to sign out of");
    let page = format!("/ui/sessions/{session_id}");
    assert_eq!(
        send(&wasup, Method::GET, &page, &[], None).await.status,
        200
    );
    let answer = send(&wasup, Method::GET, "/ui/login", &[], None).await;
    assert_eq!(answer.status, 303);
    assert!(answer.header("set-cookie").is_empty(), "no cookie to give");
}

#[actix_rt::test]
async fn the_ui_stays_out_of_the_openapi_document() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(config(&laravel)).await;
    let (status, document) = wasup.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/sessions"), "{paths:?}");
    assert!(
        paths.keys().all(|path| !path.starts_with("/ui")),
        "{:?}",
        paths.keys()
    );
}
