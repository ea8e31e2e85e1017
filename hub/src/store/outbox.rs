//! Types of the notification tables (contacts, the deliveries outbox, Web Push
//! subscriptions) and their rows.

use chrono::{DateTime, Utc};
use mimamori_protocol::contact::{
    Channel, Contact, Delivery, DeliveryState, Language, PushSubscription,
};
use mimamori_protocol::{AlertKind, Severity};

use super::{from_ms, StoreError, StoreResult};

/// A validated contact on its way into the store.
#[derive(Debug, Clone)]
pub struct NewContactRow {
    pub resident_id: i64,
    pub name: String,
    pub relation: String,
    pub tier: u8,
    pub channel: Channel,
    pub address: String,
    pub secret: Option<String>,
    pub kinds: Vec<AlertKind>,
    pub min_severity: Severity,
    pub quiet_hours: Option<String>,
    pub language: Language,
    pub daily_summary_at: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One outbox row claimed for delivery: everything needed to send it.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub idempotency_key: String,
    pub alert_id: Option<i64>,
    /// The contact it is for; `None` once that contact was deleted.
    pub contact_id: Option<i64>,
    pub channel: Channel,
    pub address: String,
    pub secret: Option<String>,
    pub language: Language,
    /// The [`crate::notify::message::Notice`] as JSON.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

/// A contact who asked for a daily summary, with what deciding "when" needs.
#[derive(Debug, Clone)]
pub struct SummaryTarget {
    pub contact: Contact,
    pub resident_name: String,
    pub timezone: String,
}

fn invalid(what: &str, value: &str) -> StoreError {
    StoreError::Invalid(format!("{what} {value:?}"))
}

#[derive(sqlx::FromRow)]
pub struct ContactRow {
    pub id: i64,
    pub resident_id: i64,
    pub name: String,
    pub relation: String,
    pub tier: i64,
    pub channel: String,
    pub address: String,
    pub secret: Option<String>,
    pub kinds: String,
    pub min_severity: String,
    pub quiet_hours: Option<String>,
    pub language: String,
    pub daily_summary_at: Option<String>,
    pub created_at: i64,
}

/// The columns of `contacts` in the order [`ContactRow`] reads them.
pub const CONTACT_COLS: &str =
    "id, resident_id, name, relation, tier, channel, address, secret, kinds, \
     min_severity, quiet_hours, language, daily_summary_at, created_at";

impl ContactRow {
    /// The contact and its webhook secret.
    pub fn into_parts(self) -> StoreResult<(Contact, Option<String>)> {
        let names: Vec<String> = serde_json::from_str(&self.kinds)
            .map_err(|e| StoreError::Invalid(format!("contact kinds: {e}")))?;
        let kinds = names
            .iter()
            .map(|k| AlertKind::parse(k).ok_or_else(|| invalid("alert kind", k)))
            .collect::<StoreResult<Vec<_>>>()?;
        let contact = Contact {
            id: self.id,
            resident_id: self.resident_id,
            name: self.name,
            relation: self.relation,
            tier: u8::try_from(self.tier).map_err(|_| invalid("tier", &self.tier.to_string()))?,
            channel: Channel::parse(&self.channel)
                .ok_or_else(|| invalid("channel", &self.channel))?,
            address: self.address,
            kinds,
            min_severity: Severity::parse(&self.min_severity)
                .ok_or_else(|| invalid("severity", &self.min_severity))?,
            quiet_hours: self.quiet_hours,
            language: Language::parse(&self.language)
                .ok_or_else(|| invalid("language", &self.language))?,
            daily_summary_at: self.daily_summary_at,
            created_at: from_ms(self.created_at),
        };
        Ok((contact, self.secret))
    }
}

pub fn kinds_text(kinds: &[AlertKind]) -> String {
    serde_json::Value::from(kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>()).to_string()
}

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub event: String,
    pub channel: String,
    pub contact_id: Option<i64>,
    pub contact_name: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub idempotency_key: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> StoreResult<Delivery> {
        Ok(Delivery {
            id: r.id,
            event: r.event,
            channel: Channel::parse(&r.channel).ok_or_else(|| invalid("channel", &r.channel))?,
            contact_id: r.contact_id,
            contact_name: r.contact_name,
            state: DeliveryState::parse(&r.state)
                .ok_or_else(|| invalid("delivery state", &r.state))?,
            attempts: r.attempts,
            last_error: r.last_error,
            idempotency_key: r.idempotency_key,
            created_at: from_ms(r.created_at),
            delivered_at: r.delivered_at.map(from_ms),
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub alert_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub channel: String,
    pub address: String,
    pub secret: Option<String>,
    pub language: String,
    pub payload: String,
    pub attempts: i64,
    pub created_at: i64,
}

impl TryFrom<OutboxRow> for OutboxItem {
    type Error = StoreError;
    fn try_from(r: OutboxRow) -> StoreResult<OutboxItem> {
        Ok(OutboxItem {
            id: r.id,
            idempotency_key: r.idempotency_key,
            alert_id: r.alert_id,
            contact_id: r.contact_id,
            channel: Channel::parse(&r.channel).ok_or_else(|| invalid("channel", &r.channel))?,
            address: r.address,
            secret: r.secret,
            language: Language::parse(&r.language)
                .ok_or_else(|| invalid("language", &r.language))?,
            payload: r.payload,
            attempts: r.attempts,
            created_at: from_ms(r.created_at),
        })
    }
}

/// A browser subscribed to Web Push, with the keys its notices are encrypted for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushSubscriptionRow {
    pub id: i64,
    pub user_id: i64,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub created_at: i64,
}

/// The columns of `push_subscriptions` in the order [`PushSubscriptionRow`] reads them.
pub const PUSH_COLS: &str = "id, user_id, endpoint, p256dh, auth, created_at";

impl PushSubscriptionRow {
    /// What its owner sees: no keys.
    pub fn public(&self) -> PushSubscription {
        PushSubscription {
            id: self.id,
            endpoint: self.endpoint.clone(),
            created_at: from_ms(self.created_at),
        }
    }
}
