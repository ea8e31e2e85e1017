//! Persistence: one [`Store`] trait, implemented once in SQL for SQLite and PostgreSQL.
//!
//! Error policy: every method returns [`StoreError`]; `NotFound` and `Conflict` are
//! outcomes the API turns into 404 and 409, `Invalid` is data that failed to decode
//! (a defect or a hand-edited database), `Db` is everything else and is logged.
//!
//! Times are stored as epoch milliseconds in both backends so that one set of
//! queries compares and orders them identically.

pub mod cluster;
mod outbox;
pub mod privacy;
mod rows;
mod sql;
mod sqlite_batch;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mimamori_protocol::alert::AlertEvent;
use mimamori_protocol::api::{Device, LatLon, RejectedMessage, Resident, Role, User};
use mimamori_protocol::card::ResidentCard;
use mimamori_protocol::gateway::{
    BleTag, EchonetDevice, LoraFields, LoraProfile, LorawanDevice, NewLoraFields, Receiver,
    ZigbeeDevice,
};
use mimamori_protocol::native::RejectReason;
use mimamori_protocol::zone::{Zone, ZoneShape};
use mimamori_protocol::{Alert, AlertKind, AlertState, DeviceEvent, DeviceKind, RuleSettings};

pub use outbox::{NewContactRow, OutboxItem, PushSubscriptionRow, SummaryTarget};
pub use sql::{connect, open_read_only, PgStore, SqliteStore};

/// How many dead letters are kept; older ones are pruned as new ones arrive.
pub const REJECTED_KEEP: i64 = 10_000;
/// Dead letters of requests no device authenticated that are kept (their own share).
pub const REJECTED_ANONYMOUS_KEEP: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Invalid(String),
    /// A cluster partition's commit carried a lease token that is no longer current:
    /// another hub owns the partition now, and nothing of the commit was kept.
    #[error("partition {0} is owned by another hub now; the commit was refused")]
    Fenced(u32),
    #[error(transparent)]
    Db(sqlx::Error),
    /// SQLite's batch writer failed (`sqlite_batch.rs`); nothing of the batch was kept.
    #[error("SQLite: {0}")]
    Sqlite(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref d) if d.is_unique_violation() => {
                StoreError::Conflict(d.message().to_string())
            }
            other => StoreError::Db(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a Zigbee button's `action` values mean: SOS, or the resident's "I'm OK".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ButtonActions {
    pub sos: Vec<String>,
    pub ok: Vec<String>,
}

/// A change addressed to one row by its key: having touched none means the row does not
/// exist, which callers answer as "not found".
pub(crate) fn touched(rows_affected: u64) -> StoreResult<()> {
    match rows_affected {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// What a CONNECT is checked against.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub id: String,
    pub resident_id: i64,
    pub kind: DeviceKind,
    pub secret_hash: String,
}

/// A user together with the hash of their password.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
    /// The TOTP secret in force (base32), when the person has a second factor.
    pub totp_secret: Option<String>,
}

/// A person's second factor as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpRow {
    /// In force: logins need a code of it.
    pub secret: Option<String>,
    /// Made by a setup that waits for its first code.
    pub pending: Option<String>,
    /// The last time step a code was accepted for.
    pub last_step: i64,
}

#[derive(Debug, Clone)]
pub struct NewResidentRow {
    pub name: String,
    pub timezone: String,
    pub home: Option<LatLon>,
    pub rules: RuleSettings,
    pub created_at: DateTime<Utc>,
}

/// Everything the rules engine needs to know about one resident.
#[derive(Debug, Clone)]
pub struct ResidentSetup {
    pub resident: Resident,
    pub zones: Vec<Zone>,
    pub devices: Vec<mimamori_rules::DeviceInfo>,
    /// Dated pauses of the watch rules, oldest first.
    pub pauses: Vec<mimamori_protocol::pause::Pause>,
    /// Notification contacts with their webhook secrets.
    pub contacts: Vec<(mimamori_protocol::contact::Contact, Option<String>)>,
}

