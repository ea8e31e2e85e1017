//! Zigbee2MQTT gateways: which Zigbee device (by friendly name) behind a gateway is
//! which hub device. Every change reloads the gateway's mappings into the edge's
//! in-memory table (every hub's, in cluster mode), so messages are classified without a
//! store query each. The checks
//! every family's registrations share (the gateway, the registered device, a name already
//! taken, the row read back) are here too, for LoRaWAN and ECHONET Lite.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::api::Device;
use mimamori_protocol::gateway::{NewZigbeeDevice, ZigbeeDevice};
use mimamori_protocol::DeviceKind;

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::edge::maps::MapChange;
use crate::ingest::zigbee2mqtt::{default_ok_actions, default_sos_actions};
use crate::store::{ButtonActions, StoreError};

/// Longest friendly name accepted; Zigbee2MQTT itself sets no limit.
const MAX_NAME: usize = 200;
/// Most SOS (or "I'm OK") actions per device, each at most this long.
const MAX_ACTIONS: usize = 20;
const MAX_ACTION_LEN: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}/zigbee", post(create).get(list))
        .route("/devices/{id}/zigbee/{*friendly_name}", delete(remove))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
    ApiJson(req): ApiJson<NewZigbeeDevice>,
) -> ApiResult<(StatusCode, Json<ZigbeeDevice>)> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    let name = valid_friendly_name(&req.friendly_name)?;
    let device = registered_device(
        &st,
        &req.device_id,
        &[DeviceKind::Motion, DeviceKind::Door, DeviceKind::Button],
        "a Zigbee device can be a motion, door or button device",
    )
    .await?;
    let actions = ButtonActions {
        sos: req
            .sos_actions
            .unwrap_or_else(|| default_sos_actions(device.kind)),
        ok: req
            .ok_actions
            .unwrap_or_else(|| default_ok_actions(device.kind)),
    };
    valid_actions(&actions)?;
    st.store
        .create_zigbee_device(&gateway_id, &name, &device.id, &actions, st.clock.now())
        .await
        .map_err(|e| {
            taken(e, || {
                format!(
                "{name:?} is already mapped on gateway {gateway_id}, or device {} is already mapped",
                device.id
            )
            })
        })?;
    let rows = reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "zigbee.map",
        format!("device/{gateway_id}/zigbee/{name}"),
        serde_json::json!({"device_id": device.id, "sos_actions": actions.sos, "ok_actions": actions.ok}),
    )
    .await?;
    let created = read_back(rows, |z| z.friendly_name == name, &name)?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(gateway_id): ApiPath<String>,
) -> ApiResult<Json<Vec<ZigbeeDevice>>> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    Ok(Json(st.store.zigbee_devices(Some(&gateway_id)).await?))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath((gateway_id, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    gateway(&st, &gateway_id).await?;
    st.store
        .delete_zigbee_device(&gateway_id, &name)
        .await
        .map_err(or_not_found(|| {
            format!("no Zigbee device {name:?} on gateway {gateway_id}")
        }))?;
    reload(&st, &gateway_id).await?;
    audit(
        &st,
        &caller,
        "zigbee.unmap",
        format!("device/{gateway_id}/zigbee/{name}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The hub device a gateway's registration names: it must exist (a store outage stays
/// an outage) and be of one of `kinds`; `can_be` says which, in the refusal.
pub(super) async fn registered_device(
    st: &AppState,
    id: &str,
    kinds: &[DeviceKind],
    can_be: &str,
) -> ApiResult<Device> {
    let device = st.store.device(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::Invalid(format!("device {id} does not exist")),
        other => other.into(),
    })?;
    if !kinds.contains(&device.kind) {
        return Err(ApiError::Invalid(format!(
            "device {id} is a {} device; {can_be}",
            device.kind.as_str()
        )));
    }
    Ok(device)
}

/// A registration whose name or device is already taken is a 409 saying which.
pub(super) fn taken(e: StoreError, which: impl FnOnce() -> String) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::Conflict(which()),
        other => other.into(),
    }
}

/// The row just created, read back from the gateway's reloaded registrations.
pub(super) fn read_back<T>(rows: Vec<T>, is: impl Fn(&T) -> bool, name: &str) -> ApiResult<T> {
    rows.into_iter().find(is).ok_or_else(|| {
        anyhow::anyhow!("registration {name:?} vanished after it was created").into()
    })
}

/// The gateway named in the path, which must be a device of kind `gateway`.
pub(super) async fn gateway(st: &AppState, id: &str) -> ApiResult<()> {
    let device = st
        .store
        .device(id)
        .await
        .map_err(or_not_found(|| format!("no device {id}")))?;
    if device.kind != DeviceKind::Gateway {
        return Err(ApiError::Invalid(format!(
            "device {id} is a {} device, not a gateway",
            device.kind.as_str()
        )));
    }
    Ok(())
}

async fn reload(st: &AppState, gateway_id: &str) -> ApiResult<Vec<ZigbeeDevice>> {
    st.maps_changed(MapChange::Zigbee {
        gateway: gateway_id.to_string(),
    })
    .await?;
    Ok(st.store.zigbee_devices(Some(gateway_id)).await?)
}

/// A friendly name that can be a Zigbee2MQTT device topic and none of its other topics.
fn valid_friendly_name(name: &str) -> ApiResult<String> {
    let invalid = |why: &str| Err(ApiError::Invalid(format!("friendly_name {name:?} {why}")));
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return invalid("must be 1 to 200 characters");
    }
    if name.contains(['+', '#'])
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
    {
        return invalid("cannot be an MQTT topic: no + or #, and no empty levels");
    }
    if name == "bridge" || name.starts_with("bridge/") {
        return invalid("is Zigbee2MQTT's own bridge topic");
    }
    let reserved = ["availability", "set", "get"];
    if name.split('/').any(|level| reserved.contains(&level)) {
        return invalid("contains a level Zigbee2MQTT reserves (availability, set, get)");
    }
    Ok(name.to_string())
}

