//! LoRaWAN devices of a gateway: which DevEUI behind the gateway's network server is
//! which hub device, and which decoded fields say what — per device, or per device
//! profile (one model's codec) registered on the gateway and followed by its devices.
//! Every change reloads the gateway's registrations into the edge's in-memory table
//! (every hub's, in cluster mode).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use mimamori_protocol::gateway::{
    LoraFields, LoraProfile, LorawanDevice, NewLoraFields, NewLoraProfile, NewLorawanDevice,
};
use mimamori_protocol::DeviceKind;

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiResult};
use super::gateways::{gateway, read_back, registered_device, taken};
use super::{audit, AppState};
use crate::edge::maps::MapChange;
use crate::ingest::lorawan::{normalise_dev_eui, resolve_fields};

/// Longest field name, and most `on` values, each at most as long.
const MAX_FIELD: usize = 100;
const MAX_ON_VALUES: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}/lorawan", post(create).get(list))
        .route("/devices/{id}/lorawan/{dev_eui}", delete(remove))
        .route("/devices/{id}/lorawan/profiles", get(profiles))
        .route(
            "/devices/{id}/lorawan/profiles/{name}",
            put(put_profile).delete(remove_profile),
        )
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
    let device = registered_device(
        &st,
        &req.device_id,
        &[
            DeviceKind::Motion,
            DeviceKind::Door,
            DeviceKind::Button,
            DeviceKind::Gps,
        ],
        "a LoRaWAN device can be a motion, door, button or gps device",
    )
    .await?;
    let profile = followed_profile(&st, &gateway_id, &req).await?;
    let given = profile
        .as_ref()
        .map_or(req.fields, |p| Some(p.fields.clone()));
    let fields = resolve_fields(device.kind, given);
    valid_fields(&fields)?;
    let name = profile.as_ref().map(|p| p.name.as_str());
    st.store
        .create_lorawan_device(&gateway_id, &eui, &device.id, &fields, name, st.clock.now())
        .await
        .map_err(|e| {
            taken(e, || format!(
                "DevEUI {eui} is already registered on gateway {gateway_id}, or device {} is already registered",
                device.id
            ))
        })?;
    let rows = reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "lorawan.register",
        format!("device/{gateway_id}/lorawan/{eui}"),
        serde_json::json!({"device_id": device.id, "fields": fields, "profile": name}),
    )
    .await?;
    let created = read_back(rows, |l| l.dev_eui == eui, &eui)?;
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
        .map_err(or_not_found(|| {
            format!("no DevEUI {eui} on gateway {gateway_id}")
        }))?;
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

/// The profile a registration follows, which must be registered on its gateway.
async fn followed_profile(
    st: &AppState,
    gateway_id: &str,
    req: &NewLorawanDevice,
) -> ApiResult<Option<LoraProfile>> {
    let Some(name) = &req.profile else {
        return Ok(None);
    };
    if req.fields.is_some() {
        return Err(ApiError::Invalid(
            "give either fields or a profile, not both".into(),
        ));
    }
    let found = st
        .store
        .lorawan_profiles(gateway_id)
        .await?
        .into_iter()
        .find(|p| &p.name == name);
    found.map(Some).ok_or_else(|| {
        ApiError::Invalid(format!(
            "no profile {name:?} on gateway {gateway_id}: PUT /api/v1/devices/{gateway_id}/lorawan/profiles/{{name}} first"
        ))
    })
}

async fn profiles(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
) -> ApiResult<Json<Vec<LoraProfile>>> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    Ok(Json(st.store.lorawan_profiles(&gateway_id).await?))
}

/// Creates or replaces a profile; the devices that follow it take the new mapping at once.
async fn put_profile(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath((gateway_id, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<NewLoraProfile>,
) -> ApiResult<Json<LoraProfile>> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    let name = profile_name(&name)?;
    valid_given(&req.fields)?;
    let profile = st
        .store
        .put_lorawan_profile(&gateway_id, &name, &req.fields, st.clock.now())
        .await?;
    reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "lorawan.profile",
        format!("device/{gateway_id}/lorawan/profiles/{name}"),
        serde_json::json!({"fields": req.fields}),
    )
    .await?;
    Ok(Json(profile))
}

async fn remove_profile(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath((gateway_id, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    st.store
        .delete_lorawan_profile(&gateway_id, &name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ApiError::NotFound(format!("no profile {name:?} on gateway {gateway_id}"))
            }
            crate::store::StoreError::Conflict(why) => ApiError::Conflict(format!(
                "profile {name:?} is in use ({why}): register those devices otherwise first"
            )),
            other => other.into(),
        })?;
    audit(
        &st,
        &caller,
        "lorawan.profile.delete",
        format!("device/{gateway_id}/lorawan/profiles/{name}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A profile's name, as ChirpStack and TTS name device profiles ("Milesight WS202").
fn profile_name(given: &str) -> ApiResult<String> {
    let name = given.trim();
    if name.is_empty() || name.chars().count() > MAX_FIELD || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "a profile name is 1 to {MAX_FIELD} characters, got {given:?}"
        )));
    }
    Ok(name.to_string())
}

/// A profile's partial mapping, within the bounds of a whole one.
fn valid_given(f: &NewLoraFields) -> ApiResult<()> {
    valid_fields(&resolve_fields(DeviceKind::Motion, Some(f.clone())))
}

async fn reload(st: &AppState, gateway_id: &str) -> ApiResult<Vec<LorawanDevice>> {
    st.maps_changed(MapChange::Lorawan {
        gateway: gateway_id.to_string(),
    })
    .await?;
    Ok(st.store.lorawan_devices(Some(gateway_id)).await?)
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
