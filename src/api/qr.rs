//! The QR a session shows now (`GET /sessions/{id}/qr`, PNG or JSON) and pairing by code
//! (`POST /sessions/{id}/pair-code`).

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Deserialize;
use wasup_actors::session::{CurrentQr, RequestPairCode};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{
    ApiError, AppState, phone_digits,
    schema::{PairCodeAnswer, QrAnswer},
    session_actor,
};

#[utoipa::path(get, path = "/sessions/{id}/qr", tag = "pairing", params(("id" = String, Path, description = "Session id")), responses((status = 200, description = "The QR shown now (JSON, or PNG with Accept: image/png)", content((QrAnswer = "application/json"), (Vec<u8> = "image/png"))), (status = 404, description = "No such session, or no QR now (connected)", body = ErrorBody), (status = 409, description = "Restarting after a crash", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `GET /sessions/{id}/qr`: `image/png` when the client accepts it (and not JSON), else
/// `{"session_id","qr","raw","expires_in"}`. 404 `no_qr` when the session shows none (connected).
pub async fn current_qr(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session_id = id.into_inner();
    let session = session_actor(&state, &session_id).await?;
    let qr = session
        .send(CurrentQr)
        .await
        .map_err(|_| restarting(&session_id))?
        .ok_or_else(|| ApiError::NoQr(session_id.clone()))?
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let expires_in = qr.expires_in_ms.div_ceil(1000);
    if wants_png(&request) {
        let png = qr.qr.png().to_vec();
        return Ok(HttpResponse::Ok()
            .content_type("image/png")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("X-Qr-Expires-In", expires_in.to_string()))
            .body(png));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(QrAnswer {
            session_id,
            qr: qr.qr.to_string(),
            raw: qr.raw,
            expires_in,
        }))
}

/// A session actor that died between the look-up and the call: it is restarting (409).
fn restarting(session_id: &str) -> ApiError {
    ApiError::Registry(wasup_actors::registry::RegistryError::Unavailable(
        session_id.to_string(),
    ))
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairCodeRequest {
    /// The phone to pair: digits with country code (a leading `+` is allowed).
    #[schema(pattern = r"^\+?[0-9]{8,15}$")]
    phone: String,
}

#[utoipa::path(post, path = "/sessions/{id}/pair-code", tag = "pairing", params(("id" = String, Path, description = "Session id")), request_body = PairCodeRequest, responses((status = 200, description = "A code to type on the phone", body = PairCodeAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "The engine refused (already paired), or restarting", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /sessions/{id}/pair-code {"phone":"..."}`: a code to type on the phone instead of scanning.
pub async fn pair_code(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<PairCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let phone = phone_digits(&body.into_inner().phone, 8, 15).ok_or_else(|| {
        ApiError::BadRequest("phone must be 8 to 15 digits with country code".into())
    })?;
    let session_id = id.into_inner();
    let session = session_actor(&state, &session_id).await?;
    let code = session
        .send(RequestPairCode { phone })
        .await
        .map_err(|_| restarting(&session_id))?
        .map_err(wasup_actors::registry::RegistryError::from)?;
    Ok(HttpResponse::Ok().json(PairCodeAnswer { session_id, code }))
}
