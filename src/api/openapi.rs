//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations
//! (`GET /openapi.json`; `docs/openapi.json` is the checked-in copy, kept equal by a test).

use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
};

use super::{dead_letters, health, messages, qr, schema, sessions, simulate};

/// Adds the `X-Api-Key` security scheme, required by every call that does not opt out.
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// Adds the guard's answers to the operations it can give them on: 415 to every one taking a
/// body, 429 to every one needing the key.
struct GuardAnswers;

impl Modify for GuardAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                if operation.request_body.is_some() {
                    responses
                        .entry("415".into())
                        .or_insert_with(|| answer("Body not JSON (Content-Type)").into());
                }
                if path != "/health" {
                    responses
                        .entry("429".into())
                        .or_insert_with(|| answer("Rate limited").into());
                }
            }
        }
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "wasup", description = "WhatsApp session supervisor: REST control API."),
    paths(
        health::health, health::batch_metrics, health::cache_metrics, health::prometheus_metrics,
        sessions::start, sessions::list, sessions::inspect, sessions::remove,
        sessions::cleanup_pending, sessions::cleanup_inactive,
        qr::current_qr, qr::pair_code, messages::send, messages::status,
        dead_letters::list, dead_letters::replay,
        simulate::scan, simulate::disconnect, simulate::crash, simulate::fail_messages,
        simulate::message, simulate::halt,
    ),
    components(schemas(schema::ErrorBody)),
    modifiers(&ApiKeyScheme, &GuardAnswers),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

/// The document as pretty JSON, with a trailing newline (as checked in); built once.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
        json.push('\n');
        json
    })
}
