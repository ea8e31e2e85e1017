//! Notification contacts of a resident and the deliveries made to them, as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AlertKind, Severity};

/// How a contact is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A signed JSON POST to the contact's URL.
    Webhook,
    /// A text and HTML e-mail over the hub's SMTP relay.
    Email,
    /// A push to phones through an ntfy topic URL.
    Ntfy,
    /// A push message from the hub's LINE official account to a LINE user or group.
    Line,
    /// A Web Push notification to every browser a hub user subscribed.
    Push,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Webhook,
        Channel::Email,
        Channel::Ntfy,
        Channel::Line,
        Channel::Push,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
            Channel::Ntfy => "ntfy",
            Channel::Line => "line",
            Channel::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The language of a contact's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Ja,
    En,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Ja => "ja",
            Language::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Language> {
        [Language::Ja, Language::En]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// `POST /residents/{id}/contacts`. Text fields are checked by the hub, which answers
/// 422 with the reason, so they arrive as plain strings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub name: String,
    /// `family`, `neighbour`, `supervisor`, `staff` or `other`.
    pub relation: String,
    /// The escalation tier, 1–9: 1 is told when an alert opens, higher tiers when the
    /// ladder reaches them (tier 2 after 2 min for a critical alert by default).
    /// Defaults to 1 for family, 2 for everyone else.
    pub tier: Option<u8>,
    /// `webhook`, `email`, `ntfy`, `line` or `push`.
    pub channel: String,
    /// The URL (webhook, ntfy), e-mail address, LINE user id (`U` and 32 hex digits)
    /// or group id (`C` and 32 hex digits), or for `push` the username of the hub user
    /// whose subscribed browsers are told.
    pub address: String,
    /// Webhook signing key; generated and returned once if left out.
    pub secret: Option<String>,
    /// Alert kinds wanted; absent or empty means every kind.
    pub kinds: Option<Vec<String>>,
    /// Least severity wanted: `warning` (the default), `high` or `critical`.
    pub min_severity: Option<String>,
    /// `"HH:MM-HH:MM"` in the resident's time zone; only critical alerts go through then.
    pub quiet_hours: Option<String>,
    /// `ja` (the default) or `en`.
    pub language: Option<String>,
    /// `"HH:MM"`: a summary of the resident's day is sent then (family contacts only).
    pub daily_summary_at: Option<String>,
}

/// A contact as stored. The webhook secret is never shown again after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: i64,
    pub resident_id: i64,
    pub name: String,
    pub relation: String,
    pub tier: u8,
    pub channel: Channel,
    pub address: String,
    pub kinds: Vec<AlertKind>,
    pub min_severity: Severity,
    pub quiet_hours: Option<String>,
    pub language: Language,
    pub daily_summary_at: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The answer to a creation: the contact, and for a webhook its signing secret, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactCreated {
    #[serde(flatten)]
    pub contact: Contact,
    pub secret: Option<String>,
}

/// Where one outbox message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; retried with backoff.
    Pending,
    Delivered,
    /// Given up after the configured time (or refused for good, such as no SMTP relay).
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One notification to one contact, as `GET /alerts/{id}` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    /// `opened`, `escalated`, `resolved` or `daily_summary`.
    pub event: String,
    pub channel: Channel,
    pub contact_id: Option<i64>,
    pub contact_name: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// `POST /push/subscriptions`: a browser's `PushSubscription.toJSON()` as it comes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewPushSubscription {
    pub endpoint: String,
    pub keys: PushKeys,
    /// Sent by browsers (usually `null`); not used, since push services answer 404 or
    /// 410 for an expired subscription anyway.
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<serde_json::Value>,
}

/// The browser's P-256 public key and authentication secret, base64url.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A browser subscribed to Web Push by the calling user, as the API lists it; its keys
/// are not shown back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: i64,
    pub endpoint: String,
    pub created_at: DateTime<Utc>,
}

/// `GET /push/key`: the hub's VAPID public key, the `applicationServerKey` a browser
/// subscribes with (base64url of the uncompressed P-256 point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushKey {
    pub public_key: String,
}
