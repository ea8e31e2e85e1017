//! Family notifications: the delivery worker around the outbox, and daily summaries.
//!
//! The outbox rows themselves are decided by the alert core ([`crate::alerts`]: its
//! escalation ladder, with [`policy`] saying who wants what) and written in the same
//! transaction as the alert change that calls for them, so a crash at any point loses
//! no due notification. This worker claims due rows, delivers them with at
//! most `concurrency` in flight, records every attempt, and retries with exponential
//! backoff until the configured give-up time. Delivery is at-least-once: a hub killed
//! mid-attempt sends again after restart with the same `Idempotency-Key`.
//!
//! Module map: [`config`] settings; [`policy`] pure decisions; [`message`] rendering with
//! the templates in `hub/templates`; [`summary`] the daily summary; [`webhook`],
//! [`email`], [`ntfy`], [`line`], [`push`] the channels.

pub mod config;
pub mod email;
pub mod hosts;
pub mod line;
pub mod message;
pub mod ntfy;
pub mod policy;
pub mod push;
pub mod summary;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mimamori_protocol::contact::Channel;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::store::{OutboxItem, Store};
use config::NotifyConfig;
use message::{Notice, ResidentRef, Templates};
use policy::{Next, Outcome};

/// Longest sleep between two looks at the outbox when nothing wakes the worker.
const IDLE: Duration = Duration::from_secs(1);
/// When daily summaries could not be looked for (the store failed), the next try.
const SUMMARY_RETRY: chrono::Duration = chrono::Duration::seconds(20);

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone)]
pub struct SendError {
    pub outcome: Outcome,
    pub message: String,
    /// How long the receiver asked the hub to wait before the next try (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError {
            outcome: Outcome::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            outcome: Outcome::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The receiver's wish not to be tried again for `wait`.
    pub fn retry_after(mut self, wait: Option<std::time::Duration>) -> Self {
        self.retry_after = wait;
        self
    }
}

/// Any 2xx is delivered; everything else is worth another try later.
fn check_status(status: reqwest::StatusCode, channel: &str) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(SendError::transient(format!(
            "{channel} receiver answered {status}"
        )))
    }
}

/// A failed request to a receiver: refused by the host policy (permanent, with the reason),
/// else worth another try. The URL is left out: it may carry a secret.
fn request_failed(channel: &str, e: reqwest::Error) -> SendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return SendError::permanent(format!("{channel} address refused: {io}"));
            }
        }
        cause = c.source();
    }
    SendError::transient(format!("{channel} request failed: {}", e.without_url()))
}

/// Checks a contact's stored address against the host policy in force at delivery time.
fn contact_address_allowed(
    hosts: &hosts::HostPolicy,
    channel: &str,
    address: &str,
) -> Result<(), SendError> {
    let url = reqwest::Url::parse(address)
        .map_err(|e| SendError::permanent(format!("{channel} address is not a URL: {e}")))?;
    hosts
        .check_url(&url)
        .map_err(|e| SendError::permanent(format!("{channel} address refused: {e}")))
}

/// What each delivery task needs, shared.
struct Channels {
    templates: Templates,
    http: reqwest::Client,
    /// For addresses staff typed (webhook, ntfy): resolved through the host policy.
    contacts_http: reqwest::Client,
    hosts: Arc<hosts::HostPolicy>,
    mail: email::Mailer,
    line: Option<line::Line>,
    push: push::Push,
    /// Opens webhook signing secrets sealed at rest.
    secrets: Arc<crate::privacy::seal::Sealer>,
}

pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    bus: Bus,
    cfg: NotifyConfig,
    channels: Arc<Channels>,
    /// Cluster mode: other hubs' notifiers share the outbox.
    shared: bool,
}

/// A claim older than this belongs to a notifier that died mid-attempt (every attempt
/// times out well before); in cluster mode only such claims are freed.
pub const STALE_CLAIM: chrono::Duration = chrono::Duration::minutes(2);

