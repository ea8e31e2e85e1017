//! ECHONET Lite devices of an echonetlite2mqtt gateway: which ECHONET device (by its id
//! or alias in echonetlite2mqtt's topics) is which hub device. Every change reloads the
//! mappings into the edge's in-memory table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mimamori_protocol::gateway::{EchonetDevice, NewEchonetDevice};
use mimamori_protocol::DeviceKind;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::gateways::{gateway, read_back, registered_device, taken};
use super::{audit, AppState};
use crate::edge::maps::MapChange;
use crate::ingest::echonet::DEFAULT_ACTIVITY_ABOVE_W;

const MAX_ID: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/devices/{id}/echonet", post(create).get(list))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
    ApiJson(req): ApiJson<NewEchonetDevice>,
) -> ApiResult<(StatusCode, Json<EchonetDevice>)> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    let id = req.echonet_id.trim().to_string();
    if id.is_empty() || id.len() > MAX_ID || id.contains(['/', '+', '#']) {
        return Err(ApiError::Invalid(format!(
            "echonet_id {id:?} must be 1 to {MAX_ID} characters of one topic level"
        )));
    }
    let threshold = req.activity_above_w.unwrap_or(DEFAULT_ACTIVITY_ABOVE_W);
    if !(threshold.is_finite() && (1.0..=10_000.0).contains(&threshold)) {
        return Err(ApiError::Invalid(
            "activity_above_w must be 1 to 10000 watts".into(),
        ));
    }
    let device = registered_device(
        &st,
        &req.device_id,
        &[DeviceKind::Motion, DeviceKind::Button],
        "an ECHONET Lite device can be a motion (human detection sensor, smart meter) or button (emergency button) device",
    )
    .await?;
    st.store
        .create_echonet_device(&gateway_id, &id, &device.id, threshold, st.clock.now())
        .await
        .map_err(|e| {
            taken(e, || {
                format!(
                "{id:?} is already mapped on gateway {gateway_id}, or device {} is already mapped",
                device.id
            )
            })
        })?;
    st.maps_changed(MapChange::Echonet).await?;
    let rows = st.store.echonet_devices(None).await?;
    audit(
        &st,
        &caller,
        "echonet.map",
        format!("device/{gateway_id}/echonet/{id}"),
        serde_json::json!({"device_id": device.id, "activity_above_w": threshold}),
    )
    .await?;
    let created = read_back(
        rows,
        |e| e.gateway_id == gateway_id && e.echonet_id == id,
        &id,
    )?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
) -> ApiResult<Json<Vec<EchonetDevice>>> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    Ok(Json(st.store.echonet_devices(Some(&gateway_id)).await?))
}
