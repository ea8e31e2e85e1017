//! Notification contacts of a resident: who is told of alerts, how, and when.
//!
//! Staff and admins manage contacts; family users may read those of their own
//! residents. A webhook's signing secret is shown once, in the answer to its creation.
//! A `push` contact names a hub user; a family user may be named only for a resident
//! they may see. A webhook or ntfy address must reach a host the operator's
//! `webhook_hosts` policy allows (public addresses only by default).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::contact::{Channel, Contact, ContactCreated, Language, NewContact};
use mimamori_protocol::{AlertKind, Severity};

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::notify::policy::{parse_hhmm, QuietHours};
use crate::pipeline::Command;
use crate::security;
use crate::store::NewContactRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/residents/{id}/contacts", post(create).get(list))
        .route("/contacts/{id}", delete(remove))
}

pub const RELATIONS: [&str; 5] = ["family", "neighbour", "supervisor", "staff", "other"];

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Invalid(msg.into())
}

fn valid_address(channel: Channel, address: &str) -> ApiResult<String> {
    let address = address.trim();
    match channel {
        Channel::Email => {
            address
                .parse::<lettre::Address>()
                .map_err(|_| invalid(format!("address {address:?} is not an e-mail address")))?;
        }
        Channel::Line => {
            if !crate::notify::line::valid_id(address) {
                return Err(invalid(format!(
                    "address {address:?} is not a LINE user id (U and 32 hex digits) or group id (C and 32 hex digits)"
                )));
            }
        }
        Channel::Push => {
            if address.is_empty() || address.chars().count() > 64 {
                return Err(invalid(
                    "address of a push contact must be the username of a hub user",
                ));
            }
        }
        Channel::Webhook | Channel::Ntfy => {
            let url = reqwest::Url::parse(address)
                .map_err(|e| invalid(format!("address {address:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid(format!(
                    "address {address:?} must be an http:// or https:// URL with a host"
                )));
            }
        }
    }
    Ok(address.to_string())
}

fn valid_secret(channel: Channel, secret: Option<&str>) -> ApiResult<Option<String>> {
    match (channel, secret) {
        (Channel::Webhook, None) => Ok(Some(security::random_secret())),
        (Channel::Webhook, Some(s)) if (16..=256).contains(&s.len()) && s.is_ascii() => {
            Ok(Some(s.to_string()))
        }
        (Channel::Webhook, Some(_)) => Err(invalid(
            "secret must be 16 to 256 ASCII characters (leave it out to have one generated)",
        )),
        (_, Some(_)) => Err(invalid("only webhook contacts have a secret")),
        (_, None) => Ok(None),
    }
}