/// A refused message on its way into the dead-letter table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RejectedRow {
    pub received_at: DateTime<Utc>,
    pub device_id: Option<String>,
    pub topic: String,
    pub reason: RejectReason,
    pub detail: String,
    pub payload: String,
}

/// A live alert as stored, with what the alert core needs to resume it.
#[derive(Debug, Clone)]
pub struct StoredAlert {
    pub alert: Alert,
    pub subject: String,
    /// The ladder's progress as JSON.
    pub ladder: Option<String>,
}

/// One ingest batch: written in a single transaction, before any PUBACK leaves.
#[derive(Debug, Default)]
pub struct Batch {
    pub readings: Vec<DeviceEvent>,
    pub rejected: Vec<RejectedRow>,
    /// Rules-engine state of each resident the batch touched, as JSON.
    pub rule_states: Vec<(i64, String)>,
    /// The alert core's rows: alerts, history, audit, outbox.
    pub effects: crate::alerts::Effects,
    pub at: DateTime<Utc>,
    /// In cluster mode: the partition lease the commit is made under, and how far into
    /// the event log it reaches.
    pub fence: Option<Fence>,
}

/// The proof that a commit's pipeline still owns its partition (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub partition: u32,
    pub owner: String,
    pub token: i64,
    /// Every event of the partition up to this log sequence is applied by this commit
    /// or an earlier one.
    pub applied_seq: u64,
}

impl Batch {
    /// Every resident the batch writes for: a batch may trail a deletion, so the store
    /// writes only for those that still exist.
    pub fn residents(&self) -> std::collections::BTreeSet<i64> {
        self.readings
            .iter()
            .map(|r| r.resident_id)
            .chain(self.rule_states.iter().map(|(r, _)| *r))
            .chain(self.effects.residents())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.rejected.is_empty()
            && self.rule_states.is_empty()
            && self.effects.is_empty()
    }
}

/// Which alerts a listing returns.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub resident_id: Option<i64>,
    pub kind: Option<AlertKind>,
    /// Only these residents (a family user's scope); `None` is every resident.
    pub within: Option<Vec<i64>>,
    pub limit: i64,
}

/// A staff action on the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: Option<serde_json::Value>,
}

