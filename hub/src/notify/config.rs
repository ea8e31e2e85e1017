//! Settings of notification delivery, escalation and the SMTP relay: flags, environment
//! variables, and the `[notify]` table of the configuration file.

use anyhow::bail;
use chrono::Duration;
use clap::Args;
use serde::Deserialize;

use std::sync::Arc;

use super::hosts::HostPolicy;
use super::line::{LineConfig, Secret};
use super::policy::Retry;
use super::push::PushConfig;
use crate::alerts::ladder::{Ladder, Plan, Step};

/// As given; unset values fall back to the documented defaults.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// SMTP relay for e-mail notifications; without one, e-mail deliveries fail with
    /// "SMTP not configured".
    #[arg(long, env = "MIMAMORI_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port; 587 with STARTTLS, 25 for plain.
    #[arg(long, env = "MIMAMORI_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// `starttls` (the default: refuse to send unless the relay upgrades to TLS) or `plain`.
    #[arg(long, env = "MIMAMORI_SMTP_SECURITY")]
    pub smtp_security: Option<String>,
    /// Sender address of notification e-mails.
    #[arg(long, env = "MIMAMORI_SMTP_FROM")]
    pub smtp_from: Option<String>,
    #[arg(long, env = "MIMAMORI_SMTP_USER")]
    pub smtp_user: Option<String>,
    #[arg(long, env = "MIMAMORI_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Seconds an open critical alert may go unacknowledged before tier 2 is told
    /// (0: no step after the first). Shorthand for the second step of `[notify.ladder.critical]`.
    #[arg(long, env = "MIMAMORI_ESCALATE_CRITICAL_SECS")]
    pub escalate_critical_secs: Option<u64>,
    /// The same for high alerts.
    #[arg(long, env = "MIMAMORI_ESCALATE_HIGH_SECS")]
    pub escalate_high_secs: Option<u64>,
    /// The whole escalation ladder per severity (file only): `[notify.ladder.critical]` etc.
    #[arg(skip)]
    pub ladder: LadderSettings,
    /// Deliveries in flight at once.
    #[arg(long, env = "MIMAMORI_NOTIFY_CONCURRENCY")]
    pub notify_concurrency: Option<usize>,
    /// Wait after a first failed attempt, in milliseconds; doubled after each further one.
    #[arg(long, env = "MIMAMORI_NOTIFY_RETRY_BASE_MS")]
    pub notify_retry_base_ms: Option<u64>,
    /// Longest wait between two attempts, in seconds.
    #[arg(long, env = "MIMAMORI_NOTIFY_RETRY_MAX_SECS")]
    pub notify_retry_max_secs: Option<u64>,
    /// Seconds after which an undelivered notification is given up and shown as failed.
    #[arg(long, env = "MIMAMORI_NOTIFY_GIVE_UP_SECS")]
    pub notify_give_up_secs: Option<u64>,
    /// Seconds a webhook, ntfy, LINE or SMTP exchange may take.
    #[arg(long, env = "MIMAMORI_NOTIFY_TIMEOUT_SECS")]
    pub notify_timeout_secs: Option<u64>,
    /// The hub's address as family members' phones reach it (`https://mimamori.example.org`);
    /// LINE messages then link to the alert on the dashboard.
    #[arg(long, env = "MIMAMORI_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The LINE official account's channel access token; without it LINE deliveries fail
    /// with "LINE is not configured". Never shown back.
    #[arg(
        long,
        env = "MIMAMORI_LINE_CHANNEL_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub line_channel_access_token: Option<String>,
    /// The channel secret that signs LINE's webhook calls; enables the "確認しました" button
    /// and `POST /api/v1/line/webhook`. Never shown back.
    #[arg(long, env = "MIMAMORI_LINE_CHANNEL_SECRET", hide_env_values = true)]
    pub line_channel_secret: Option<String>,
    /// Base URL of the Messaging API (default `https://api.line.me`).
    #[arg(long, env = "MIMAMORI_LINE_API_BASE")]
    pub line_api_base: Option<String>,
    /// Messages the LINE plan includes per month (default 200, the free plan); the log
    /// warns at 80 % and 100 %.
    #[arg(long, env = "MIMAMORI_LINE_MONTHLY_QUOTA")]
    pub line_monthly_quota: Option<u64>,
    /// Web Push: the operator's `mailto:` or `https:` address, sent to push services in
    /// every VAPID signature (Apple's refuses messages without one).
    #[arg(long, env = "MIMAMORI_PUSH_SUBJECT")]
    pub push_subject: Option<String>,
    /// Accept `http://` push endpoints on loopback addresses (tests with a local push
    /// service only; real push services are https://).
    #[arg(long, env = "MIMAMORI_PUSH_ALLOW_HTTP_LOOPBACK")]
    pub push_allow_http_loopback: Option<bool>,
    /// Browsers one user may subscribe to Web Push (default 10).
    #[arg(long, env = "MIMAMORI_PUSH_MAX_SUBSCRIPTIONS")]
    pub push_max_subscriptions: Option<u32>,
    /// The only hosts webhook and ntfy contacts may reach, comma-separated: names
    /// (`hooks.example.org`), domains (`*.example.org`), addresses or networks
    /// (`192.168.10.0/24`). Unset: any host, but only at public addresses.
    #[arg(long, env = "MIMAMORI_WEBHOOK_HOSTS")]
    pub webhook_hosts: Option<String>,
}

