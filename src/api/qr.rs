//! The QR a session shows now (`GET /sessions/{id}/qr`, PNG or JSON) and pairing by code
//! (`POST /sessions/{id}/pair-code`).

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Deserialize;
use serde_json::json;
use wasup_actors::{
    qr_image::{qr_data_url, qr_png},
    registry::LookupSession,
    session::{CurrentQr, RequestPairCode},
};

use super::{ApiError, AppState};

/// `GET /sessions/{id}/qr`: `image/png` when the client accepts it (and not JSON), else
/// `{"session_id","qr","raw","expires_in"}`. 404 `no_qr` when the session shows none (connected).
pub async fn current_qr(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session_id = id.into_inner();
    let session = state
        .registry
        .send(LookupSession {
            session_id: session_id.clone(),
        })
        .await??;
    let qr = session
        .send(CurrentQr)
        .await?
        .ok_or_else(|| ApiError::NoQr(session_id.clone()))?;
    let render_error =
        |error: wasup_actors::qr_image::QrImageError| ApiError::Unavailable(error.to_string());
    let expires_in = qr.expires_in_ms.div_ceil(1000);
    if wants_png(&request) {
        return Ok(HttpResponse::Ok()
            .content_type("image/png")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("X-Qr-Expires-In", expires_in.to_string()))
            .body(qr_png(&qr.raw).map_err(render_error)?));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "session_id": session_id,
            "qr": qr_data_url(&qr.raw).map_err(render_error)?,
            "raw": qr.raw,
            "expires_in": expires_in,
        })))
}

/// Whether `Accept` prefers a PNG: it names `image/png` (or `image/*`) and not JSON.
fn wants_png(request: &HttpRequest) -> bool {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    (accept.contains("image/png") || accept.contains("image/*"))
        && !accept.contains("application/json")
}

/// `POST /sessions/{id}/pair-code` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairCodeRequest {
    /// The phone to pair: digits with country code (a leading `+` is allowed).
    phone: String,
}

/// `POST /sessions/{id}/pair-code {"phone":"..."}`: a code to type on the phone instead of scanning.
pub async fn pair_code(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<PairCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let phone = body.into_inner().phone;
    let phone = phone.strip_prefix('+').unwrap_or(&phone).to_string();
    if !(8..=15).contains(&phone.len()) || !phone.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::BadRequest(
            "phone must be 8 to 15 digits with country code".into(),
        ));
    }
    let session_id = id.into_inner();
    let session = state
        .registry
        .send(LookupSession {
            session_id: session_id.clone(),
        })
        .await??;
    let code = session
        .send(RequestPairCode { phone })
        .await?
        .map_err(wasup_actors::registry::RegistryError::from)?;
    Ok(HttpResponse::Ok().json(json!({ "session_id": session_id, "code": code })))
}
