//! Who is connected, and which topics they may publish and subscribe to.
//!
//! Pure functions, so every rule is unit-tested. A device may publish and subscribe
//! only under its own prefixes: `watch/v1/{device_id}/` for every device, and for the
//! clients that cannot be given that layout, `zigbee2mqtt/{device_id}/` for a gateway
//! (its Zigbee2MQTT base topic), ChirpStack's `application/{app}/device/{dev_eui}/event/…`
//! for a gateway too (its MQTT integration's default topics, which carry no gateway id:
//! the adapter accepts only the DevEUIs registered on that gateway), and
//! `owntracks/{device_id}/` for a gps device (an OwnTracks phone whose MQTT username is
//! its device id), and `espresense/` for a receiver (an ESPresense node, whose room
//! the adapter checks is the receiver's own); staff and admins may read
//! everything under `watch/v1/` but publish nothing; a family member may read only
//! the alerts topic of their own residents.

use mimamori_protocol::api::Role;
use mimamori_protocol::topic::{alerts_topic, device_prefix};
use mimamori_protocol::DeviceKind;

use crate::ingest::{ble, chirpstack, echonet, owntracks, zigbee2mqtt};

/// An authenticated MQTT client.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Device {
        id: String,
        resident_id: i64,
        kind: DeviceKind,
    },
    User {
        username: String,
        role: Role,
        resident_ids: Vec<i64>,
    },
}

impl Principal {
    /// The name the client is known by in logs and the connection registry.
    pub fn name(&self) -> &str {
        match self {
            Principal::Device { id, .. } => id,
            Principal::User { username, .. } => username,
        }
    }

    /// Whether this client may publish on `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        if topic.is_empty() || topic.contains(['+', '#']) {
            return false;
        }
        match self {
            Principal::Device { id, kind, .. } => {
                device_owns(id, *kind, topic) || shared_publish(id, *kind, topic)
            }
            Principal::User { .. } => false,
        }
    }

    /// Whether this client may subscribe to `filter` (a shared `$share/group/` prefix is looked through).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let Some(filter) = unshare(filter) else {
            return false;
        };
        if filter.is_empty() {
            return false;
        }
        match self {
            Principal::Device { id, kind, .. } => {
                device_owns(id, *kind, filter) || shared_subscribe(id, *kind, filter)
            }
            Principal::User {
                role: Role::Admin | Role::Staff,
                ..
            } => filter.starts_with("watch/v1/"),
            Principal::User {
                role: Role::Family,
                resident_ids,
                ..
            } => resident_ids.iter().any(|rid| filter == alerts_topic(*rid)),
        }
    }
}

/// What to change when a well-known client publishes outside its prefix because of a
/// setting, so that the dead letter says why the connection was closed.
pub fn refusal_hint(principal: &Principal, topic: &str) -> Option<&'static str> {
    let Principal::Device { kind, .. } = principal else {
        return None;
    };
    if *kind == DeviceKind::Receiver && topic.starts_with("homeassistant/") {
        return Some(
            "ESPresense's \"Send to discovery topic\" publishes under homeassistant/: turn it off",
        );
    }
    if *kind != DeviceKind::Gateway {
        return None;
    }
    if topic.starts_with("homeassistant/") {
        Some("Zigbee2MQTT's Home Assistant discovery publishes under homeassistant/: set homeassistant: false")
    } else if topic.starts_with(&format!("{}/", zigbee2mqtt::ROOT)) {
        Some("set Zigbee2MQTT's mqtt.base_topic to zigbee2mqtt/{gateway id}; the default zigbee2mqtt is not the gateway's own")
    } else {
        None
    }
}

/// Whether a topic or filter lies under one of the device's own prefixes.
fn device_owns(id: &str, kind: DeviceKind, topic: &str) -> bool {
    let foreign = match kind {
        DeviceKind::Gateway => Some(format!("{}/", zigbee2mqtt::base_topic(id))),
        DeviceKind::Gps => Some(owntracks::user_prefix(id)),
        _ => None,
    };
    topic.starts_with(&device_prefix(id)) || foreign.is_some_and(|p| topic.starts_with(&p))
}

