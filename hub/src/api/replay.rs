//! `POST /residents/{id}/replay`: the resident's stored history replayed with other rule
//! settings, to see what they would have raised before making them live.
//!
//! For staff and admins: it reads weeks of a resident's readings, so it is logged in the
//! access log and audited like an export. Bounded: at most [`MAX_DAYS`] days,
//! [`MAX_READINGS`] readings and [`MAX_CHANGES`] change lines a replay, [`AT_ONCE`]
//! replays at a time; the replay itself runs on a blocking thread, so the hub's async
//! workers never wait for it.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::privacy::access::Read;
use crate::replay::stored::{replay_stored, ReplayError, StoredReplay};
use crate::replay::{Change, Summary};

/// The longest range one replay covers.
pub const MAX_DAYS: i64 = 92;
/// The most readings one replay reads: a quarter of a home's life with a tracker that
/// reports every ten seconds, far past a home's sensors.
pub const MAX_READINGS: usize = 1_000_000;
/// The most change lines one answer lists (a few megabytes); the summary counts them all.
pub const MAX_CHANGES: usize = 20_000;
/// Replays that run at once, each on a blocking thread of its own.
const AT_ONCE: usize = 2;

static RUNNING: Semaphore = Semaphore::const_new(AT_ONCE);

pub fn router() -> Router<AppState> {
    Router::new().route("/residents/{id}/replay", post(replay))
}

/// What to replay; every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// A date (`YYYY-MM-DD`, local midnight) or an RFC 3339 time; default 30 days before `until`.
    from: Option<String>,
    /// A date (through that local day) or an RFC 3339 time; default now.
    until: Option<String>,
    /// Rule settings merged over the resident's current ones.
    rules: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct ReplayAnswer {
    changes: Vec<Change>,
    summary: Summary,
}

async fn replay(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayAnswer>> {
    caller.require_staff()?;
    caller.check_resident(id)?;
    let _turn = RUNNING.try_acquire().map_err(|_| {
        ApiError::Unavailable(format!(
            "{AT_ONCE} replays are running already; try again in a moment"
        ))
    })?;
    let ask = StoredReplay {
        resident_id: id,
        from: req.from.clone(),
        until: req.until.clone(),
        rules: req.rules.clone(),
        now: st.clock.now(),
        max_days: Some(MAX_DAYS),
        max_readings: Some(MAX_READINGS),
        max_changes: Some(MAX_CHANGES),
        retention: Some(st.privacy.retention.retention.clone()),
    };
    let outcome = replay_stored(st.store.as_ref(), &ask)
        .await
        .map_err(|e| match e {
            ReplayError::UnknownResident(_) => ApiError::NotFound(e.to_string()),
            ReplayError::Invalid(m) => ApiError::Invalid(m),
            ReplayError::TooLarge(m) => ApiError::BadRequest(m),
            ReplayError::Store(s) => s.into(),
            ReplayError::Stopped(m) => ApiError::Internal(anyhow::anyhow!(m)),
        })?;
    let history = outcome.summary.history.as_ref();
    let read = history.map_or(0, |h| h.readings);
    st.privacy
        .access
        .record(&caller.user, id, Read::Replay, read);
    let range = history.map(|h| (h.from, h.until));
    audit(
        &st,
        &caller,
        "resident.replay",
        format!("resident/{id}"),
        serde_json::json!({"from": range.map(|r| r.0), "until": range.map(|r| r.1), "rules": req.rules, "readings": read}),
    )
    .await?;
    Ok(Json(ReplayAnswer {
        changes: outcome.changes,
        summary: outcome.summary,
    }))
}
