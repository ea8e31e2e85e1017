//! The ntfy channel: a plain-text POST to the contact's topic URL, which ntfy pushes to
//! the phones subscribed to it, with a priority that follows the alert's severity.

use base64::Engine;
use mimamori_protocol::Severity;

use super::message::{Message, Notice};
use super::policy::NoticeEvent;
use super::webhook::{EVENT_HEADER, IDEMPOTENCY_HEADER};
use super::SendError;
use crate::store::OutboxItem;

/// ntfy's priority (1 min … 5 urgent): urgent rings through Do Not Disturb on most phones.
pub fn priority(notice: &Notice) -> u8 {
    match (notice.event, notice.alert.as_ref().map(|a| a.severity)) {
        (NoticeEvent::DailySummary, _) => 2,
        (NoticeEvent::Resolved, _) => 3,
        (_, Some(Severity::Critical)) => 5,
        (_, Some(Severity::High)) => 4,
        _ => 3,
    }
}

fn tags(notice: &Notice) -> &'static str {
    match (notice.event, notice.alert.as_ref().map(|a| a.severity)) {
        (NoticeEvent::DailySummary, _) => "house",
        (NoticeEvent::Resolved, _) => "white_check_mark",
        (_, Some(Severity::Critical)) => "rotating_light",
        _ => "warning",
    }
}

/// HTTP headers carry ASCII; ntfy reads RFC 2047 encoded words for anything else.
pub fn header_text(s: &str) -> String {
    if s.is_ascii() {
        s.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

pub async fn send(
    http: &reqwest::Client,
    item: &OutboxItem,
    notice: &Notice,
    msg: &Message,
) -> Result<(), SendError> {
    let mut req = http
        .post(&item.address)
        .header("Title", header_text(&msg.subject))
        .header("Priority", priority(notice).to_string())
        .header("Tags", tags(notice))
        .header(IDEMPOTENCY_HEADER, &item.idempotency_key)
        .header(EVENT_HEADER, notice.event.as_str());
    if let Some(url) = &msg.map_url {
        req = req.header("Click", url);
    }
    let res = req
        .body(msg.text.clone())
        .send()
        .await
        .map_err(|e| super::request_failed("ntfy", e))?;
    super::check_status(res.status(), "ntfy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_titles_are_encoded_words() {
        assert_eq!(header_text("SOS"), "SOS");
        assert_eq!(header_text("緊急"), "=?UTF-8?B?57eK5oCl?=");
    }
}