/// Checks every field of a new contact; the first problem is the answer.
pub fn validate(
    resident_id: i64,
    req: &NewContact,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<NewContactRow> {
    let name = super::text::display_name("name", &req.name, 100)?;
    let relation = req.relation.trim();
    if !RELATIONS.contains(&relation) {
        return Err(invalid(format!(
            "relation {relation:?} must be one of {}",
            RELATIONS.join(", ")
        )));
    }
    let tier = req.tier.unwrap_or(if relation == "family" { 1 } else { 2 });
    if !(1..=9).contains(&tier) {
        return Err(invalid(
            "tier must be between 1 (told at once) and 9; the escalation ladder says when each tier is told",
        ));
    }
    let channel = Channel::parse(&req.channel).ok_or_else(|| {
        invalid(format!(
            "channel {:?} must be webhook, email, ntfy, line or push",
            req.channel
        ))
    })?;
    let kinds = req
        .kinds
        .iter()
        .flatten()
        .map(|k| {
            AlertKind::parse(k).ok_or_else(|| {
                let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(format!(
                    "kind {k:?} is not an alert kind ({})",
                    all.join(", ")
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let min_severity = match req.min_severity.as_deref() {
        None => Severity::Warning,
        Some(s) => Severity::parse(s).ok_or_else(|| {
            invalid(format!(
                "min_severity {s:?} must be warning, high or critical"
            ))
        })?,
    };
    if let Some(q) = req.quiet_hours.as_deref() {
        QuietHours::parse(q).ok_or_else(|| {
            invalid(format!(
                "quiet_hours {q:?} must be \"HH:MM-HH:MM\" with two different times"
            ))
        })?;
    }
    let language = match req.language.as_deref() {
        None => Language::Ja,
        Some(l) => {
            Language::parse(l).ok_or_else(|| invalid(format!("language {l:?} must be ja or en")))?
        }
    };
    if let Some(t) = req.daily_summary_at.as_deref() {
        parse_hhmm(t).ok_or_else(|| {
            invalid(format!(
                "daily_summary_at {t:?} must be \"HH:MM\" or \"HH:MM:SS\""
            ))
        })?;
        if relation != "family" {
            return Err(invalid("daily summaries are for family contacts"));
        }
    }
    Ok(NewContactRow {
        resident_id,
        name: name.to_string(),
        relation: relation.to_string(),
        tier,
        address: valid_address(channel, &req.address)?,
        secret: valid_secret(channel, req.secret.as_deref())?,
        channel,
        kinds,
        min_severity,
        quiet_hours: req.quiet_hours.clone(),
        language,
        daily_summary_at: req.daily_summary_at.clone(),
        created_at: now,
    })
}

/// A webhook or ntfy address must reach a host the policy allows (what can be known before
/// a delivery resolves the name; see `notify::hosts`).
fn check_host(st: &AppState, address: &str) -> ApiResult<()> {
    let url = reqwest::Url::parse(address)
        .map_err(|e| invalid(format!("address {address:?} is not a URL: {e}")))?;
    st.contact_hosts
        .check_url(&url)
        .map_err(|e| invalid(format!("address {address:?}: {e}")))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(resident_id): ApiPath<i64>,
    ApiJson(req): ApiJson<NewContact>,
) -> ApiResult<(StatusCode, Json<ContactCreated>)> {
    caller.require_staff()?;
    st.store
        .resident(resident_id)
        .await
        .map_err(or_not_found(|| format!("no resident {resident_id}")))?;
    let row = validate(resident_id, &req, st.clock.now())?;
    match row.channel {
        Channel::Push => check_push_user(&st, &row).await?,
        Channel::Webhook | Channel::Ntfy => check_host(&st, &row.address)?,
        Channel::Email | Channel::Line => {}
    }
    // Shown once in clear; stored sealed when a key ring is configured.
    let secret = row.secret.clone();
    let row = NewContactRow {
        secret: row.secret.as_deref().map(|s| st.privacy.secrets.seal(s)),
        ..row
    };
    let contact = st.store.create_contact(&row).await?;
    st.bus.move_summaries();
    // The alert core chooses recipients from its own copy of the contacts.
    st.pipeline.send(Command::Reload(resident_id)).await;
    audit(
        &st,
        &caller,
        "contact.create",
        format!("contact/{}", contact.id),
        serde_json::json!({"resident_id": resident_id, "relation": contact.relation, "channel": contact.channel}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ContactCreated { contact, secret }),
    ))
}

/// A push contact's user must exist and, if family, be one of the resident's family:
/// their notices would otherwise tell them of someone they may not see.
async fn check_push_user(st: &AppState, row: &NewContactRow) -> ApiResult<()> {
    let user = st
        .store
        .user_by_name(&row.address)
        .await?
        .ok_or_else(|| {
            invalid(format!(
                "no user {:?} to send push notifications to",
                row.address
            ))
        })?
        .user;
    if user.role == mimamori_protocol::api::Role::Family
        && !user.resident_ids.contains(&row.resident_id)
    {
        return Err(invalid(format!(
            "family user {:?} may not see resident {}",
            row.address, row.resident_id
        )));
    }
    Ok(())
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(resident_id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Contact>>> {
    caller.check_resident(resident_id)?;
    st.store
        .resident(resident_id)
        .await
        .map_err(or_not_found(|| format!("no resident {resident_id}")))?;
    let mut contacts = st.store.list_contacts(resident_id).await?;
    if caller.scope().is_some() {
        // Families may see who else is told, but not staff's or neighbours' addresses.
        for c in contacts.iter_mut().filter(|c| c.relation != "family") {
            c.address = HIDDEN_ADDRESS.to_string();
        }
    }
    Ok(Json(contacts))
}

/// What a family user sees instead of the address of a contact outside the family.
const HIDDEN_ADDRESS: &str = "(hidden)";

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    let contact = st
        .store
        .contact(id)
        .await
        .map_err(or_not_found(|| format!("no contact {id}")))?;
    st.store.delete_contact(id).await?;
    st.bus.move_summaries();
    st.pipeline.send(Command::Reload(contact.resident_id)).await;
    audit(
        &st,
        &caller,
        "contact.delete",
        format!("contact/{id}"),
        serde_json::json!({"resident_id": contact.resident_id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NewContact {
        NewContact {
            name: "Sato Yuki".into(),
            relation: "family".into(),
            channel: "email".into(),
            address: "yuki@example.org".into(),
            ..NewContact::default()
        }
    }

    fn refusal(req: NewContact) -> String {
        match validate(1, &req, chrono::DateTime::UNIX_EPOCH) {
            Err(ApiError::Invalid(m)) => m,
            other => format!("not refused: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_generated_webhook_secret() -> Result<(), ApiError> {
        let row = validate(1, &base(), chrono::DateTime::UNIX_EPOCH)?;
        assert_eq!(
            (row.tier, row.language, row.min_severity),
            (1, Language::Ja, Severity::Warning)
        );
        assert_eq!(row.secret, None);
        let hook = NewContact {
            channel: "webhook".into(),
            address: "http://127.0.0.1:9/hook".into(),
            relation: "supervisor".into(),
            ..base()
        };
        let row = validate(1, &hook, chrono::DateTime::UNIX_EPOCH)?;
        assert_eq!(row.tier, 2);
        assert_eq!(row.secret.map(|s| s.len()), Some(64));
        for id in [
            "U4af4980629a1b2c3d4e5f60718293a4b",
            "C4af4980629a1b2c3d4e5f60718293a4b",
        ] {
            let line = NewContact {
                channel: "line".into(),
                address: format!(" {id} "),
                ..base()
            };
            let row = validate(1, &line, chrono::DateTime::UNIX_EPOCH)?;
            assert_eq!((row.channel, row.address.as_str()), (Channel::Line, id));
        }
        Ok(())
    }

    #[test]
    fn each_bad_field_gets_its_own_reason() {
        assert!(refusal(NewContact {
            channel: "sms".into(),
            ..base()
        })
        .contains("webhook, email, ntfy, line or push"));
        assert!(refusal(NewContact {
            address: "not-an-address".into(),
            ..base()
        })
        .contains("not an e-mail address"));
        assert!(refusal(NewContact {
            channel: "ntfy".into(),
            address: "ftp://x/y".into(),
            ..base()
        })
        .contains("http://"));
        for bad in [
            "U4af4980629",
            "u4af4980629a1b2c3d4e5f60718293a4b",
            "Ua4af4980629a1b2c3d4e5f60718293a4bz",
            "R4af4980629a1b2c3d4e5f60718293a4b",
            "https://line.me/",
        ] {
            assert!(
                refusal(NewContact {
                    channel: "line".into(),
                    address: bad.into(),
                    ..base()
                })
                .contains("LINE user id"),
                "{bad}"
            );
        }
        assert!(refusal(NewContact {
            kinds: Some(vec!["fire".into()]),
            ..base()
        })
        .contains("not an alert kind"));
        assert!(refusal(NewContact {
            min_severity: Some("urgent".into()),
            ..base()
        })
        .contains("min_severity"));
        assert!(refusal(NewContact {
            quiet_hours: Some("22-7".into()),
            ..base()
        })
        .contains("HH:MM-HH:MM"));
        assert!(refusal(NewContact {
            language: Some("fr".into()),
            ..base()
        })
        .contains("ja or en"));
        assert!(refusal(NewContact {
            relation: "friend".into(),
            ..base()
        })
        .contains("relation"));
        assert!(refusal(NewContact {
            tier: Some(10),
            ..base()
        })
        .contains("tier"));
        assert!(refusal(NewContact {
            secret: Some("x".repeat(20)),
            ..base()
        })
        .contains("only webhook"));
        assert!(refusal(NewContact {
            daily_summary_at: Some("8:00".into()),
            ..base()
        })
        .contains("HH:MM"));
        assert!(refusal(NewContact {
            daily_summary_at: Some("20:00".into()),
            relation: "neighbour".into(),
            ..base()
        })
        .contains("family"));
    }
}
