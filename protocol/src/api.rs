//! Request and response bodies of the HTTP API under `/api/v1`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{DeviceKind, DeviceRole};
use crate::settings::RuleSettings;

/// Every error the API returns: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// What a user may do: admins everything, staff the daily work, family read their residents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Staff,
    Family,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
            Role::Family => "family",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Staff, Role::Family]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The six-digit one-time code, for an account with a second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub resident_ids: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub resident_ids: Vec<i64>,
    pub created_at: DateTime<Utc>,
    /// Whether logging in also needs a one-time code (TOTP).
    #[serde(default)]
    pub totp: bool,
}

/// A point on Earth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewResident {
    pub name: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub home: Option<LatLon>,
    /// Rule settings; fields left out take their defaults.
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resident {
    pub id: i64,
    pub name: String,
    pub timezone: String,
    pub home: Option<LatLon>,
    pub rules: RuleSettings,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewDevice {
    pub resident_id: i64,
    pub kind: DeviceKind,
    pub name: String,
    /// The room it watches ("bathroom", "bedroom"): dwell and the evening rule read it.
    #[serde(default)]
    pub room: Option<String>,
    /// What it is for: `entrance` marks the home's entrance door.
    #[serde(default)]
    pub role: Option<DeviceRole>,
}

/// Body of `PATCH /devices/{id}`: fields left out stay, `null` clears.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(default, deserialize_with = "present")]
    pub room: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub role: Option<Option<DeviceRole>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub resident_id: i64,
    pub kind: DeviceKind,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub battery: Option<u8>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub role: Option<DeviceRole>,
}

/// MQTT credentials of a device; the password is shown only in this response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqttCredentials {
    pub username: String,
    pub password: String,
    pub topic_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCreated {
    pub id: String,
    pub resident_id: i64,
    pub kind: DeviceKind,
    pub name: String,
    pub mqtt: MqttCredentials,
}

/// A message the hub refused, as kept in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedMessage {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub device_id: Option<String>,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    /// The start of the payload, lossily decoded, for diagnosis.
    pub payload: String,
}

/// Body of `POST /alerts/{id}/ack`, `/resolve`, `/note`, `/assign` and `/snooze`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertAction {
    #[serde(default)]
    pub note: Option<String>,
    /// `/assign`: the staff member's user name; absent or null clears the assignment.
    #[serde(default)]
    pub to: Option<String>,
    /// `/snooze`: minutes to pause the ladder of a non-critical alert (1–1440).
    #[serde(default)]
    pub minutes: Option<u32>,
}
