//! Settings of notification delivery, escalation and the SMTP relay: flags, environment
//! variables, and the `[notify]` table of the configuration file.

use anyhow::bail;
use chrono::Duration;
use clap::Args;
use serde::Deserialize;

use super::policy::{Escalation, Retry};

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
    /// Seconds an open critical alert may go unacknowledged before it escalates (0: never).
    #[arg(long, env = "MIMAMORI_ESCALATE_CRITICAL_SECS")]
    pub escalate_critical_secs: Option<u64>,
    /// Seconds an open high alert may go unacknowledged before it escalates (0: never).
    #[arg(long, env = "MIMAMORI_ESCALATE_HIGH_SECS")]
    pub escalate_high_secs: Option<u64>,
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
    /// Seconds a webhook, ntfy or SMTP exchange may take.
    #[arg(long, env = "MIMAMORI_NOTIFY_TIMEOUT_SECS")]
    pub notify_timeout_secs: Option<u64>,
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
    pub escalation: Escalation,
    pub retry: Retry,
    pub concurrency: usize,
    pub timeout: std::time::Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp: None,
            escalation: Escalation::default(),
            retry: Retry {
                base: Duration::seconds(1),
                cap: Duration::minutes(5),
                give_up_after: Duration::hours(6),
            },
            concurrency: 16,
            timeout: std::time::Duration::from_secs(10),
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
escalate_critical_secs = 120
escalate_high_secs = 600
notify_concurrency = 16
notify_retry_base_ms = 1000
notify_retry_max_secs = 300
notify_give_up_secs = 21600
notify_timeout_secs = 10
"#;

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
            notify_concurrency: self.notify_concurrency.or(file.notify_concurrency),
            notify_retry_base_ms: self.notify_retry_base_ms.or(file.notify_retry_base_ms),
            notify_retry_max_secs: self.notify_retry_max_secs.or(file.notify_retry_max_secs),
            notify_give_up_secs: self.notify_give_up_secs.or(file.notify_give_up_secs),
            notify_timeout_secs: self.notify_timeout_secs.or(file.notify_timeout_secs),
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
            escalation: Escalation {
                critical: self
                    .escalate_critical_secs
                    .map_or(d.escalation.critical, secs),
                high: self.escalate_high_secs.map_or(d.escalation.high, secs),
            },
            retry: Retry {
                base: Duration::milliseconds(i64::try_from(base_ms).unwrap_or(1000)),
                cap,
                give_up_after: give_up,
            },
            concurrency,
            timeout: std::time::Duration::from_secs(timeout),
        })
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
        assert_eq!(from_file.escalation, built_in.escalation);
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
        assert_eq!(cfg.escalation, Escalation::default());
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
        assert_eq!(c.escalation.high, None);
        assert_eq!(c.escalation.critical, Some(Duration::seconds(2)));
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
