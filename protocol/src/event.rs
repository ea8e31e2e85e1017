//! Validated events keyed by resident: the one seam between ingest and the rules.
//!
//! Every adapter (native protocol, Zigbee2MQTT, OwnTracks, OsmAnd) produces these,
//! so nothing downstream knows where a reading came from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of device a resident can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Motion,
    Gps,
    Button,
    Door,
    Gateway,
    /// A BLE tag the resident carries; receivers report it, it never connects itself.
    Tag,
    /// A BLE receiver: an ESPresense node, a station reader, a volunteer's phone.
    Receiver,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Motion => "motion",
            DeviceKind::Gps => "gps",
            DeviceKind::Button => "button",
            DeviceKind::Door => "door",
            DeviceKind::Gateway => "gateway",
            DeviceKind::Tag => "tag",
            DeviceKind::Receiver => "receiver",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        [
            DeviceKind::Motion,
            DeviceKind::Gps,
            DeviceKind::Button,
            DeviceKind::Door,
            DeviceKind::Gateway,
            DeviceKind::Tag,
            DeviceKind::Receiver,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a device is for, beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// The door of the home's entrance: opening it may mean the resident went out.
    Entrance,
}

/// What one accepted message says, already validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reading {
    /// A presence sensor saw movement (`motion: true`) or reports none (`false`).
    Motion { motion: bool, room: Option<String> },
    /// An entrance or room door opened or closed.
    Door { open: bool },
    /// A position fix; `accuracy_m` is the radius of the fix's uncertainty.
    Position {
        lat: f64,
        lon: f64,
        accuracy_m: Option<f64>,
    },
    /// A receiver saw the resident's BLE tag: a position within the receiver's range,
    /// and the receiver's place.
    Sighting {
        lat: f64,
        lon: f64,
        accuracy_m: Option<f64>,
        receiver: String,
        place: String,
    },
    /// The resident pressed an SOS button.
    Sos,
    /// The device is alive; it carries nothing else than perhaps a battery level.
    Heartbeat,
    /// The device announced it is going offline (an MQTT will or an OwnTracks `lwt`).
    Offline,
    /// The resident answered the hub's "are you OK?": they are.
    Ok,
}

impl Reading {
    /// The name stored with the event and shown in the API.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Reading::Motion { .. } => "motion",
            Reading::Door { .. } => "door",
            Reading::Position { .. } => "gps",
            Reading::Sighting { .. } => "sighting",
            Reading::Sos => "sos",
            Reading::Heartbeat => "heartbeat",
            Reading::Offline => "offline",
            Reading::Ok => "ok",
        }
    }

    /// Whether this reading shows the resident is active at home.
    pub fn is_activity(&self) -> bool {
        matches!(
            self,
            Reading::Motion { motion: true, .. } | Reading::Door { .. }
        )
    }
}

/// One validated reading of one device of one resident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub device_id: String,
    pub device_kind: DeviceKind,
    pub resident_id: i64,
    /// When the reading was taken: the payload's `ts`, else the receive time.
    pub ts: DateTime<Utc>,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
    pub reading: Reading,
    /// Battery level in percent, when the message carried one.
    pub battery: Option<u8>,
}
