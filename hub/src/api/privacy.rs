//! A resident's consent, who read their data, their export, and the retention job: the
//! API side of privacy law (docs/privacy.md).

use std::str::FromStr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use mimamori_protocol::api::Role;
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::text::display_name;
use super::{audit, AppState};
use crate::cluster::jobs;
use crate::pipeline::Command;
use crate::privacy::access::{summarise, Read};
use crate::privacy::retention::JobStatus;
use crate::store::privacy::{Access, Consent, DataClass, GivenBy, NewConsent};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/residents/{id}/consent", post(record).get(list))
        .route("/residents/{id}/consent/withdraw", post(withdraw))
        .route("/residents/{id}/access-log", get(access_log))
        .route("/residents/{id}/export", get(export))
        .route("/retention", get(retention_status))
        .route("/retention/run", post(retention_run))
}

/// Most purposes or recipients one consent names.
const MAX_ITEMS: usize = 20;

/// `POST /residents/{id}/consent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    given_on: NaiveDate,
    given_by: GivenBy,
    giver_name: String,
    purposes: Vec<String>,
    recipients: Vec<String>,
    document_ref: String,
}

fn items(field: &str, list: &[String]) -> ApiResult<Vec<String>> {
    if list.is_empty() || list.len() > MAX_ITEMS {
        return Err(ApiError::Invalid(format!(
            "{field} must list 1 to {MAX_ITEMS} entries"
        )));
    }
    list.iter().map(|s| display_name(field, s, 200)).collect()
}

async fn record(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ConsentRequest>,
) -> ApiResult<(StatusCode, Json<Consent>)> {
    caller.require_staff()?;
    let resident = st
        .store
        .resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    let now = st.clock.now();
    // The day on the form is the resident's local day.
    let tz = chrono_tz::Tz::from_str(&resident.timezone).unwrap_or(chrono_tz::Asia::Tokyo);
    if req.given_on > now.with_timezone(&tz).date_naive() {
        return Err(ApiError::Invalid(format!(
            "given_on {} is in the future",
            req.given_on
        )));
    }
    let consent = NewConsent {
        resident_id: id,
        given_on: req.given_on,
        given_by: req.given_by,
        giver_name: display_name("giver_name", &req.giver_name, 200)?,
        purposes: items("purposes", &req.purposes)?,
        recipients: items("recipients", &req.recipients)?,
        document_ref: display_name("document_ref", &req.document_ref, 200)?,
        recorded_by: caller.name().to_string(),
        recorded_at: now,
    };
    let stored = st.store.record_consent(&consent).await?;
    // The pipeline holds who has consent beside the residents it watches.
    st.pipeline.send(Command::Reload(id)).await;
    audit(
        &st,
        &caller,
        "consent.record",
        format!("resident/{id}"),
        serde_json::json!({"consent_id": stored.id, "given_by": consent.given_by, "document_ref": consent.document_ref}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    note: Option<String>,
}

/// The optional `{"note": …}` of a withdrawal; an empty body is no note.
fn withdrawal_note(body: &[u8]) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let w: Withdrawal = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be {{\"note\": \"…\"}}: {e}")))?;
    let note = w
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "note must be at most 2000 characters".into(),
        ));
    }
    Ok(note)
}

#[derive(Debug, Serialize)]
struct Withdrawn {
    resident_id: i64,
    withdrawn: u64,
}

async fn withdraw(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Withdrawn>> {
    caller.require_staff()?;
    super::activity::visible_resident(&st, id).await?;
    let note = withdrawal_note(&body)?;
    let withdrawn = st
        .store
        .withdraw_consent(id, caller.name(), note.as_deref(), st.clock.now())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ApiError::Conflict(format!("resident {id} has no current consent to withdraw"))
            }
            other => other.into(),
        })?;
    st.pipeline.send(Command::Reload(id)).await;
    audit(
        &st,
        &caller,
        "consent.withdraw",
        format!("resident/{id}"),
        serde_json::json!({"note": note}),
    )
    .await?;
    Ok(Json(Withdrawn {
        resident_id: id,
        withdrawn,
    }))
}

#[derive(Debug, Serialize)]
struct Consents {
    resident_id: i64,
    current: Option<Consent>,
    /// Every consent recorded, newest first, withdrawn ones included.
    history: Vec<Consent>,
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Consents>> {
    caller.check_resident(id)?;
    super::activity::visible_resident(&st, id).await?;
    let history = st.store.consents(id).await?;
    Ok(Json(Consents {
        resident_id: id,
        current: history.iter().find(|c| c.withdrawn_at.is_none()).cloned(),
        history,
    }))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    limit: Option<i64>,
}

/// What an admin sees: every read; what the family sees: a plain summary.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum AccessAnswer {
    Entries {
        resident_id: i64,
        entries: Vec<Access>,
    },
    Summary {
        resident_id: i64,
        summary: Vec<String>,
    },
}