impl Notifier {
    /// Loads the templates and builds the HTTP and SMTP clients; fails on a broken template.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        bus: Bus,
        cfg: NotifyConfig,
        metrics: Arc<Metrics>,
        vapid: push::Vapid,
    ) -> anyhow::Result<Notifier> {
        let templates = Templates::load()?;
        let client = || {
            reqwest::Client::builder()
                // A redirect would re-send a signed resident payload wherever the receiver
                // points; a 3xx is reported as a failure instead.
                .redirect(reqwest::redirect::Policy::none())
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
                .user_agent(concat!("mimamori-hub/", env!("CARGO_PKG_VERSION")))
        };
        let http = client().build()?;
        let hosts = cfg.hosts.clone();
        let contacts_http = client()
            .dns_resolver(Arc::new(hosts::GuardedResolver {
                policy: cfg.hosts.clone(),
            }))
            .build()?;
        let mail = email::Mailer::new(cfg.smtp.as_ref(), cfg.timeout)?;
        let line = cfg.line.clone().map(|l| line::Line {
            quota: line::Quota::new(l.monthly_quota, metrics.clone()),
            public_url: cfg.public_url.clone(),
            cfg: l,
        });
        let push = push::Push {
            vapid,
            cfg: cfg.push.clone(),
            public_url: cfg.public_url.clone(),
            metrics,
        };
        let secrets = cfg.secrets.clone();
        Ok(Notifier {
            store,
            clock,
            bus,
            cfg,
            channels: Arc::new(Channels {
                templates,
                http,
                contacts_http,
                hosts,
                mail,
                line,
                push,
                secrets,
            }),
            shared: false,
        })
    }

    /// Cluster mode: the outbox is shared with other hubs' notifiers, whose claims are
    /// theirs while they are fresh.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Delivers and summarises until the hub stops.
    pub async fn run(self) {
        let now = self.clock.now();
        let claimed_before = if self.shared { now - STALE_CLAIM } else { now };
        match self.store.release_claims(claimed_before, now).await {
            Ok(0) => {}
            Ok(n) => info!(
                deliveries = n,
                "resuming deliveries interrupted by the last stop"
            ),
            Err(e) => error!(error = %e, "cannot release interrupted deliveries"),
        }
        if let Some(line) = &self.channels.line {
            let now = self.clock.now();
            let since = line::Quota::month_start(now);
            match self.store.delivered_since(Channel::Line, since).await {
                Ok(n) => line.quota.resume(now, u64::try_from(n).unwrap_or(0)),
                Err(e) => {
                    warn!(error = %e, "cannot count this month's LINE messages; counting from 0")
                }
            }
        }
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let finished = Arc::new(Notify::new());
        // When the next daily summary falls due; `None` until worked out (at start, and
        // after a contact or time zone changed).
        let mut summaries_due: Option<DateTime<Utc>> = None;
        loop {
            let now = self.clock.now();
            if summaries_due.is_none_or(|t| now >= t) {
                summaries_due = Some(match self.enqueue_summaries(now).await {
                    Ok(next) => next.unwrap_or(now + chrono::Duration::days(1)),
                    Err(e) => {
                        warn!(error = %e, "daily summaries not enqueued; will try again");
                        now + SUMMARY_RETRY
                    }
                });
            }
            let free = slots.available_permits();
            let claimed = self.dispatch(&slots, &finished, now).await;
            if claimed > 0 && claimed == free {
                continue;
            }
            let until_summaries = summaries_due
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::ZERO);
            let wait = self.idle_wait(now).await.min(until_summaries);
            tokio::select! {
                // Every alert change is published on the bus after its commit: the cue that
                // the outbox may have new rows, so delivery starts within milliseconds.
                () = self.bus.alert_changed() => {}
                () = self.bus.summaries_moved() => summaries_due = None,
                _ = finished.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims as many due deliveries as there are free slots and starts them.
    async fn dispatch(
        &self,
        slots: &Arc<Semaphore>,
        finished: &Arc<Notify>,
        now: DateTime<Utc>,
    ) -> usize {
        let free = slots.available_permits();
        if free == 0 {
            return 0;
        }
        let items = match self
            .store
            .claim_deliveries(now, i64::try_from(free).unwrap_or(1))
            .await
        {
            Ok(items) => items,
            Err(e) => {
                error!(error = %e, "cannot claim deliveries");
                return 0;
            }
        };
        let claimed = items.len();
        for item in items {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return claimed;
            };
            let store = self.store.clone();
            let clock = self.clock.clone();
            let channels = self.channels.clone();
            let retry = self.cfg.retry;
            let finished = finished.clone();
            tokio::spawn(async move {
                deliver(store.as_ref(), clock.as_ref(), &channels, &retry, item).await;
                drop(permit);
                finished.notify_one();
            });
        }
        claimed
    }

    /// Until the next retry falls due, at most [`IDLE`].
    async fn idle_wait(&self, now: DateTime<Utc>) -> Duration {
        match self.store.next_delivery_due().await {
            Ok(Some(t)) => (t - now).to_std().unwrap_or(Duration::ZERO).min(IDLE),
            _ => IDLE,
        }
    }

    /// Enqueues each daily summary that is due and not yet enqueued; returns when the next
    /// one falls due.
    async fn enqueue_summaries(&self, now: DateTime<Utc>) -> anyhow::Result<Option<DateTime<Utc>>> {
        let mut next: Option<DateTime<Utc>> = None;
        for target in self.store.summary_targets().await? {
            let c = &target.contact;
            let Some(time) = c.daily_summary_at.as_deref().and_then(policy::parse_hhmm) else {
                continue;
            };
            let tz = policy::zone_of(&target.timezone);
            if let Some(at) = policy::next_summary_at(time, tz, now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            let Some(date) = policy::summary_due(time, tz, c.created_at, now) else {
                continue;
            };
            let key = format!("summary-{}-{}-{date}", c.resident_id, c.id);
            if self.store.delivery_exists(&key).await? {
                continue;
            }
            let Some((from, to)) = policy::local_day(date, tz) else {
                continue;
            };
            let facts = self
                .store
                .day_facts(c.resident_id, from, to.min(now))
                .await?;
            let notice = Notice {
                event: policy::NoticeEvent::DailySummary,
                resident: ResidentRef {
                    id: c.resident_id,
                    name: target.resident_name.clone(),
                    timezone: target.timezone.clone(),
                },
                alert: None,
                position: None,
                summary: Some(summary::DaySummary::build(date, &facts)),
            };
            if self.store.enqueue_summary(c.id, &key, &notice, now).await? {
                debug!(contact = c.id, %date, "daily summary enqueued");
            }
        }
        Ok(next)
    }
}

/// One attempt at one delivery, and its record.
async fn deliver(
    store: &dyn Store,
    clock: &dyn Clock,
    channels: &Channels,
    retry: &policy::Retry,
    item: OutboxItem,
) {
    let result = attempt(store, channels, &item, clock.now()).await;
    let now = clock.now();
    let attempts = item.attempts + 1;
    // Stored, shown to staff and logged: never the contact's address or a URL's secrets.
    let redacted = result
        .as_ref()
        .err()
        .map(|e| redact(&e.message, &item.address));
    let (outcome, error, not_before) = match &result {
        Ok(()) => (Outcome::Ok, None, None),
        Err(e) => (
            e.outcome,
            redacted.as_deref(),
            e.retry_after
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .and_then(|d| now.checked_add_signed(d)),
        ),
    };
    let next = policy::after_attempt(outcome, attempts, item.created_at, now, retry, not_before);
    match (&next, error) {
        (Next::Delivered, _) => debug!(delivery = item.id, attempts, "notification delivered"),
        (Next::RetryAt(at), Some(e)) => {
            info!(delivery = item.id, attempts, error = e, retry_at = %at, "notification failed; will retry")
        }
        (_, e) => warn!(
            delivery = item.id,
            attempts,
            error = e,
            "notification given up"
        ),
    }
    if let Err(e) = store.finish_attempt(item.id, now, error, next).await {
        // The row stays claimed; the next start releases it and it is sent again.
        error!(delivery = item.id, error = %e, "cannot record a delivery attempt");
    }
}

/// `message` without the contact's address and with every URL cut to its scheme and
/// host: a webhook or ntfy URL carries its secret in its path, query or user part.
pub fn redact(message: &str, address: &str) -> String {
    let mut text = if address.is_empty() {
        message.to_string()
    } else {
        message.replace(address, "[contact address]")
    };
    let mut out = String::with_capacity(text.len());
    while let Some(at) = text.find("://") {
        let scheme_start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let rest = &text[at + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(rest.len());
        let authority = rest[..end].split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        out.push_str(&text[..scheme_start]);
        out.push_str(&text[scheme_start..at + 3]);
        out.push_str(host);
        if end > authority.len() || authority.contains('@') {
            out.push_str("/…");
        }
        text = rest[end..].to_string();
    }
    out.push_str(&text);
    out
}

async fn attempt(
    store: &dyn Store,
    channels: &Channels,
    item: &OutboxItem,
    now: DateTime<Utc>,
) -> Result<(), SendError> {
    let notice: Notice = serde_json::from_str(&item.payload)
        .map_err(|e| SendError::permanent(format!("stored notice unreadable: {e}")))?;
    let msg = channels
        .templates
        .render(&notice, item.language)
        .map_err(|e| SendError::permanent(format!("cannot render the message: {e}")))?;
    match item.channel {
        Channel::Webhook => {
            contact_address_allowed(&channels.hosts, "webhook", &item.address)?;
            let secret = item
                .secret
                .as_deref()
                .map(|s| channels.secrets.open(s))
                .transpose()
                .map_err(|e| SendError::permanent(format!("webhook signing secret: {e}")))?;
            webhook::send(
                &channels.contacts_http,
                item,
                secret.as_deref(),
                &notice,
                &msg,
                now,
            )
            .await
        }
        Channel::Ntfy => {
            contact_address_allowed(&channels.hosts, "ntfy", &item.address)?;
            ntfy::send(&channels.contacts_http, item, &notice, &msg).await
        }
        Channel::Email => channels.mail.send(item, &msg).await,
        Channel::Line => match &channels.line {
            Some(l) => {
                let words = channels.templates.line_buttons(item.language);
                l.send(&channels.http, item, &notice, &msg, &words, now)
                    .await
            }
            None => Err(SendError::permanent(
                "LINE is not configured: set line_channel_access_token",
            )),
        },
        Channel::Push => {
            channels
                .push
                .send(&channels.http, store, item, &notice, &msg)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn errors_keep_the_host_but_never_the_address_or_a_url_s_secrets() {
        let address = "https://ntfy.example/s3cret-topic";
        assert_eq!(
            redact(
                "ntfy request failed for https://ntfy.example/s3cret-topic",
                address
            ),
            "ntfy request failed for [contact address]"
        );
        assert_eq!(
            redact(
                "error sending request for url (https://u:pw@hook.example:8443/t/abc?k=1)",
                ""
            ),
            "error sending request for url (https://hook.example:8443/…)"
        );
        assert_eq!(
            redact("webhook receiver answered 500", address),
            "webhook receiver answered 500"
        );
        assert_eq!(redact("see http://h.example", ""), "see http://h.example");
    }
}