/// `[notify.ladder]`: a plan per severity; a severity left out keeps its default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderSettings {
    pub critical: Option<PlanSettings>,
    pub high: Option<PlanSettings>,
    pub warning: Option<PlanSettings>,
}

/// One severity's ladder as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// `[{ after_s = 0, tier = 1 }, { after_s = 120, tier = 2 }, …]`
    pub steps: Vec<StepSettings>,
    /// Reminders to everyone told so far, this often until acknowledged (0 or absent: none).
    #[serde(default)]
    pub remind_every_s: u64,
    /// Unanswered after this long without an acknowledgement (0 or absent: never).
    #[serde(default)]
    pub unanswered_after_s: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSettings {
    pub after_s: u64,
    pub tier: u8,
}

impl PlanSettings {
    fn plan(&self) -> Plan {
        Plan {
            steps: self
                .steps
                .iter()
                .map(|s| Step {
                    after: secs(s.after_s).unwrap_or_else(Duration::zero),
                    tier: s.tier,
                })
                .collect(),
            repeat: secs(self.remind_every_s),
            unanswered: secs(self.unanswered_after_s),
        }
    }
}

impl LadderSettings {
    fn over(self, file: LadderSettings) -> LadderSettings {
        LadderSettings {
            critical: self.critical.or(file.critical),
            high: self.high.or(file.high),
            warning: self.warning.or(file.warning),
        }
    }
}

/// Moves the tier-2 step of a default plan; 0 keeps only the first step.
fn with_second_step(plan: &mut Plan, after_s: u64) {
    match secs(after_s) {
        None => plan.steps.truncate(1),
        Some(after) => {
            if let Some(s) = plan.steps.get_mut(1) {
                s.after = after;
            }
            plan.steps.retain(|s| s.tier <= 2 || s.after >= after);
        }
    }
}

/// How e-mail reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Plain,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: String,
    pub credentials: Option<(String, String)>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub smtp: Option<SmtpConfig>,
    pub ladder: Ladder,
    pub retry: Retry,
    pub concurrency: usize,
    pub timeout: std::time::Duration,
    /// The hub's public address, for links in messages.
    pub public_url: Option<reqwest::Url>,
    /// LINE, when a channel access token is set.
    pub line: Option<LineConfig>,
    pub push: PushConfig,
    /// The hosts webhook and ntfy contacts may reach.
    pub hosts: Arc<HostPolicy>,
    /// Opens webhook signing secrets sealed at rest.
    pub secrets: std::sync::Arc<crate::privacy::seal::Sealer>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp: None,
            ladder: Ladder::default(),
            retry: Retry {
                base: Duration::seconds(1),
                cap: Duration::minutes(5),
                give_up_after: Duration::hours(6),
            },
            concurrency: 16,
            timeout: std::time::Duration::from_secs(10),
            public_url: None,
            line: None,
            push: PushConfig::default(),
            hosts: Arc::default(),
            secrets: Default::default(),
        }
    }
}

pub const DEFAULT_NOTIFY_CONFIG: &str = r#"
# Notifications to family and supervisors (see docs/notifications.md).
[notify]
# smtp_host = "mail.example.org"   # unset: e-mail deliveries fail with "SMTP not configured"
# smtp_port = 587
# smtp_security = "starttls"       # or "plain" (only on a trusted local relay)
# smtp_from = "mimamori@example.org"
# smtp_user = "…"
# smtp_password = "…"              # better: MIMAMORI_SMTP_PASSWORD
notify_concurrency = 16
notify_retry_base_ms = 1000
notify_retry_max_secs = 300
notify_give_up_secs = 21600
notify_timeout_secs = 10
# public_url = "https://mimamori.example.org"   # links in LINE messages
# line_channel_access_token = "…"  # better: MIMAMORI_LINE_CHANNEL_ACCESS_TOKEN
# line_channel_secret = "…"        # better: MIMAMORI_LINE_CHANNEL_SECRET
# line_api_base = "https://api.line.me"
# line_monthly_quota = 200         # the free plan; the log warns at 80 %
# push_subject = "mailto:ops@example.org"   # the VAPID contact push services see
push_max_subscriptions = 10        # browsers per user with notifications enabled
# webhook_hosts = "hooks.example.org, *.ward.example, 192.168.10.0/24"   # unset: public addresses only