fn valid_actions(actions: &ButtonActions) -> ApiResult<()> {
    for (field, list) in [("sos_actions", &actions.sos), ("ok_actions", &actions.ok)] {
        if list.len() > MAX_ACTIONS {
            return Err(ApiError::Invalid(format!("at most {MAX_ACTIONS} {field}")));
        }
        if let Some(a) = list
            .iter()
            .find(|a| a.is_empty() || a.len() > MAX_ACTION_LEN)
        {
            return Err(ApiError::Invalid(format!(
                "{field}: {a:?} must be 1 to {MAX_ACTION_LEN} characters"
            )));
        }
    }
    // One press must not mean both "help" and "I'm fine".
    if let Some(a) = actions.ok.iter().find(|a| actions.sos.contains(a)) {
        return Err(ApiError::Invalid(format!(
            "action {a:?} is in both sos_actions and ok_actions"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_names_must_be_device_topics() {
        assert!(valid_friendly_name("bedroom motion").is_ok());
        assert!(valid_friendly_name("kitchen/door").is_ok());
        for bad in [
            "",
            "bridge",
            "bridge/state",
            "a/+",
            "#",
            "a//b",
            "/a",
            "a/",
            "door/availability",
            "lamp/set",
        ] {
            assert!(valid_friendly_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn button_actions_are_bounded_and_never_both_sos_and_ok() {
        let actions = |sos: &[&str], ok: &[&str]| ButtonActions {
            sos: sos.iter().map(|s| s.to_string()).collect(),
            ok: ok.iter().map(|s| s.to_string()).collect(),
        };
        assert!(valid_actions(&actions(&["single", "hold"], &["double"])).is_ok());
        assert!(valid_actions(&actions(&[""], &[])).is_err());
        assert!(valid_actions(&actions(&[], &[""])).is_err());
        assert!(valid_actions(&actions(&["x"; 21], &[])).is_err());
        assert!(valid_actions(&actions(&["single"], &["single"])).is_err());
    }
}
