//! Alerts: listing, one alert with its history, and the staff actions on it.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use mimamori_protocol::alert::AlertEvent;
use mimamori_protocol::api::AlertAction;
use mimamori_protocol::contact::Delivery;
use mimamori_protocol::topic::alerts_topic;
use mimamori_protocol::{Alert, AlertKind, AlertState};
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use super::AppState;
use crate::events::HubEvent;
use crate::store::{AlertFilter, StaffAction};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(one))
        .route("/alerts/{id}/ack", post(ack))
        .route("/alerts/{id}/resolve", post(resolve))
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
                ApiError::BadRequest(format!("state {s:?} is not open, acknowledged or resolved"))
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
        .map_err(|_| ApiError::NotFound(format!("no alert {id}")))?;
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
    let deliveries = st.store.alert_deliveries(id).await?;
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
    act(st, caller, id, body, StaffAction::Acknowledge).await
}

async fn resolve(
    st: State<AppState>,
    caller: AuthUser,
    id: ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Alert>> {
    act(st, caller, id, body, StaffAction::Resolve).await
}

/// The optional `{"note": …}` body; an empty body is no note.
fn note_of(body: &[u8]) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let action: AlertAction = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be {{\"note\": \"…\"}}: {e}")))?;
    let note = action
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

async fn act(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
    action: StaffAction,
) -> ApiResult<Json<Alert>> {
    caller.require_staff()?;
    let note = note_of(&body)?;
    visible_alert(&st, &caller, id).await?;
    let alert = st
        .store
        .staff_action(id, action, caller.name(), note.as_deref(), st.clock.now())
        .await?;
    if let Ok(json) = serde_json::to_vec(&alert) {
        st.publisher.publish(alerts_topic(alert.resident_id), json);
    }
    st.bus.publish(HubEvent::Alert {
        alert: alert.clone(),
    });
    Ok(Json(alert))
}
