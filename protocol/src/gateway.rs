//! API bodies of the gateway adapters: which Zigbee device behind a Zigbee2MQTT
//! gateway is which hub device.

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
    pub created_at: DateTime<Utc>,
}
