//! API bodies of the gateway adapters: which Zigbee device behind a Zigbee2MQTT
//! gateway, and which LoRaWAN device (by DevEUI) behind a network server, is which
//! hub device; where a BLE receiver is, and which BLE tag a resident carries; which
//! ECHONET Lite device behind an echonetlite2mqtt gateway is which hub device.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::DeviceKind;

/// Body of `POST /devices/{gateway_id}/zigbee`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewZigbeeDevice {
    /// The device's `friendly_name` in Zigbee2MQTT (its topic below the base topic).
    pub friendly_name: String,
    /// The hub device (kind `motion`, `door` or `button`) the Zigbee device is.
    pub device_id: String,
    /// `action` values that raise SOS; left out, a button's `single` press does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sos_actions: Option<Vec<String>>,
    /// `action` values that answer "are you OK?" (an `ok` reading); left out, a button's
    /// `double` press does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_actions: Option<Vec<String>>,
}

/// A Zigbee device mapped to a hub device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZigbeeDevice {
    pub gateway_id: String,
    pub friendly_name: String,
    pub device_id: String,
    pub device_kind: DeviceKind,
    pub resident_id: i64,
    pub sos_actions: Vec<String>,
    #[serde(default)]
    pub ok_actions: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Which fields of a LoRaWAN device's decoded payload (ChirpStack's `object`, The Things
/// Stack's `decoded_payload`) say what, as a registration gives them; a field left out
/// takes the default of the device's kind. A name with dots reaches into nested
/// objects (`digitalInput.1` for CayenneLPP).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLoraFields {
    /// The field that says motion seen (motion device), door open (door) or SOS (button).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The string values of `state` that mean motion, open or SOS; `true` and non-zero
    /// numbers always do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<String>,
}

/// The field mapping in force for one LoRaWAN device, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraFields {
    pub state: String,
    pub on: Vec<String>,
    pub latitude: String,
    pub longitude: String,
    pub accuracy: String,
    pub battery: String,
}

/// Body of `POST /devices/{gateway_id}/lorawan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLorawanDevice {
    /// The device's DevEUI as the network server puts it in topics: 16 hex digits.
    pub dev_eui: String,
    /// The hub device (kind `motion`, `door`, `button` or `gps`) the LoRaWAN device is.
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<NewLoraFields>,
    /// A device profile registered on the gateway, whose mapping the device follows
    /// (instead of `fields`): changing the profile changes every device of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Body of `PUT /devices/{gateway_id}/lorawan/profiles/{name}`: the field mapping every
/// device of one device profile (one model's codec) shares; each device's kind fills in
/// the fields left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLoraProfile {
    #[serde(default)]
    pub fields: NewLoraFields,
}

/// A device profile's field mapping on a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraProfile {
    pub gateway_id: String,
    pub name: String,
    pub fields: NewLoraFields,
    pub created_at: DateTime<Utc>,
}

/// A LoRaWAN device registered on a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LorawanDevice {
    pub gateway_id: String,
    /// Lower-case, as ChirpStack writes it in its topics.
    pub dev_eui: String,
    pub device_id: String,
    pub device_kind: DeviceKind,
    pub resident_id: i64,
    /// The mapping in force: its profile's, when it follows one.
    pub fields: LoraFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Body of `PUT /devices/{receiver_id}/receiver`: where a BLE receiver is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReceiver {
    /// What staff and families read: "Koenji station, north exit".
    pub place: String,
    /// The room an ESPresense node reports as (its room name, slugified by ESPresense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A fixed receiver's position; left out for a volunteer's phone, which sends its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// How far the receiver hears a tag, in metres: a sighting's accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_m: Option<f64>,
}

/// A BLE receiver and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receiver {
    pub device_id: String,
    pub resident_id: i64,
    pub place: String,
    pub room: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub range_m: f64,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /devices/{tag_device_id}/tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBleTag {
    /// The id receivers report, e.g. ESPresense's `iBeacon:{uuid}-{major}-{minor}`.
    pub tag_id: String,
}

/// A BLE tag of a resident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleTag {
    pub tag_id: String,
    pub device_id: String,
    pub resident_id: i64,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /devices/{gateway_id}/echonet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEchonetDevice {
    /// The device as echonetlite2mqtt names it in topics: its id, or its alias name.
    pub echonet_id: String,
    /// The hub device: `motion` (a human detection sensor or a smart meter) or `button`.
    pub device_id: String,
    /// A smart meter's power this many watts above the learned standby is activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_above_w: Option<f64>,
}

/// An ECHONET Lite device mapped to a hub device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchonetDevice {
    pub gateway_id: String,
    pub echonet_id: String,
    pub device_id: String,
    pub device_kind: DeviceKind,
    pub resident_id: i64,
    pub activity_above_w: f64,
    pub created_at: DateTime<Utc>,
}
