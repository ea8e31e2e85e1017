//! Alerts: listing, one alert with its history, the staff actions on it, and the
//! service-level report. Staff actions are commands to the pipeline, the one owner of
//! alert state, answered once committed.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use mimamori_protocol::alert::AlertEvent;
use mimamori_protocol::api::{AlertAction, Role};
use mimamori_protocol::contact::Delivery;
use mimamori_protocol::{Alert, AlertKind, AlertState};
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiPath, ApiQuery, ApiResult};
use super::AppState;
use crate::alerts::report::{self, ResponseReport};
use crate::alerts::{Refusal, StaffAction, StaffCommand};
use crate::pipeline::StaffError;
use crate::store::AlertFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(one))
        .route("/alerts/{id}/ack", post(ack))
        .route("/alerts/{id}/resolve", post(resolve))
        .route("/alerts/{id}/note", post(note))
        .route("/alerts/{id}/assign", post(assign))
        .route("/alerts/{id}/snooze", post(snooze))
        .route("/reports/response", get(response_report))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    resident_id: Option<i64>,
    kind: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Alert>>> {
    let state = q
        .state
        .map(|s| {
            AlertState::parse(&s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "state {s:?} is not open, unanswered, acknowledged or resolved"
                ))
            })
        })
        .transpose()?;
    let kind = q
        .kind
        .map(|k| {
            AlertKind::parse(&k)
                .ok_or_else(|| ApiError::BadRequest(format!("kind {k:?} is not an alert kind")))
        })
        .transpose()?;
    let filter = AlertFilter {
        state,
        kind,
        resident_id: q.resident_id,
        within: caller.scope(),
        limit: q.limit.unwrap_or(200).clamp(1, 1000),
    };
    Ok(Json(st.store.list_alerts(&filter).await?))
}

/// One alert with every change of its life.
#[derive(Debug, Serialize, Deserialize)]
pub struct AlertWithHistory {
    #[serde(flatten)]
    pub alert: Alert,
    pub history: Vec<AlertEvent>,
    /// The notifications the alert called for, and how each went.
    pub deliveries: Vec<Delivery>,
}

async fn visible_alert(st: &AppState, caller: &AuthUser, id: i64) -> ApiResult<Alert> {
    let alert = st
        .store
        .alert(id)
        .await
        .map_err(or_not_found(|| format!("no alert {id}")))?;
    caller
        .check_resident(alert.resident_id)
        .map_err(|_| ApiError::NotFound(format!("no alert {id}")))?;
    Ok(alert)
}

async fn one(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<AlertWithHistory>> {
    let alert = visible_alert(&st, &caller, id).await?;
    let history = st.store.alert_history(id).await?;
    // Who else was told, where and how it failed is staff's business: a family user
    // might otherwise read another contact's address in an error.
    let deliveries = match caller.user.role {
        Role::Family => Vec::new(),
        Role::Admin | Role::Staff => st.store.alert_deliveries(id).await?,
    };
    st.privacy.access.record(
        &caller.user,
        alert.resident_id,
        crate::privacy::access::Read::Alert,
        1 + history.len() + deliveries.len(),
    );
    Ok(Json(AlertWithHistory {
        alert,
        history,
        deliveries,
    }))
}

async fn ack(
    st: State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    act(st, caller, id, body, |_| Ok(StaffAction::Acknowledge)).await
}

async fn resolve(
    st: State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    act(st, caller, id, body, |_| Ok(StaffAction::Resolve)).await
}

async fn note(
    st: State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    act(st, caller, id, body, |_| Ok(StaffAction::Note)).await
}

async fn assign(
    st: State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    act(st, caller, id, body, |a| {
        let to = a.to.as_deref().map(str::trim).filter(|t| !t.is_empty());
        if to.is_some_and(|t| t.chars().count() > 100) {
            return Err(ApiError::Invalid(
                "to must be at most 100 characters".into(),
            ));
        }
        Ok(StaffAction::Assign(to.map(str::to_owned)))
    })
    .await
}

async fn snooze(
    State(st): State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    let now = st.clock.now();
    act(State(st), caller, id, body, move |a| match a.minutes {
        Some(m @ 1..=1440) => Ok(StaffAction::Snooze(
            now + chrono::Duration::minutes(i64::from(m)),
        )),
        _ => Err(ApiError::Invalid(
            "minutes must be between 1 and 1440".into(),
        )),
    })
    .await
}

/// The `{"note": …, …}` body; an empty body is no note and nothing else.
fn action_of(body: &[u8]) -> ApiResult<(AlertAction, Option<String>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((AlertAction::default(), None));
    }
    let action: AlertAction = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"note\": \"…\"}} (with \"to\" for assign, \"minutes\" for snooze): {e}"
        ))
    })?;
    let note = action
        .note
        .as_ref()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "note must be at most 2000 characters".into(),
        ));
    }
    Ok((action, note))
}

async fn act(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
    action: impl FnOnce(&AlertAction) -> ApiResult<StaffAction>,
) -> ApiResult<Json<Alert>> {
    caller.require_staff()?;
    let (body, note) = action_of(&body)?;
    let action = action(&body)?;
    let current = visible_alert(&st, &caller, id).await?;
    let cmd = StaffCommand {
        alert_id: id,
        action,
        actor: caller.name().to_owned(),
        note,
    };
    match st.pipeline.staff(cmd).await {
        Ok(alert) => Ok(Json(alert)),
        Err(StaffError::Refused(Refusal::Forbidden(why))) => Err(ApiError::Conflict(why)),
        Err(StaffError::Refused(Refusal::NotLive)) => {
            // Re-read: it may have been resolved after the first read.
            let alert = st.store.alert(id).await.unwrap_or(current);
            Err(ApiError::Conflict(already_resolved(&alert)))
        }
        Err(StaffError::NotStored | StaffError::Stopped) => Err(ApiError::Unavailable(
            "the alert could not be stored; nothing changed, try again".into(),
        )),
    }
}

/// Why an action on a resolved alert was refused, for the person who tried it.
fn already_resolved(alert: &Alert) -> String {
    format!(
        "alert {} is already resolved{}; there is nothing left to do on it",
        alert.id,
        alert
            .resolved_by
            .as_deref()
            .map(|b| format!(" (by {b})"))
            .unwrap_or_default()
    )
}

#[derive(Debug, Deserialize)]
struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

fn instant(name: &str, value: Option<&str>) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "{name} must be an RFC 3339 time, such as 2026-12-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// `GET /reports/response?from=&to=`: time to acknowledge per severity, over alerts
/// opened in the period (default: the last 30 days).
async fn response_report(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> ApiResult<Json<ResponseReport>> {
    caller.require_staff()?;
    let now = st.clock.now();
    let to = instant("to", q.to.as_deref())?.unwrap_or(now);
    let from = instant("from", q.from.as_deref())?.unwrap_or(to - chrono::Duration::days(30));
    if from >= to || to - from > chrono::Duration::days(366) {
        return Err(ApiError::BadRequest(
            "from must be before to, and the period at most 366 days".into(),
        ));
    }
    let alerts = st.store.alerts_opened(from, to, None).await?;
    Ok(Json(report::response(&alerts, from, to)))
}