#[async_trait]
pub trait Store: privacy::PrivacyStore + Send + Sync + 'static {
    /// Which backend this is, for logs and `/healthz`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
    /// Writes back whatever the database keeps in a log beside its file (SQLite's WAL),
    /// so that copying it does not fall into the work that follows.
    async fn checkpoint(&self) -> StoreResult<()>;

    // users and sessions
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        resident_ids: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<User>;
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn delete_user(&self, id: i64) -> StoreResult<()>;
    /// Replaces a user's password hash and ends all their sessions, in one transaction;
    /// returns how many sessions ended.
    async fn set_password(&self, user_id: i64, password_hash: &str) -> StoreResult<u64>;
    /// A person's second factor as stored.
    async fn totp(&self, user_id: i64) -> StoreResult<TotpRow>;
    /// Keeps a new secret waiting for its first code (replacing any waiting one).
    async fn set_totp_pending(&self, user_id: i64, secret: &str) -> StoreResult<()>;
    /// Puts the waiting secret in force, `step` being the step of the code that confirmed
    /// it; false when nothing was waiting.
    async fn enable_totp(&self, user_id: i64, step: i64) -> StoreResult<bool>;
    /// Removes the second factor and ends every session of the person; returns how many.
    async fn disable_totp(&self, user_id: i64) -> StoreResult<u64>;
    /// Takes `step` as used: false when it, or a later step, already was (a replayed code).
    async fn use_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool>;
    async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn session_user(&self, token_hash: &str, now: DateTime<Utc>)
        -> StoreResult<Option<User>>;
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Deletes every session expired at `now`; returns how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    // residents and their zones
    async fn create_resident(&self, r: &NewResidentRow) -> StoreResult<Resident>;
    async fn resident(&self, id: i64) -> StoreResult<Resident>;
    async fn list_residents(&self, within: Option<&[i64]>) -> StoreResult<Vec<Resident>>;
    async fn update_resident(&self, r: &Resident) -> StoreResult<()>;
    async fn delete_resident(&self, id: i64) -> StoreResult<()>;
    async fn create_zone(
        &self,
        resident_id: i64,
        name: &str,
        shape: &ZoneShape,
        at: DateTime<Utc>,
    ) -> StoreResult<Zone>;
    async fn list_zones(&self, resident_id: i64) -> StoreResult<Vec<Zone>>;
    async fn zone(&self, id: i64) -> StoreResult<Zone>;
    async fn delete_zone(&self, id: i64) -> StoreResult<()>;
    async fn resident_setup(&self, id: i64) -> StoreResult<ResidentSetup>;
    async fn all_resident_setups(&self) -> StoreResult<Vec<ResidentSetup>>;

    // devices
    async fn create_device(&self, d: &Device, secret_hash: &str) -> StoreResult<()>;
    async fn device(&self, id: &str) -> StoreResult<Device>;
    async fn list_devices(&self, within: Option<&[i64]>) -> StoreResult<Vec<Device>>;
    async fn delete_device(&self, id: &str) -> StoreResult<()>;
    async fn set_device_secret(&self, id: &str, secret_hash: &str) -> StoreResult<()>;
    /// Sets where a device is and what it is for; `NotFound` if there is no such device.
    async fn set_device_place(
        &self,
        id: &str,
        room: Option<&str>,
        role: Option<mimamori_protocol::DeviceRole>,
    ) -> StoreResult<()>;
    async fn device_auth(&self, id: &str) -> StoreResult<Option<DeviceAuth>>;

    // ingest
    /// Writes a whole batch atomically.
    async fn commit_batch(&self, batch: &Batch) -> StoreResult<()>;
    /// Every alert not resolved, oldest first.
    async fn live_alerts(&self) -> StoreResult<Vec<StoredAlert>>;
    /// The id after the highest alert id ever stored.
    async fn next_alert_id(&self) -> StoreResult<i64>;
    /// Alerts opened in `[from, to)` (of these residents only, if given).
    async fn alerts_opened(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        within: Option<&[i64]>,
    ) -> StoreResult<Vec<Alert>>;
    async fn rule_states(&self) -> StoreResult<Vec<(i64, String)>>;
    /// A resident's dated pauses, oldest first. Only the pipeline writes them (in
    /// [`Store::commit_batch`]).
    async fn pauses(&self, resident_id: i64) -> StoreResult<Vec<mimamori_protocol::pause::Pause>>;
    async fn rule_state(&self, resident_id: i64) -> StoreResult<Option<String>>;
    async fn list_rejected(&self, limit: i64) -> StoreResult<Vec<RejectedMessage>>;
    async fn count_readings(&self, resident_id: i64) -> StoreResult<i64>;
    /// Readings of a resident taken in `[from, until)`, oldest first by (`ts`, `id`), at
    /// most `limit`, after the reading `after` (its `ts` and `id`) when given: one page of
    /// a history read in order.
    async fn readings_between(
        &self,
        resident_id: i64,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, i64)>,
        limit: i64,
    ) -> StoreResult<Vec<StoredReading>>;
    async fn recent_readings(
        &self,
        resident_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredReading>>;

    // alerts
    async fn list_alerts(&self, f: &AlertFilter) -> StoreResult<Vec<Alert>>;
    async fn alert(&self, id: i64) -> StoreResult<Alert>;
    async fn alert_history(&self, id: i64) -> StoreResult<Vec<AlertEvent>>;
    // audit trail
    async fn audit(&self, e: &AuditEntry) -> StoreResult<()>;
    async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>>;

    // -- dashboard (issue 4): add methods below this line --
    /// Activity readings (motion seen, door used) per hour in `[from, to)`: pairs of the
    /// hour's start and its count, oldest first; hours without activity are left out.
    async fn activity_per_hour(
        &self,
        resident_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<(DateTime<Utc>, i64)>>;
    /// Position fixes taken at or after `since`, oldest first, at most `limit` (the newest kept).
    async fn positions_since(
        &self,
        resident_id: i64,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<StoredReading>>;

    // -- notifications (issue 6): add methods below this line --
    async fn create_contact(
        &self,
        c: &NewContactRow,
    ) -> StoreResult<mimamori_protocol::contact::Contact>;
    async fn list_contacts(
        &self,
        resident_id: i64,
    ) -> StoreResult<Vec<mimamori_protocol::contact::Contact>>;
    async fn contact(&self, id: i64) -> StoreResult<mimamori_protocol::contact::Contact>;
    /// Deletes a contact; its pending deliveries are marked failed, never sent.
    async fn delete_contact(&self, id: i64) -> StoreResult<()>;
    /// The notifications an alert called for, oldest first.
    async fn alert_deliveries(
        &self,
        alert_id: i64,
    ) -> StoreResult<Vec<mimamori_protocol::contact::Delivery>>;
    /// Frees deliveries claimed by a hub that died mid-attempt, due at once; returns how many.
    /// Only claims made at or before `claimed_before`: in cluster mode other hubs' notifiers
    /// hold fresh claims.
    async fn release_claims(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Claims up to `limit` pending deliveries due at `now`, oldest due first.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxItem>>;
    /// Records one attempt (`error` is `None` on success) and what happens next.
    async fn finish_attempt(
        &self,
        id: i64,
        at: DateTime<Utc>,
        error: Option<&str>,
        next: crate::notify::policy::Next,
    ) -> StoreResult<()>;
    /// When the next unclaimed pending delivery falls due.
    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Contacts who asked for a daily summary.
    async fn summary_targets(&self) -> StoreResult<Vec<SummaryTarget>>;
    async fn delivery_exists(&self, idempotency_key: &str) -> StoreResult<bool>;
    /// Deliveries on `channel` delivered at or after `since`.
    async fn delivered_since(
        &self,
        channel: mimamori_protocol::contact::Channel,
        since: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// What happened in `[from, to)` for a resident's daily summary.
    async fn day_facts(
        &self,
        resident_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<crate::notify::summary::DayFacts>;
    /// Enqueues a daily summary for a contact; `false` if that key was already enqueued.
    async fn enqueue_summary(
        &self,
        contact_id: i64,
        idempotency_key: &str,
        notice: &crate::notify::message::Notice,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // -- gateways (issue 7): add methods below this line --
    /// Maps a Zigbee device of a gateway to a hub device; `Conflict` if the name or device is taken.
    async fn create_zigbee_device(
        &self,
        gateway_id: &str,
        friendly_name: &str,
        device_id: &str,
        actions: &ButtonActions,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Every mapping (of one gateway, or of all), with the mapped device's kind and resident.
    async fn zigbee_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<ZigbeeDevice>>;
    async fn delete_zigbee_device(&self, gateway_id: &str, friendly_name: &str) -> StoreResult<()>;

    // -- Web Push (issue 19): add methods below this line --
    /// The hub's VAPID private key: the one stored, or else `generated`, stored now.
    async fn vapid_key(&self, generated: &str, at: DateTime<Utc>) -> StoreResult<String>;
    /// Subscribes a browser for a user. An endpoint already known (the same browser
    /// subscribing again, perhaps for another user) takes the new owner and keys.
    /// `Conflict` if the user already has `max` other subscriptions.
    async fn add_push_subscription(
        &self,
        user_id: i64,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        max: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<PushSubscriptionRow>;
    /// A user's subscriptions, oldest first.
    async fn push_subscriptions(&self, user_id: i64) -> StoreResult<Vec<PushSubscriptionRow>>;
    /// Removes one of a user's subscriptions; `NotFound` if that user has no such one.
    async fn delete_push_subscription(&self, id: i64, user_id: i64) -> StoreResult<()>;
    /// Registers a LoRaWAN device of a gateway, with its own fields or following `profile`
    /// (the API checks that the profile exists); `Conflict` if the DevEUI or device is taken.
    async fn create_lorawan_device(
        &self,
        gateway_id: &str,
        dev_eui: &str,
        device_id: &str,
        fields: &LoraFields,
        profile: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Every registration (of one gateway, or of all), with the device's kind and resident,
    /// and the mapping in force: its profile's over its kind's defaults when it follows one.
    async fn lorawan_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<LorawanDevice>>;
    /// Creates or replaces a device profile's mapping on a gateway (`created_at` is kept).
    async fn put_lorawan_profile(
        &self,
        gateway_id: &str,
        name: &str,
        fields: &NewLoraFields,
        at: DateTime<Utc>,
    ) -> StoreResult<LoraProfile>;
    /// A gateway's device profiles, by name.
    async fn lorawan_profiles(&self, gateway_id: &str) -> StoreResult<Vec<LoraProfile>>;
    /// Deletes a profile; `NotFound` if there is none, `Conflict` while a device follows it.
    async fn delete_lorawan_profile(&self, gateway_id: &str, name: &str) -> StoreResult<()>;
    async fn delete_lorawan_device(&self, gateway_id: &str, dev_eui: &str) -> StoreResult<()>;
    /// A resident's BLE tag sightings, newest first: the passage history.
    async fn sightings(&self, resident_id: i64, limit: i64) -> StoreResult<Vec<StoredReading>>;
    /// Sets where a BLE receiver is (its `created_at` is kept on a change).
    async fn put_receiver(&self, receiver: &Receiver) -> StoreResult<()>;
    async fn receivers(&self) -> StoreResult<Vec<Receiver>>;
    /// Registers a BLE tag id of a `tag` device; `Conflict` if the id or device is taken.
    async fn create_ble_tag(
        &self,
        tag_id: &str,
        device_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn ble_tags(&self) -> StoreResult<Vec<BleTag>>;
    /// Maps an ECHONET Lite device of a gateway; `Conflict` if the id or device is taken.
    async fn create_echonet_device(
        &self,
        gateway_id: &str,
        echonet_id: &str,
        device_id: &str,
        activity_above_w: f64,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn echonet_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<EchonetDevice>>;

    // -- care desk (issue 15): add methods below this line --
    /// A resident's card; an empty one when none was written yet.
    async fn resident_card(&self, resident_id: i64) -> StoreResult<ResidentCard>;
    /// Replaces a resident's card.
    async fn put_resident_card(
        &self,
        resident_id: i64,
        card: &ResidentCard,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// A reading as stored, for the API and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredReading {
    pub id: i64,
    pub device_id: String,
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub battery: Option<u8>,
    pub data: Option<serde_json::Value>,
}

impl StoredReading {
    /// The reading as it was taken, rebuilt from its row (the inverse of how `sql.rs`
    /// writes one); `None` for a row this hub cannot read back.
    pub fn reading(&self) -> Option<mimamori_protocol::Reading> {
        use mimamori_protocol::Reading;
        let data = |k: &str| self.data.as_ref().map(|d| &d[k]);
        let text = |k: &str| data(k).and_then(|v| v.as_str()).map(str::to_owned);
        Some(match self.kind.as_str() {
            "motion" => Reading::Motion {
                motion: data("motion")?.as_bool()?,
                room: text("room"),
            },
            "door" => Reading::Door {
                open: data("open")?.as_bool()?,
            },
            "gps" => Reading::Position {
                lat: self.lat?,
                lon: self.lon?,
                accuracy_m: self.accuracy_m,
            },
            "sighting" => Reading::Sighting {
                lat: self.lat?,
                lon: self.lon?,
                accuracy_m: self.accuracy_m,
                receiver: text("receiver")?,
                place: text("place")?,
            },
            "sos" => Reading::Sos,
            "heartbeat" => Reading::Heartbeat,
            "offline" => Reading::Offline,
            "ok" => Reading::Ok,
            _ => return None,
        })
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
