//! The e-mail channel: a text and HTML message through the configured SMTP relay.
//!
//! Without a relay in the configuration every e-mail delivery fails at once with
//! "SMTP not configured", recorded on the delivery, rather than stopping the hub.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{SmtpConfig, SmtpSecurity};
use super::message::Message;
use super::SendError;
use crate::store::OutboxItem;

pub struct Mailer {
    relay: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl Mailer {
    pub fn new(cfg: Option<&SmtpConfig>, timeout: std::time::Duration) -> anyhow::Result<Mailer> {
        let Some(cfg) = cfg else {
            return Ok(Mailer { relay: None });
        };
        let builder = match cfg.security {
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)?
            }
            SmtpSecurity::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            }
        };
        let mut builder = builder.port(cfg.port).timeout(Some(timeout));
        if let Some((user, password)) = &cfg.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from: Mailbox = cfg.from.parse()?;
        Ok(Mailer {
            relay: Some((builder.build(), from)),
        })
    }

    pub async fn send(&self, item: &OutboxItem, msg: &Message) -> Result<(), SendError> {
        let (transport, from) = self
            .relay
            .as_ref()
            .ok_or_else(|| SendError::permanent("SMTP not configured"))?;
        let to: Mailbox = item.address.parse().map_err(|e| {
            SendError::permanent(format!("the contact's address is not valid: {e}"))
        })?;
        // The Message-ID is the idempotency key, the same on every attempt, so a mail
        // system that saw the first attempt arrive can drop the retry.
        let email = lettre::Message::builder()
            .from(from.clone())
            .to(to)
            .subject(&msg.subject)
            .message_id(Some(format!("<{}@mimamori.hub>", item.idempotency_key)))
            .multipart(MultiPart::alternative_plain_html(
                msg.text.clone(),
                msg.html.clone(),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build the e-mail: {e}")))?;
        match transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                Err(SendError::permanent(format!("SMTP relay refused: {e}")))
            }
            Err(e) => Err(SendError::transient(format!("SMTP: {e}"))),
        }
    }
}
