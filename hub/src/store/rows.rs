//! Row shapes shared by both backends and their conversion into wire types.

use mimamori_protocol::alert::AlertEvent;
use mimamori_protocol::api::{Device, LatLon, RejectedMessage, Resident, Role, User};
use mimamori_protocol::zone::{Zone, ZoneShape};
use mimamori_protocol::{Alert, AlertKind, AlertState, DeviceKind, RuleSettings, Severity};

use super::{from_ms, StoreError, StoreResult, StoredReading};

fn invalid(what: &str, value: &str) -> StoreError {
    StoreError::Invalid(format!("{what} {value:?}"))
}

fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))
}

#[derive(sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub totp_secret: Option<String>,
}

impl UserRow {
    pub fn into_user(self, resident_ids: Vec<i64>) -> StoreResult<(User, String, Option<String>)> {
        let role = Role::parse(&self.role).ok_or_else(|| invalid("role", &self.role))?;
        let user = User {
            id: self.id,
            username: self.username,
            role,
            resident_ids,
            created_at: from_ms(self.created_at),
            totp: self.totp_secret.is_some(),
        };
        Ok((user, self.password_hash, self.totp_secret))
    }
}

#[derive(sqlx::FromRow)]
pub struct ResidentRow {
    pub id: i64,
    pub name: String,
    pub timezone: String,
    pub home_lat: Option<f64>,
    pub home_lon: Option<f64>,
    pub rules: String,
    pub created_at: i64,
}