# The escalation ladder per severity: who is told after how long while nobody
# acknowledges, reminders to everyone told so far, and when the alert is "unanswered".
[notify.ladder.critical]
steps = [{ after_s = 0, tier = 1 }, { after_s = 120, tier = 2 }, { after_s = 600, tier = 3 }]
remind_every_s = 300
unanswered_after_s = 900

[notify.ladder.high]
steps = [{ after_s = 0, tier = 1 }, { after_s = 600, tier = 2 }, { after_s = 1800, tier = 3 }]
remind_every_s = 900
unanswered_after_s = 3600

[notify.ladder.warning]
steps = [{ after_s = 0, tier = 1 }]
"#;

/// An `http://` or `https://` URL with a host.
fn http_url(name: &str, value: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(value)
        .map_err(|e| anyhow::anyhow!("{name} {value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("{name} {value:?} must be an http:// or https:// URL with a host");
    }
    Ok(url)
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000)))
}

impl NotifySettings {
    /// Values from `self` win over those of `file`.
    pub fn over(self, file: NotifySettings) -> NotifySettings {
        NotifySettings {
            smtp_host: self.smtp_host.or(file.smtp_host),
            smtp_port: self.smtp_port.or(file.smtp_port),
            smtp_security: self.smtp_security.or(file.smtp_security),
            smtp_from: self.smtp_from.or(file.smtp_from),
            smtp_user: self.smtp_user.or(file.smtp_user),
            smtp_password: self.smtp_password.or(file.smtp_password),
            escalate_critical_secs: self.escalate_critical_secs.or(file.escalate_critical_secs),
            escalate_high_secs: self.escalate_high_secs.or(file.escalate_high_secs),
            ladder: self.ladder.over(file.ladder),
            notify_concurrency: self.notify_concurrency.or(file.notify_concurrency),
            notify_retry_base_ms: self.notify_retry_base_ms.or(file.notify_retry_base_ms),
            notify_retry_max_secs: self.notify_retry_max_secs.or(file.notify_retry_max_secs),
            notify_give_up_secs: self.notify_give_up_secs.or(file.notify_give_up_secs),
            notify_timeout_secs: self.notify_timeout_secs.or(file.notify_timeout_secs),
            public_url: self.public_url.or(file.public_url),
            line_channel_access_token: self
                .line_channel_access_token
                .or(file.line_channel_access_token),
            line_channel_secret: self.line_channel_secret.or(file.line_channel_secret),
            line_api_base: self.line_api_base.or(file.line_api_base),
            line_monthly_quota: self.line_monthly_quota.or(file.line_monthly_quota),
            push_subject: self.push_subject.or(file.push_subject),
            push_allow_http_loopback: self
                .push_allow_http_loopback
                .or(file.push_allow_http_loopback),
            push_max_subscriptions: self.push_max_subscriptions.or(file.push_max_subscriptions),
            webhook_hosts: self.webhook_hosts.or(file.webhook_hosts),
        }
    }

    pub fn finish(self) -> anyhow::Result<NotifyConfig> {
        let d = NotifyConfig::default();
        let concurrency = self.notify_concurrency.unwrap_or(d.concurrency);
        if concurrency == 0 || concurrency > 1024 {
            bail!("notify_concurrency must be between 1 and 1024");
        }
        let base_ms = self.notify_retry_base_ms.unwrap_or(1000);
        if base_ms == 0 || base_ms > 3_600_000 {
            bail!("notify_retry_base_ms must be between 1 and 3600000");
        }
        let cap = secs(self.notify_retry_max_secs.unwrap_or(300))
            .ok_or_else(|| anyhow::anyhow!("notify_retry_max_secs must be at least 1"))?;
        let give_up = secs(self.notify_give_up_secs.unwrap_or(21_600))
            .ok_or_else(|| anyhow::anyhow!("notify_give_up_secs must be at least 1"))?;
        let timeout = self.notify_timeout_secs.unwrap_or(10);
        if timeout == 0 || timeout > 300 {
            bail!("notify_timeout_secs must be between 1 and 300");
        }
        Ok(NotifyConfig {
            smtp: self.smtp()?,
            ladder: self.ladder()?,
            retry: Retry {
                base: Duration::milliseconds(i64::try_from(base_ms).unwrap_or(1000)),
                cap,
                give_up_after: give_up,
            },
            concurrency,
            timeout: std::time::Duration::from_secs(timeout),
            public_url: self.public_url()?,
            line: self.line()?,
            push: self.push()?,
            hosts: Arc::new(
                HostPolicy::parse(self.webhook_hosts.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)?,
            ),
            secrets: Default::default(),
        })
    }

