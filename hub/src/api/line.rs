//! `POST /api/v1/line/webhook`: LINE's calls to the hub, authenticated only by their
//! `X-Line-Signature` (HMAC-SHA256 of the raw body under the channel secret).
//!
//! A "確認しました" postback from a LINE message becomes the alert core's
//! [`StaffAction::Confirm`] for the contact who was told: its history and the audit
//! trail record it, and that contact gets no more reminders. The postback is taken
//! only from the LINE user or group the contact's address names, for an alert and
//! delivery of that contact, and once: a second press is answered but not recorded
//! again. LINE expects 200 to every signed call, so a postback the
//! hub will not act on (an alert already resolved, a stale button) is logged and
//! answered 200; a failed commit is answered 503 so that LINE may send it again.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use mimamori_protocol::contact::Channel;
use serde::Deserialize;
use tracing::{info, warn};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::alerts::{StaffAction, StaffCommand};
use crate::notify::line::{verify_signature, Confirm, SIGNATURE_HEADER};
use crate::pipeline::StaffError;

/// Largest webhook body accepted; LINE sends a few events per call.
pub const MAX_WEBHOOK_BODY: usize = 64 * 1024;

/// The note put on the alert's history with a confirmation from LINE.
pub const CONFIRM_NOTE: &str = "確認しました (LINE)";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/line/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
}

#[derive(Debug, Deserialize)]
struct WebhookBody {
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    source: Option<Source>,
    postback: Option<Postback>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(rename = "type")]
    kind: String,
    user_id: Option<String>,
    group_id: Option<String>,
}

impl Source {
    /// The id a contact's address would hold: the group's for a group, else the user's.
    fn id(&self) -> Option<&str> {
        match self.kind.as_str() {
            "group" => self.group_id.as_deref(),
            "user" => self.user_id.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Postback {
    data: String,
}

async fn webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let Some(secret) = st.line_secret.as_ref() else {
        return Err(ApiError::NotFound(
            "the LINE webhook is not enabled (set line_channel_secret)".into(),
        ));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify_signature(secret.expose(), &body, signature) {
        warn!("LINE webhook call with a missing or wrong signature refused");
        return Err(ApiError::Unauthorized);
    }
    let hook: WebhookBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a LINE webhook body: {e}")))?;
    for event in hook.events {
        if matches!(event.kind.as_str(), "follow" | "join") {
            // How the office learns the id to enter as a LINE contact's address.
            if let Some(id) = event.source.as_ref().and_then(Source::id) {
                info!(event = %event.kind, id, "LINE account added; this id can be a LINE contact's address");
            }
            continue;
        }
        if event.kind != "postback" {
            continue;
        }
        let (Some(source), Some(postback)) = (&event.source, &event.postback) else {
            continue;
        };
        confirm(&st, source, &postback.data).await?;
    }
    Ok(StatusCode::OK)
}

/// Acts on one postback; only a failed commit is an error.
async fn confirm(st: &AppState, source: &Source, data: &str) -> ApiResult<()> {
    let Some(c) = Confirm::parse(data) else {
        info!("LINE postback with data the hub did not send ignored");
        return Ok(());
    };
    let Some(sender) = source.id() else {
        info!(
            alert = c.alert_id,
            "LINE postback without a user or group ignored"
        );
        return Ok(());
    };
    let Some(contact) = accepted_contact(st, &c, sender).await? else {
        warn!(
            alert = c.alert_id,
            contact = c.contact_id,
            "LINE postback refused: not from the contact that alert was sent to"
        );
        return Ok(());
    };
    let actor = format!("family:{}", contact.name);
    // A second press, or LINE redelivering the call, is answered without a second line.
    let history = st.store.alert_history(c.alert_id).await?;
    if history
        .iter()
        .any(|e| e.action == "confirmed" && e.actor == actor)
    {
        info!(
            alert = c.alert_id,
            contact = contact.id,
            "LINE confirmation already recorded"
        );
        return Ok(());
    }
    let cmd = StaffCommand {
        alert_id: c.alert_id,
        action: StaffAction::Confirm {
            contact_id: contact.id,
        },
        actor,
        note: Some(CONFIRM_NOTE.into()),
    };
    match st.pipeline.staff(cmd).await {
        Ok(_) => {
            info!(
                alert = c.alert_id,
                contact = contact.id,
                "confirmed from LINE"
            );
            Ok(())
        }
        Err(StaffError::Refused(why)) => {
            info!(alert = c.alert_id, contact = contact.id, refusal = ?why, "LINE confirmation not taken");
            Ok(())
        }
        Err(StaffError::NotStored | StaffError::Stopped) => Err(ApiError::Unavailable(
            "the confirmation could not be stored; nothing changed, try again".into(),
        )),
    }
}

/// The contact, if the postback is theirs: a LINE contact whose address is the sender,
/// of the alert's resident, with a delivery of this alert under that key.
async fn accepted_contact(
    st: &AppState,
    c: &Confirm,
    sender: &str,
) -> ApiResult<Option<mimamori_protocol::contact::Contact>> {
    if !c.key_matches() {
        return Ok(None);
    }
    let contact = match st.store.contact(c.contact_id).await {
        Ok(contact) => contact,
        Err(crate::store::StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if contact.channel != Channel::Line || contact.address != sender {
        return Ok(None);
    }
    let alert = match st.store.alert(c.alert_id).await {
        Ok(alert) => alert,
        Err(crate::store::StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if alert.resident_id != contact.resident_id
        || !st.store.delivery_exists(&c.idempotency_key).await?
    {
        return Ok(None);
    }
    Ok(Some(contact))
}