/// Topics outside the device's own prefixes that a client of its kind publishes on, as
/// its firmware names them: ChirpStack's event topics for a gateway, ESPresense's for a
/// receiver. The adapter accepts only what is the device's own (a DevEUI registered on
/// the gateway, the receiver's room); the command topics stay closed to publishers, so
/// no device can reconfigure another.
fn shared_publish(id: &str, kind: DeviceKind, topic: &str) -> bool {
    match kind {
        DeviceKind::Gateway => {
            chirpstack::is_topic(topic, "event")
                || topic.starts_with(&format!("{}/", echonet::base_topic(id)))
        }
        DeviceKind::Receiver => is_espresense(topic) && !is_espresense_command(topic),
        _ => false,
    }
}

/// The command topics those clients subscribe to, on which nobody may publish.
fn shared_subscribe(id: &str, kind: DeviceKind, filter: &str) -> bool {
    match kind {
        DeviceKind::Gateway => {
            chirpstack::is_topic(filter, "command")
                || filter.starts_with(&format!("{}/", echonet::base_topic(id)))
        }
        DeviceKind::Receiver => is_espresense(filter) && is_espresense_command(filter),
        _ => false,
    }
}

fn is_espresense(topic: &str) -> bool {
    topic
        .strip_prefix(ble::ESPRESENSE_ROOT)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `espresense/rooms/{room}/{setting}/set` and `espresense/settings/{id}/config`.
fn is_espresense_command(topic: &str) -> bool {
    topic.ends_with("/set") || topic.ends_with("/config")
}

/// The filter inside a shared subscription `$share/{group}/{filter}`; other filters as they are.
fn unshare(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f),
        None => Some(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Principal {
        of_kind(id, DeviceKind::Motion)
    }

    fn of_kind(id: &str, kind: DeviceKind) -> Principal {
        Principal::Device {
            id: id.into(),
            resident_id: 1,
            kind,
        }
    }

    #[test]
    fn gateways_and_phones_get_their_clients_prefixes_and_no_more() {
        let gw = of_kind("gw-a", DeviceKind::Gateway);
        assert!(gw.may_publish("zigbee2mqtt/gw-a/bedroom motion"));
        assert!(gw.may_publish("zigbee2mqtt/gw-a/bridge/state"));
        assert!(gw.may_subscribe("zigbee2mqtt/gw-a/#"));
        assert!(gw.may_publish("watch/v1/gw-a/heartbeat"));
        assert!(!gw.may_publish("zigbee2mqtt/gw-b/bedroom"));
        assert!(!gw.may_publish("zigbee2mqtt/gw-ab/bedroom"));
        assert!(!gw.may_subscribe("zigbee2mqtt/#"));
        assert!(!gw.may_publish("owntracks/gw-a/phone"));
        assert!(gw.may_publish("application/app-1/device/0101010101010101/event/up"));
        assert!(!gw.may_publish("application/app-1/device/0101010101010101/command/down"));
        assert!(gw.may_subscribe("application/+/device/+/command/+"));
        assert!(gw.may_publish("echonetlite2mqtt/gw-a/elapi/v2/devices/x/properties/detection"));
        assert!(gw.may_subscribe("echonetlite2mqtt/gw-a/elapi/v2/devices/#"));
        assert!(!gw.may_publish("echonetlite2mqtt/gw-b/elapi/v2/devices/x/properties/detection"));
        assert!(!gw.may_subscribe("application/+/device/+/event/+"));
        let phone = of_kind("ph-a", DeviceKind::Gps);
        assert!(phone.may_publish("owntracks/ph-a/pixel"));
        assert!(phone.may_subscribe("owntracks/ph-a/pixel/cmd"));
        assert!(!phone.may_subscribe("owntracks/+/+"));
        assert!(!phone.may_publish("owntracks/ph-b/pixel"));
        assert!(!phone.may_publish("zigbee2mqtt/ph-a/x"));
        let motion = device("m-a");
        assert!(!motion.may_publish("owntracks/m-a/pixel"));
        assert!(!motion.may_publish("zigbee2mqtt/m-a/x"));
        assert!(!motion.may_publish("application/a/device/0101010101010101/event/up"));
        assert!(!motion.may_publish("espresense/rooms/kitchen/status"));
        let node = of_kind("rx-a", DeviceKind::Receiver);
        assert!(node.may_publish("espresense/devices/iBeacon:x-1-2/kitchen"));
        assert!(node.may_publish("watch/v1/rx-a/sighting"));
        assert!(node.may_subscribe("espresense/rooms/*/+/set"));
        assert!(!node.may_subscribe("espresense/devices/#"));
        assert!(!node.may_publish("espresense/rooms/*/max_distance/set"));
        assert!(!node.may_publish("application/a/device/0101010101010101/event/up"));
    }

    #[test]
    fn a_gateway_on_zigbee2mqtts_defaults_is_told_which_setting_to_change() {
        let gw = of_kind("gw-a", DeviceKind::Gateway);
        assert!(
            refusal_hint(&gw, "zigbee2mqtt/bridge/state").is_some_and(|h| h.contains("base_topic"))
        );
        assert!(refusal_hint(&gw, "homeassistant/binary_sensor/x/config")
            .is_some_and(|h| h.contains("homeassistant: false")));
        assert_eq!(refusal_hint(&gw, "watch/v1/gw-b/motion"), None);
        let node = of_kind("rx-a", DeviceKind::Receiver);
        assert!(
            refusal_hint(&node, "homeassistant/sensor/espresense_1/config")
                .is_some_and(|h| h.contains("discovery"))
        );
        assert_eq!(
            refusal_hint(&device("m-a"), "zigbee2mqtt/bridge/state"),
            None
        );
    }

    fn user(role: Role, residents: &[i64]) -> Principal {
        Principal::User {
            username: "u".into(),
            role,
            resident_ids: residents.to_vec(),
        }
    }

    #[test]
    fn a_device_publishes_only_under_its_own_prefix() {
        let d = device("dev-a");
        assert!(d.may_publish("watch/v1/dev-a/motion"));
        assert!(!d.may_publish("watch/v1/dev-b/motion"));
        assert!(!d.may_publish("watch/v1/dev-ab/motion"));
        assert!(!d.may_publish("watch/v1/dev-a"));
        assert!(!d.may_publish("watch/v1/alerts/1"));
        assert!(!d.may_publish("watch/v1/dev-a/+"));
    }

    #[test]
    fn a_device_cannot_read_other_devices() {
        let d = device("dev-a");
        assert!(d.may_subscribe("watch/v1/dev-a/#"));
        assert!(!d.may_subscribe("watch/v1/+/gps"));
        assert!(!d.may_subscribe("#"));
        assert!(!d.may_subscribe("$share/g/watch/v1/dev-b/#"));
    }

    #[test]
    fn users_read_by_role_and_never_publish() {
        let staff = user(Role::Staff, &[]);
        assert!(staff.may_subscribe("watch/v1/#"));
        assert!(staff.may_subscribe("$share/workers/watch/v1/alerts/+"));
        assert!(!staff.may_subscribe("#"));
        assert!(!staff.may_publish("watch/v1/dev-a/sos"));
        let family = user(Role::Family, &[7]);
        assert!(family.may_subscribe("watch/v1/alerts/7"));
        assert!(!family.may_subscribe("watch/v1/alerts/8"));
        assert!(!family.may_subscribe("watch/v1/alerts/+"));
        assert!(!family.may_subscribe("$share/x"));
    }
}