impl TryFrom<ResidentRow> for Resident {
    type Error = StoreError;
    fn try_from(r: ResidentRow) -> StoreResult<Resident> {
        let rules: RuleSettings = json("resident rules", &r.rules)?;
        let home = match (r.home_lat, r.home_lon) {
            (Some(lat), Some(lon)) => Some(LatLon { lat, lon }),
            _ => None,
        };
        Ok(Resident {
            id: r.id,
            name: r.name,
            timezone: r.timezone,
            home,
            rules,
            created_at: from_ms(r.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct ZoneRow {
    pub id: i64,
    pub resident_id: i64,
    pub name: String,
    pub shape: String,
}

impl TryFrom<ZoneRow> for Zone {
    type Error = StoreError;
    fn try_from(z: ZoneRow) -> StoreResult<Zone> {
        let shape: ZoneShape = json("zone shape", &z.shape)?;
        Ok(Zone {
            id: z.id,
            resident_id: z.resident_id,
            name: z.name,
            shape,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub resident_id: i64,
    pub kind: String,
    pub name: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub battery: Option<i32>,
    pub room: Option<String>,
    pub role: Option<String>,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;
    fn try_from(d: DeviceRow) -> StoreResult<Device> {
        let kind = DeviceKind::parse(&d.kind).ok_or_else(|| invalid("device kind", &d.kind))?;
        Ok(Device {
            id: d.id,
            resident_id: d.resident_id,
            kind,
            name: d.name,
            created_at: from_ms(d.created_at),
            last_seen_at: d.last_seen_at.map(from_ms),
            battery: d.battery.and_then(|b| u8::try_from(b).ok()),
            role: d.role.as_deref().map(role_of).transpose()?,
            room: d.room,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub resident_id: i64,
    pub device_id: Option<String>,
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub escalated: bool,
    pub opened_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    pub details: String,
    pub updated_at: i64,
    pub assigned_to: Option<String>,
    pub snoozed_until: Option<i64>,
    pub tier: i64,
}

/// A live alert's row with its key's subject and the ladder's progress.
#[derive(sqlx::FromRow)]
pub struct LiveAlertRow {
    #[sqlx(flatten)]
    pub alert: AlertRow,
    pub subject: String,
    pub ladder: Option<String>,
}

impl TryFrom<LiveAlertRow> for super::StoredAlert {
    type Error = StoreError;
    fn try_from(r: LiveAlertRow) -> StoreResult<super::StoredAlert> {
        Ok(super::StoredAlert {
            alert: r.alert.try_into()?,
            subject: r.subject,
            ladder: r.ladder,
        })
    }
}

impl TryFrom<AlertRow> for Alert {
    type Error = StoreError;
    fn try_from(a: AlertRow) -> StoreResult<Alert> {
        Ok(Alert {
            id: a.id,
            resident_id: a.resident_id,
            device_id: a.device_id,
            kind: AlertKind::parse(&a.kind).ok_or_else(|| invalid("alert kind", &a.kind))?,
            severity: Severity::parse(&a.severity)
                .ok_or_else(|| invalid("severity", &a.severity))?,
            state: AlertState::parse(&a.state).ok_or_else(|| invalid("alert state", &a.state))?,
            escalated: a.escalated,
            opened_at: from_ms(a.opened_at),
            acknowledged_at: a.acknowledged_at.map(from_ms),
            acknowledged_by: a.acknowledged_by,
            resolved_at: a.resolved_at.map(from_ms),
            resolved_by: a.resolved_by,
            resolution: a.resolution,
            details: json("alert details", &a.details)?,
            updated_at: from_ms(a.updated_at),
            assigned_to: a.assigned_to,
            snoozed_until: a.snoozed_until.map(from_ms),
            tier: u8::try_from(a.tier).unwrap_or(u8::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AlertEventRow {
    pub at: i64,
    pub action: String,
    pub actor: String,
    pub note: Option<String>,
}

impl From<AlertEventRow> for AlertEvent {
    fn from(e: AlertEventRow) -> AlertEvent {
        AlertEvent {
            at: from_ms(e.at),
            action: e.action,
            actor: e.actor,
            note: e.note,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct RejectedDbRow {
    pub id: i64,
    pub received_at: i64,
    pub device_id: Option<String>,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    pub payload: String,
}

impl From<RejectedDbRow> for RejectedMessage {
    fn from(r: RejectedDbRow) -> RejectedMessage {
        RejectedMessage {
            id: r.id,
            received_at: from_ms(r.received_at),
            device_id: r.device_id,
            topic: r.topic,
            reason: r.reason,
            detail: r.detail,
            payload: r.payload,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct ReadingRow {
    pub id: i64,
    pub device_id: String,
    pub kind: String,
    pub ts: i64,
    pub received_at: i64,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub battery: Option<i32>,
    pub data: Option<String>,
}

impl From<ReadingRow> for StoredReading {
    fn from(r: ReadingRow) -> StoredReading {
        StoredReading {
            id: r.id,
            device_id: r.device_id,
            kind: r.kind,
            ts: from_ms(r.ts),
            received_at: from_ms(r.received_at),
            lat: r.lat,
            lon: r.lon,
            accuracy_m: r.accuracy_m,
            battery: r.battery.and_then(|b| u8::try_from(b).ok()),
            data: r.data.and_then(|d| serde_json::from_str(&d).ok()),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AuditRow {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: Option<String>,
}

impl From<AuditRow> for super::AuditEntry {
    fn from(a: AuditRow) -> super::AuditEntry {
        super::AuditEntry {
            at: from_ms(a.at),
            actor: a.actor,
            action: a.action,
            target: a.target,
            details: a.details.and_then(|d| serde_json::from_str(&d).ok()),
        }
    }
}

/// A device role as stored.
pub fn role_of(s: &str) -> StoreResult<mimamori_protocol::DeviceRole> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| invalid("device role", s))
}

/// The stored name of a device role.
pub fn role_name(r: mimamori_protocol::DeviceRole) -> &'static str {
    match r {
        mimamori_protocol::DeviceRole::Entrance => "entrance",
    }
}

#[derive(sqlx::FromRow)]
pub struct PauseRow {
    pub id: String,
    pub resident_id: i64,
    pub from_at: i64,
    pub until_at: i64,
    pub reason: String,
    pub note: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

impl TryFrom<PauseRow> for mimamori_protocol::pause::Pause {
    type Error = StoreError;
    fn try_from(p: PauseRow) -> StoreResult<Self> {
        use mimamori_protocol::pause::PauseReason;
        Ok(mimamori_protocol::pause::Pause {
            reason: PauseReason::parse(&p.reason)
                .ok_or_else(|| invalid("pause reason", &p.reason))?,
            id: p.id,
            resident_id: p.resident_id,
            from: from_ms(p.from_at),
            until: from_ms(p.until_at),
            note: p.note,
            created_by: p.created_by,
            created_at: from_ms(p.created_at),
        })
    }
}
