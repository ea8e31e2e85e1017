//! BLE tag networks: where each receiver is, which tag id each `tag` device is, and the
//! passage history of a resident's tag ("last seen at station X"). Every change reloads
//! the receivers or tags into the edge's in-memory table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mimamori_protocol::gateway::{BleTag, NewBleTag, NewReceiver, Receiver};
use mimamori_protocol::native::position;
use mimamori_protocol::DeviceKind;
use serde::Deserialize;

use super::activity::visible_resident;
use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{audit, AppState};
use crate::edge::maps::MapChange;
use crate::store::{StoreError, StoredReading};

/// A receiver's range when the registration gives none: an ESP32 hears a tag in a
/// shoe at roughly this distance outdoors.
const DEFAULT_RANGE_M: f64 = 30.0;
const MAX_RANGE_M: f64 = 1000.0;
const MAX_TEXT: usize = 200;
const MAX_SIGHTINGS: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/devices/{id}/receiver",
            get(get_receiver).put(put_receiver),
        )
        .route("/devices/{id}/tag", post(create_tag))
        .route("/residents/{id}/sightings", get(sightings))
}

async fn device_of_kind(st: &AppState, id: &str, kind: DeviceKind) -> ApiResult<i64> {
    let device = st
        .store
        .device(id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    if device.kind != kind {
        return Err(ApiError::Invalid(format!(
            "device {id} is a {} device, not a {}",
            device.kind.as_str(),
            kind.as_str()
        )));
    }
    Ok(device.resident_id)
}

async fn put_receiver(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NewReceiver>,
) -> ApiResult<Json<Receiver>> {
    caller.require_staff()?;
    let resident_id = device_of_kind(&st, &id, DeviceKind::Receiver).await?;
    let receiver = valid_receiver(id.clone(), resident_id, req, st.clock.now())?;
    st.store
        .put_receiver(&receiver)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict(format!(
                "another receiver already reports as room {:?}",
                receiver.room
            )),
            other => other.into(),
        })?;
    st.maps_changed(MapChange::BleReceivers).await?;
    let rows = st.store.receivers().await?;
    audit(
        &st,
        &caller,
        "ble.receiver",
        format!("device/{id}/receiver"),
        serde_json::to_value(&receiver).unwrap_or_default(),
    )
    .await?;
    let stored = rows
        .into_iter()
        .find(|r| r.device_id == id)
        .ok_or_else(|| anyhow::anyhow!("receiver {id} vanished after it was stored"))?;
    Ok(Json(stored))
}

async fn get_receiver(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Receiver>> {
    caller.require_staff()?;
    device_of_kind(&st, &id, DeviceKind::Receiver).await?;
    let rows = st.store.receivers().await?;
    rows.into_iter()
        .find(|r| r.device_id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("receiver {id} has no place yet")))
}

async fn create_tag(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NewBleTag>,
) -> ApiResult<(StatusCode, Json<BleTag>)> {
    caller.require_staff()?;
    device_of_kind(&st, &id, DeviceKind::Tag).await?;
    let tag_id = valid_name("tag_id", &req.tag_id)?;
    st.store
        .create_ble_tag(&tag_id, &id, st.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict(format!(
                "tag {tag_id:?} is already registered, or device {id} already has a tag"
            )),
            other => other.into(),
        })?;
    st.maps_changed(MapChange::BleTags).await?;
    let rows = st.store.ble_tags().await?;
    audit(
        &st,
        &caller,
        "ble.tag",
        format!("device/{id}/tag"),
        serde_json::json!({"tag_id": tag_id}),
    )
    .await?;
    let created = rows
        .into_iter()
        .find(|t| t.tag_id == tag_id)
        .ok_or_else(|| anyhow::anyhow!("tag {tag_id} vanished after it was created"))?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
struct SightingsQuery {
    limit: Option<i64>,
}

/// The resident's sightings, newest first: the first is "last seen at".
async fn sightings(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<SightingsQuery>,
) -> ApiResult<Json<Vec<StoredReading>>> {
    caller.check_resident(id)?;
    visible_resident(&st, id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_SIGHTINGS);
    let sightings = st.store.sightings(id, limit).await?;
    st.privacy.access.record(
        &caller.user,
        id,
        crate::privacy::access::Read::Positions,
        sightings.len(),
    );
    Ok(Json(sightings))
}

fn valid_name(what: &str, v: &str) -> ApiResult<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_TEXT {
        return Err(ApiError::Invalid(format!(
            "{what} must be 1 to {MAX_TEXT} characters"
        )));
    }
    if v.contains(['/', '+', '#']) {
        return Err(ApiError::Invalid(format!(
            "{what} {v:?} cannot be an MQTT topic level: no /, + or #"
        )));
    }
    Ok(v.to_string())
}

fn valid_receiver(
    device_id: String,
    resident_id: i64,
    req: NewReceiver,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<Receiver> {
    let place = req.place.trim().to_string();
    if place.is_empty() || place.chars().count() > MAX_TEXT {
        return Err(ApiError::Invalid(format!(
            "place must be 1 to {MAX_TEXT} characters"
        )));
    }
    let room = req
        .room
        .as_deref()
        .map(|r| valid_name("room", r))
        .transpose()?;
    let range_m = req.range_m.unwrap_or(DEFAULT_RANGE_M);
    if !(range_m.is_finite() && (1.0..=MAX_RANGE_M).contains(&range_m)) {
        return Err(ApiError::Invalid(format!(
            "range_m must be 1 to {MAX_RANGE_M} metres"
        )));
    }
    match (req.lat, req.lon) {
        (Some(lat), Some(lon)) => {
            position(lat, lon, None).map_err(|r| ApiError::Invalid(r.detail))?;
        }
        (None, None) => {}
        _ => return Err(ApiError::Invalid("lat and lon come together".into())),
    }
    Ok(Receiver {
        device_id,
        resident_id,
        place,
        room,
        lat: req.lat,
        lon: req.lon,
        range_m,
        created_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(lat: Option<f64>, lon: Option<f64>, range_m: Option<f64>) -> NewReceiver {
        NewReceiver {
            place: "Koenji station".into(),
            room: Some("koenji_north".into()),
            lat,
            lon,
            range_m,
        }
    }

    #[test]
    fn receivers_need_a_place_a_sane_range_and_both_coordinates_or_none() {
        let ok = valid_receiver(
            "rx".into(),
            1,
            req(Some(35.7), Some(139.6), None),
            chrono::Utc::now(),
        );
        assert_eq!(ok.map(|r| r.range_m).ok(), Some(DEFAULT_RANGE_M));
        assert!(valid_receiver(
            "rx".into(),
            1,
            req(None, None, Some(50.0)),
            chrono::Utc::now()
        )
        .is_ok());
        assert!(valid_receiver(
            "rx".into(),
            1,
            req(Some(35.7), None, None),
            chrono::Utc::now()
        )
        .is_err());
        assert!(valid_receiver(
            "rx".into(),
            1,
            req(Some(95.0), Some(0.0), None),
            chrono::Utc::now()
        )
        .is_err());
        assert!(valid_receiver(
            "rx".into(),
            1,
            req(None, None, Some(0.0)),
            chrono::Utc::now()
        )
        .is_err());
        assert!(valid_name("room", "a/b").is_err());
        assert!(valid_name("tag_id", "iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-7").is_ok());
    }
}