    fn push(&self) -> anyhow::Result<PushConfig> {
        let d = PushConfig::default();
        let subject = match self.push_subject.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) if s.starts_with("mailto:") && s.len() > 7 => Some(s.to_string()),
            Some(s) => match reqwest::Url::parse(s) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => Some(u.to_string()),
                _ => bail!("push_subject {s:?} must be a mailto: or https:// address"),
            },
        };
        let max = self
            .push_max_subscriptions
            .map_or(d.max_per_user, i64::from);
        if !(1..=100).contains(&max) {
            bail!("push_max_subscriptions must be between 1 and 100");
        }
        Ok(PushConfig {
            subject,
            allow_http_loopback: self.push_allow_http_loopback.unwrap_or(false),
            max_per_user: max,
        })
    }

    fn public_url(&self) -> anyhow::Result<Option<reqwest::Url>> {
        let Some(u) = self.public_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(http_url("public_url", u)?))
    }

    fn line(&self) -> anyhow::Result<Option<LineConfig>> {
        let secret = match self.line_channel_secret.as_deref() {
            None | Some("") => None,
            Some(s) if s.trim() != s || s.chars().any(char::is_whitespace) => {
                bail!("line_channel_secret must not contain spaces")
            }
            Some(s) => Some(Secret::new(s)),
        };
        let Some(token) = self
            .line_channel_access_token
            .as_deref()
            .filter(|t| !t.is_empty())
        else {
            if secret.is_some() {
                bail!("line_channel_secret is set but line_channel_access_token is not");
            }
            return Ok(None);
        };
        if !token.is_ascii() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("line_channel_access_token must be the token as LINE shows it, without spaces");
        }
        let api_base = http_url(
            "line_api_base",
            self.line_api_base
                .as_deref()
                .unwrap_or("https://api.line.me"),
        )?;
        let monthly_quota = self
            .line_monthly_quota
            .unwrap_or(crate::notify::line::DEFAULT_MONTHLY_QUOTA);
        if monthly_quota == 0 {
            bail!("line_monthly_quota must be at least 1");
        }
        Ok(Some(LineConfig {
            access_token: Secret::new(token),
            channel_secret: secret,
            api_base,
            monthly_quota,
        }))
    }

    fn ladder(&self) -> anyhow::Result<Ladder> {
        let mut ladder = Ladder::default();
        if let Some(n) = self.escalate_critical_secs {
            with_second_step(&mut ladder.critical, n);
        }
        if let Some(n) = self.escalate_high_secs {
            with_second_step(&mut ladder.high, n);
        }
        let l = &self.ladder;
        for (severity, name, given) in [
            (
                mimamori_protocol::Severity::Critical,
                "critical",
                &l.critical,
            ),
            (mimamori_protocol::Severity::High, "high", &l.high),
            (mimamori_protocol::Severity::Warning, "warning", &l.warning),
        ] {
            if let Some(p) = given {
                *ladder.plan_mut(severity) = p.plan();
            }
            ladder
                .plan(severity)
                .validate(name)
                .map_err(anyhow::Error::msg)?;
        }
        Ok(ladder)
    }

    fn smtp(&self) -> anyhow::Result<Option<SmtpConfig>> {
        let Some(host) = self.smtp_host.clone().filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let security = match self.smtp_security.as_deref().unwrap_or("starttls") {
            "starttls" => SmtpSecurity::StartTls,
            "plain" => SmtpSecurity::Plain,
            other => bail!("smtp_security {other:?} must be \"starttls\" or \"plain\""),
        };
        let Some(from) = self.smtp_from.clone() else {
            bail!("smtp_host is set but smtp_from (the sender address) is not");
        };
        if from.parse::<lettre::message::Mailbox>().is_err() {
            bail!("smtp_from {from:?} is not an e-mail address");
        }
        let credentials = match (&self.smtp_user, &self.smtp_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => bail!("smtp_user and smtp_password go together"),
        };
        let port = self.smtp_port.unwrap_or(match security {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Plain => 25,
        });
        Ok(Some(SmtpConfig {
            host,
            port,
            security,
            from,
            credentials,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_printed_section_agree() -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct File {
            notify: NotifySettings,
        }
        let file: File = toml::from_str(DEFAULT_NOTIFY_CONFIG)?;
        let from_file = file.notify.finish()?;
        let built_in = NotifySettings::default().finish()?;
        assert_eq!(from_file.ladder, built_in.ladder);
        assert_eq!(from_file.retry, built_in.retry);
        assert_eq!(from_file.concurrency, built_in.concurrency);
        assert!(built_in.smtp.is_none());
        Ok(())
    }

    #[test]
    fn the_example_in_the_docs_is_a_valid_configuration() -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct File {
            notify: NotifySettings,
        }
        let doc = include_str!("../../../docs/notifications.md");
        let example = doc
            .split("```toml")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .ok_or_else(|| anyhow::anyhow!("no toml example"))?;
        let mut settings = toml::from_str::<File>(example)?.notify;
        settings.smtp_password = Some("from-the-environment".into());
        let cfg = settings.finish()?;
        let smtp = cfg.smtp.ok_or_else(|| anyhow::anyhow!("no smtp"))?;
        assert_eq!((smtp.port, smtp.security), (587, SmtpSecurity::StartTls));
        assert_eq!(cfg.ladder, Ladder::default());
        Ok(())
    }

    #[test]
    fn line_needs_a_token_and_keeps_it_out_of_debug() -> anyhow::Result<()> {
        assert!(NotifySettings::default().finish()?.line.is_none());
        let s = NotifySettings {
            line_channel_access_token: Some("tok3n/abc+def=".into()),
            line_channel_secret: Some("0123456789abcdef".into()),
            ..NotifySettings::default()
        };
        let cfg = s.finish()?;
        let line = cfg.line.ok_or_else(|| anyhow::anyhow!("no line"))?;
        assert_eq!(line.api_base.as_str(), "https://api.line.me/");
        assert_eq!(line.monthly_quota, 200);
        let shown = format!("{line:?}");
        assert!(!shown.contains("tok3n") && !shown.contains("0123456789abcdef"));
        let only_secret = NotifySettings {
            line_channel_secret: Some("0123456789abcdef".into()),
            ..NotifySettings::default()
        };
        assert!(only_secret.finish().is_err());
        let bad_base = NotifySettings {
            line_channel_access_token: Some("t".into()),
            line_api_base: Some("ftp://api.line.me".into()),
            ..NotifySettings::default()
        };
        assert!(bad_base.finish().is_err());
        Ok(())
    }

    #[test]
    fn push_subject_is_mailto_or_https() -> anyhow::Result<()> {
        let with = |s: &str| NotifySettings {
            push_subject: Some(s.into()),
            ..NotifySettings::default()
        };
        assert_eq!(
            with("mailto:ops@example.org")
                .finish()?
                .push
                .subject
                .as_deref(),
            Some("mailto:ops@example.org")
        );
        assert_eq!(
            with("https://care.example.org")
                .finish()?
                .push
                .subject
                .as_deref(),
            Some("https://care.example.org/")
        );
        assert!(with("http://care.example.org").finish().is_err());
        assert!(with("ops@example.org").finish().is_err());
        assert!(with("mailto:").finish().is_err());
        let none = NotifySettings::default().finish()?.push;
        assert_eq!(
            (none.subject, none.allow_http_loopback, none.max_per_user),
            (None, false, 10)
        );
        let zero = NotifySettings {
            push_max_subscriptions: Some(0),
            ..NotifySettings::default()
        };
        assert!(zero.finish().is_err());
        Ok(())
    }

    #[test]
    fn zero_disables_escalation_and_bad_smtp_is_refused() -> anyhow::Result<()> {
        let s = NotifySettings {
            escalate_high_secs: Some(0),
            escalate_critical_secs: Some(2),
            ..NotifySettings::default()
        };
        let c = s.finish()?;
        assert_eq!(c.ladder.high.steps.len(), 1);
        assert_eq!(c.ladder.critical.steps[1].after, Duration::seconds(2));
        assert_eq!(c.ladder.critical.steps.len(), 3);
        let no_from = NotifySettings {
            smtp_host: Some("127.0.0.1".into()),
            ..NotifySettings::default()
        };
        assert!(no_from.finish().is_err());
        let bad_security = NotifySettings {
            smtp_host: Some("127.0.0.1".into()),
            smtp_from: Some("hub@example.org".into()),
            smtp_security: Some("ssl".into()),
            ..NotifySettings::default()
        };
        assert!(bad_security.finish().is_err());
        Ok(())
    }
}
