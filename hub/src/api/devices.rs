//! Devices and their MQTT credentials: issued once, stored hashed, revocable at once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::api::{Device, DeviceCreated, DevicePatch, MqttCredentials, NewDevice};
use mimamori_protocol::topic::device_prefix;
use mimamori_protocol::{DeviceKind, DeviceRole};

use super::auth::AuthUser;
use super::error::{or_not_found, when_missing, ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::edge::maps::MapChange;
use crate::pipeline::Command;
use crate::security;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", post(create).get(list))
        .route("/devices/{id}", delete(remove).get(one).patch(patch))
        .route("/devices/{id}/rotate-secret", post(rotate))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, Json<DeviceCreated>)> {
    caller.require_staff()?;
    let name = super::text::display_name("name", &req.name, 100)?;
    let (room, role) = valid_place(req.kind, req.room.as_deref(), req.role)?;
    st.store
        .resident(req.resident_id)
        .await
        .map_err(when_missing(|| {
            ApiError::Invalid(format!("resident {} does not exist", req.resident_id))
        }))?;
    if !st.privacy.devices_before_consent && !st.store.has_consent(req.resident_id).await? {
        return Err(ApiError::Conflict(format!(
            "resident {} has no current consent on record: record it first with POST /api/v1/residents/{}/consent",
            req.resident_id, req.resident_id
        )));
    }
    let device = Device {
        id: security::random_id("dev-", 12),
        resident_id: req.resident_id,
        kind: req.kind,
        name: name.clone(),
        created_at: st.clock.now(),
        last_seen_at: None,
        battery: None,
        room,
        role,
    };
    let secret = security::random_secret();
    st.store
        .create_device(&device, &security::hash_token(&secret))
        .await?;
    st.pipeline.send(Command::Reload(device.resident_id)).await;
    audit(
        &st,
        &caller,
        "device.create",
        format!("device/{}", device.id),
        serde_json::json!({"resident_id": device.resident_id, "kind": device.kind, "room": device.room, "role": device.role}),
    )
    .await?;
    let created = DeviceCreated {
        mqtt: credentials(&device.id, secret),
        id: device.id,
        resident_id: device.resident_id,
        kind: device.kind,
        name: device.name,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// The room (a display name) and role a device may have: only a door can be the entrance.
fn valid_place(
    kind: DeviceKind,
    room: Option<&str>,
    role: Option<DeviceRole>,
) -> ApiResult<(Option<String>, Option<DeviceRole>)> {
    let room = room
        .map(|r| super::text::display_name("room", r, 64))
        .transpose()?;
    if role == Some(DeviceRole::Entrance) && kind != DeviceKind::Door {
        return Err(ApiError::Invalid(format!(
            "role entrance is for a door device, not a {} device",
            kind.as_str()
        )));
    }
    Ok((room, role))
}

/// Changes where a device is and what it is for; the rules learn it at once.
async fn patch(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(p): ApiJson<DevicePatch>,
) -> ApiResult<Json<Device>> {
    caller.require_staff()?;
    let mut device = st
        .store
        .device(&id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    let room = p.room.clone().unwrap_or(device.room.clone());
    let role = p.role.unwrap_or(device.role);
    (device.room, device.role) = valid_place(device.kind, room.as_deref(), role)?;
    st.store
        .set_device_place(&id, device.room.as_deref(), device.role)
        .await?;
    st.pipeline.send(Command::Reload(device.resident_id)).await;
    audit(
        &st,
        &caller,
        "device.update",
        format!("device/{id}"),
        serde_json::json!({"room": p.room, "role": p.role}),
    )
    .await?;
    Ok(Json(device))
}

fn credentials(id: &str, secret: String) -> MqttCredentials {
    MqttCredentials {
        username: id.to_string(),
        password: secret,
        topic_prefix: device_prefix(id),
    }
}

async fn list(State(st): State<AppState>, caller: AuthUser) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(
        st.store.list_devices(caller.scope().as_deref()).await?,
    ))
}

async fn one(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Device>> {
    let device = st
        .store
        .device(&id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    caller
        .check_resident(device.resident_id)
        .map_err(|_| ApiError::NotFound(format!("no device {id}")))?;
    Ok(Json(device))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    let device = st
        .store
        .device(&id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    st.store.delete_device(&id).await?;
    st.maps_changed(MapChange::DeviceRemoved { device: id.clone() })
        .await?;
    st.pipeline.send(Command::Reload(device.resident_id)).await;
    audit(
        &st,
        &caller,
        "device.delete",
        format!("device/{id}"),
        serde_json::json!({"resident_id": device.resident_id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeviceCreated>> {
    caller.require_staff()?;
    let device = st
        .store
        .device(&id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    let secret = security::random_secret();
    st.store
        .set_device_secret(&id, &security::hash_token(&secret))
        .await?;
    // A session opened with the old secret must not outlive it.
    st.edge.kick(&id);
    audit(
        &st,
        &caller,
        "device.rotate_secret",
        format!("device/{id}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(Json(DeviceCreated {
        mqtt: credentials(&device.id, secret),
        id: device.id,
        resident_id: device.resident_id,
        kind: device.kind,
        name: device.name,
    }))
}