async fn access_log(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<AccessAnswer>> {
    caller.require(&[Role::Admin, Role::Family])?;
    caller.check_resident(id)?;
    let resident = st
        .store
        .resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = st.store.access_log(id, limit).await?;
    Ok(Json(match caller.user.role {
        Role::Family => {
            let tz = chrono_tz::Tz::from_str(&resident.timezone).unwrap_or(chrono_tz::Asia::Tokyo);
            AccessAnswer::Summary {
                resident_id: id,
                summary: summarise(&entries, tz),
            }
        }
        _ => AccessAnswer::Entries {
            resident_id: id,
            entries,
        },
    }))
}

async fn export(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin])?;
    let resident = st
        .store
        .resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    let now = st.clock.now();
    audit(
        &st,
        &caller,
        "resident.export",
        format!("resident/{id}"),
        serde_json::Value::Null,
    )
    .await?;
    let (body, rows) =
        crate::privacy::export::stream(st.store.clone(), resident, caller.name().to_string(), now);
    let (access, user) = (st.privacy.access.clone(), caller.user.clone());
    tokio::spawn(async move {
        if let Ok(n) = rows.await {
            access.record(&user, id, Read::Export, n);
        }
    });
    let name = format!("resident-{id}-{}.zip", now.format("%Y%m%dT%H%M%SZ"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /retention`: the periods in force, how often the job runs, and its last pass.
#[derive(Debug, Serialize)]
struct RetentionAnswer {
    /// Days each class is kept; 0 keeps it for ever.
    periods_days: std::collections::BTreeMap<&'static str, u32>,
    /// Seconds between passes; 0: only when asked for.
    interval_s: u64,
    /// Cluster mode: the hub that runs the job (holds its lease) and answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(flatten)]
    status: JobStatus,
}

async fn retention_status(
    State(st): State<AppState>,
    caller: AuthUser,
) -> ApiResult<Json<RetentionAnswer>> {
    caller.require(&[Role::Admin])?;
    let job = &st.privacy.retention;
    let (node, status) = match &st.cluster {
        None => (None, job.status()),
        Some(cluster) => {
            let answer = ask_retention_holder(cluster, jobs::Ask::Status).await?;
            (Some(answer.node), answer.status)
        }
    };
    Ok(Json(RetentionAnswer {
        periods_days: DataClass::ALL
            .into_iter()
            .map(|c| (c.as_str(), job.retention.days(c)))
            .collect(),
        interval_s: job.every.map_or(0, |d| d.as_secs()),
        node,
        status,
    }))
}

/// Cluster mode: the retention job runs on one hub, which answers for it.
async fn ask_retention_holder(
    cluster: &crate::cluster::Cluster,
    ask: jobs::Ask,
) -> ApiResult<jobs::Answer> {
    jobs::ask(cluster, ask).await.ok_or_else(|| {
        ApiError::Unavailable(
            "no hub runs the retention job just now (it moves to another hub within seconds \
             after its hub stops); try again"
                .into(),
        )
    })
}

#[derive(Debug, Serialize)]
struct PassRequested {
    /// The pass that will serve the request: done once `GET /retention` shows it as `last.pass`.
    pass: u64,
    /// Cluster mode: the hub that runs the pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// `POST /retention/run`: a pass now rather than at the next interval, for instance
/// after a period was shortened. Answered at once; the pass runs in the background.
async fn retention_run(
    State(st): State<AppState>,
    caller: AuthUser,
) -> ApiResult<(StatusCode, Json<PassRequested>)> {
    caller.require(&[Role::Admin])?;
    let (pass, node) = match &st.cluster {
        None => (st.privacy.retention.request(), None),
        Some(cluster) => {
            let answer = ask_retention_holder(cluster, jobs::Ask::Run).await?;
            let pass = answer.pass.ok_or_else(|| {
                ApiError::Unavailable("the retention job's hub did not take the request".into())
            })?;
            (pass, Some(answer.node))
        }
    };
    audit(
        &st,
        &caller,
        "retention.run",
        "retention".into(),
        serde_json::json!({"pass": pass, "node": node}),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(PassRequested { pass, node })))
}
