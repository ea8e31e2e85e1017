//! `GET`/`POST /api/v1/osmand`: position reports of Traccar Client, OsmAnd and GPS
//! pendants that speak the OsmAnd protocol, authenticated by the device's id and secret.
//!
//! These clients cannot send a bearer token, so the secret travels either as HTTP basic
//! auth (user = device id) or as a `key` parameter of the server URL the client is given.
//! The answer waits until the fix is stored: 200 means it is safe, 400 says what is
//! wrong with the report, 401 that the id or secret is not right. Every refusal is
//! dead-lettered and counted like a refused MQTT message.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use mimamori_protocol::api::ErrorBody;
use mimamori_protocol::native::{RejectReason, Rejection};
use mimamori_protocol::DeviceKind;

use super::AppState;
use crate::ingest::osmand::{self, Report};
use crate::ingest::{DeviceCtx, Item};
use crate::security;

/// What refused reports are filed under in the dead-letter table.
const TOPIC: &str = "osmand";

pub fn router() -> Router<AppState> {
    Router::new().route("/osmand", get(report).post(report))
}

async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
        || body.trim_ascii_start().starts_with(b"{");
    let parsed = if is_json {
        osmand::from_json(&body)
    } else {
        params.extend(form_urlencoded::parse(&body).into_owned());
        osmand::from_params(&params)
    };
    let raw = if body.is_empty() {
        query.as_bytes()
    } else {
        &body[..]
    };
    let report = match parsed {
        Ok(r) => r,
        Err(r) => return refuse(&st, None, raw, r, StatusCode::BAD_REQUEST).await,
    };
    let device = match authenticate(&st, &headers, &params, &report).await {
        Ok(d) => d,
        Err((r, status)) => return refuse(&st, None, raw, r, status).await,
    };
    let events = match report.into_events(&device, st.clock.now()) {
        Ok(evs) => evs,
        Err(r) => return refuse(&st, Some(&device.id), raw, r, StatusCode::BAD_REQUEST).await,
    };
    let mut receipts = Vec::with_capacity(events.len());
    for event in events {
        receipts.push(st.edge.ingest.submit(Item::Accepted(event), true).await);
    }
    let mut stored = true;
    for receipt in receipts {
        stored &= match receipt {
            Some(rx) => rx.await.unwrap_or(false),
            None => false,
        };
    }
    if stored {
        StatusCode::OK.into_response()
    } else {
        // The client keeps the report and sends it again, as after any network failure.
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the report could not be stored; send it again".into(),
        )
    }
}

/// The device the report claims to be, if its secret matches and it may send fixes.
async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
    report: &Report,
) -> Result<DeviceCtx, (Rejection, StatusCode)> {
    let unauthorized =
        |reason, detail: String| Err((Rejection::new(reason, detail), StatusCode::UNAUTHORIZED));
    let (user, secret) = match basic_auth(headers) {
        Some((user, secret)) => (Some(user), Some(secret)),
        None => (
            None,
            params
                .iter()
                .rev()
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.clone()),
        ),
    };
    if user.as_deref().is_some_and(|u| u != report.device_id) {
        return unauthorized(
            RejectReason::NotAuthorized,
            format!(
                "basic auth user does not match device id {}",
                report.device_id
            ),
        );
    }
    let Some(secret) = secret else {
        return unauthorized(
            RejectReason::NotAuthorized,
            "no secret: give it as the key parameter or with basic auth".into(),
        );
    };
    let found = st.store.device_auth(&report.device_id).await.map_err(|e| {
        tracing::warn!(error = %e, "store unavailable while authenticating an OsmAnd report");
        (
            Rejection::new(RejectReason::UnknownDevice, "store unavailable"),
            StatusCode::SERVICE_UNAVAILABLE,
        )
    })?;
    let Some(d) = found else {
        return unauthorized(
            RejectReason::UnknownDevice,
            format!("no device {}", report.device_id),
        );
    };
    if !security::verify_token(secret.as_bytes(), &d.secret_hash) {
        return unauthorized(
            RejectReason::NotAuthorized,
            format!("wrong secret for device {}", d.id),
        );
    }
    if d.kind != DeviceKind::Gps {
        return Err((
            Rejection::new(
                RejectReason::NotAuthorized,
                format!(
                    "{} is a {} device; only gps devices send positions",
                    d.id,
                    d.kind.as_str()
                ),
            ),
            StatusCode::FORBIDDEN,
        ));
    }
    Ok(DeviceCtx {
        id: d.id,
        resident_id: d.resident_id,
        kind: d.kind,
    })
}

/// `Authorization: Basic base64(user:password)`, if present and well-formed.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Dead-letters and counts a refused report, then answers with the reason.
async fn refuse(
    st: &AppState,
    device_id: Option<&str>,
    raw: &[u8],
    r: Rejection,
    status: StatusCode,
) -> Response {
    let message = r.detail.clone();
    let code = r.reason.as_str();
    // The key parameter is a secret: it never reaches the dead-letter table.
    let raw = redact_key(raw);
    let ingest = &st.edge.ingest;
    let reason = r.reason;
    let item = match device_id {
        Some(_) => Some(ingest.refuse(device_id, TOPIC, &raw, r.reason, r.detail)),
        None => ingest.refuse_anonymous(TOPIC, &raw, r.reason, r.detail),
    };
    match item {
        Some(item) => {
            ingest.submit(item, false).await;
        }
        // Not kept, but still counted (the pipeline counts the ones it stores).
        None => st.metrics.reject(reason),
    }
    error(status, code, message)
}

fn redact_key(raw: &[u8]) -> Vec<u8> {
    if raw.trim_ascii_start().starts_with(b"{") {
        return raw.to_vec();
    }
    let pairs = form_urlencoded::parse(raw).map(|(k, v)| {
        let v = if k == "key" { "REDACTED".into() } else { v };
        (k, v)
    });
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_string(),
            message,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_dead_letters() {
        let out = redact_key(b"id=dev-a&key=s3cret&lat=1");
        assert_eq!(String::from_utf8_lossy(&out), "id=dev-a&key=REDACTED&lat=1");
    }

    #[test]
    fn basic_auth_is_read() {
        let mut h = HeaderMap::new();
        // "dev-a:s3cret"
        h.insert(
            header::AUTHORIZATION,
            "Basic ZGV2LWE6czNjcmV0"
                .parse()
                .unwrap_or(header::HeaderValue::from_static("")),
        );
        assert_eq!(basic_auth(&h), Some(("dev-a".into(), "s3cret".into())));
    }
}
