//! LoRaWAN devices of a gateway: which DevEUI behind the gateway's network server is
//! which hub device, and which decoded fields say what. Every change reloads the
//! gateway's registrations into the edge's in-memory table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::gateway::{LoraFields, LorawanDevice, NewLorawanDevice};
use mimamori_protocol::DeviceKind;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::gateways::gateway;
use super::{audit, AppState};
use crate::ingest::lorawan::{normalise_dev_eui, resolve_fields};

/// Longest field name, and most `on` values, each at most as long.
const MAX_FIELD: usize = 100;
const MAX_ON_VALUES: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}/lorawan", post(create).get(list))
        .route("/devices/{id}/lorawan/{dev_eui}", delete(remove))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
    ApiJson(req): ApiJson<NewLorawanDevice>,
) -> ApiResult<(StatusCode, Json<LorawanDevice>)> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    let eui = dev_eui(&req.dev_eui)?;
    let device = st
        .store
        .device(&req.device_id)
        .await
        .map_err(|_| ApiError::Invalid(format!("device {} does not exist", req.device_id)))?;
    if !matches!(
        device.kind,
        DeviceKind::Motion | DeviceKind::Door | DeviceKind::Button | DeviceKind::Gps
    ) {
        return Err(ApiError::Invalid(format!(
            "device {} is a {} device; a LoRaWAN device can be a motion, door, button or gps device",
            device.id,
            device.kind.as_str()
        )));
    }
    let fields = resolve_fields(device.kind, req.fields);
    valid_fields(&fields)?;
    st.store
        .create_lorawan_device(&gateway_id, &eui, &device.id, &fields, st.clock.now())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => ApiError::Conflict(format!(
                "DevEUI {eui} is already registered on gateway {gateway_id}, or device {} is already registered",
                device.id
            )),
            other => other.into(),
        })?;
    let rows = reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "lorawan.register",
        format!("device/{gateway_id}/lorawan/{eui}"),
        serde_json::json!({"device_id": device.id, "fields": fields}),
    )
    .await?;
    let created = rows
        .into_iter()
        .find(|l| l.dev_eui == eui)
        .ok_or_else(|| anyhow::anyhow!("registration {eui} vanished after it was created"))?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
) -> ApiResult<Json<Vec<LorawanDevice>>> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    Ok(Json(st.store.lorawan_devices(Some(&gateway_id)).await?))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath((gateway_id, eui)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    let eui = dev_eui(&eui)?;
    st.store
        .delete_lorawan_device(&gateway_id, &eui)
        .await
        .map_err(|_| ApiError::NotFound(format!("no DevEUI {eui} on gateway {gateway_id}")))?;
    reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "lorawan.unregister",
        format!("device/{gateway_id}/lorawan/{eui}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reload(st: &AppState, gateway_id: &str) -> ApiResult<Vec<LorawanDevice>> {
    let rows = st.store.lorawan_devices(Some(gateway_id)).await?;
    st.edge.ingest.lorawan().replace_gateway(gateway_id, &rows);
    Ok(rows)
}

fn dev_eui(given: &str) -> ApiResult<String> {
    normalise_dev_eui(given)
        .ok_or_else(|| ApiError::Invalid(format!("dev_eui {given:?} must be 16 hex digits")))
}

fn valid_fields(f: &LoraFields) -> ApiResult<()> {
    let names = [&f.state, &f.latitude, &f.longitude, &f.accuracy, &f.battery];
    if let Some(n) = names.iter().find(|n| n.len() > MAX_FIELD) {
        return Err(ApiError::Invalid(format!(
            "field name {n:?} is longer than {MAX_FIELD} characters"
        )));
    }
    if f.on.len() > MAX_ON_VALUES || f.on.iter().any(|v| v.is_empty() || v.len() > MAX_FIELD) {
        return Err(ApiError::Invalid(format!(
            "at most {MAX_ON_VALUES} on values, each 1 to {MAX_FIELD} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_mappings_are_bounded() {
        let ok = resolve_fields(DeviceKind::Motion, None);
        assert!(valid_fields(&ok).is_ok());
        let long = LoraFields {
            state: "x".repeat(101),
            ..ok.clone()
        };
        assert!(valid_fields(&long).is_err());
        let empty = LoraFields {
            on: vec![String::new()],
            ..ok
        };
        assert!(valid_fields(&empty).is_err());
        assert!(dev_eui("0101010101010101").is_ok());
        assert!(dev_eui("01").is_err());
    }
}
