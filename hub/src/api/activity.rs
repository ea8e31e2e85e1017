//! What the dashboard charts and maps about one resident: activity per hour (the
//! daily rhythm) and the recent track of position fixes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiPath, ApiQuery, ApiResult};
use super::AppState;
use crate::privacy::access::Read;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/residents/{id}/activity", get(activity))
        .route("/residents/{id}/track", get(track))
}

/// Longest activity window a caller may ask for.
const MAX_DAYS: i64 = 31;
/// Most fixes one track answer carries.
const MAX_FIXES: i64 = 5000;

#[derive(Debug, Deserialize)]
struct ActivityQuery {
    days: Option<i64>,
}

/// Activity readings per hour over whole hours ending with the current one.
#[derive(Debug, Serialize)]
struct Activity {
    resident_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// Hours with activity only, oldest first.
    hours: Vec<HourCount>,
}

#[derive(Debug, Serialize)]
struct HourCount {
    hour: DateTime<Utc>,
    count: i64,
}

async fn activity(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<Activity>> {
    caller.check_resident(id)?;
    let days = q.days.unwrap_or(7);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::Invalid(format!(
            "days must be 1 to {MAX_DAYS}, not {days}"
        )));
    }
    visible_resident(&st, id).await?;
    let (from, to) = window(st.clock.now(), days);
    let hours: Vec<HourCount> = st
        .store
        .activity_per_hour(id, from, to)
        .await?
        .into_iter()
        .map(|(hour, count)| HourCount { hour, count })
        .collect();
    st.privacy
        .access
        .record(&caller.user, id, Read::Activity, hours.len());
    Ok(Json(Activity {
        resident_id: id,
        from,
        to,
        hours,
    }))
}

/// `days` whole hours-aligned days ending at the end of the current hour.
fn window(now: DateTime<Utc>, days: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let hour = Duration::hours(1);
    let to = now.duration_trunc(hour).unwrap_or(now) + hour;
    (to - Duration::days(days), to)
}

#[derive(Debug, Deserialize)]
struct TrackQuery {
    since: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

/// One fix on a resident's track.
#[derive(Debug, Serialize)]
struct Fix {
    device_id: String,
    ts: DateTime<Utc>,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f64>,
}

/// Fixes since `since` (default: the last 24 hours), oldest first, BLE tag sightings
/// among them; the map draws the trail of a geofence alert from its `opened_at`.
async fn track(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<TrackQuery>,
) -> ApiResult<Json<Vec<Fix>>> {
    caller.check_resident(id)?;
    visible_resident(&st, id).await?;
    let since = q
        .since
        .unwrap_or_else(|| st.clock.now() - Duration::hours(24));
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_FIXES);
    let fixes: Vec<Fix> = st
        .store
        .positions_since(id, since, limit)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(Fix {
                lat: r.lat?,
                lon: r.lon?,
                device_id: r.device_id,
                ts: r.ts,
                accuracy_m: r.accuracy_m,
            })
        })
        .collect();
    st.privacy
        .access
        .record(&caller.user, id, Read::Track, fixes.len());
    Ok(Json(fixes))
}

pub(super) async fn visible_resident(st: &AppState, id: i64) -> ApiResult<()> {
    st.store
        .resident(id)
        .await
        .map(|_| ())
        .map_err(or_not_found(|| format!("no resident {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_with_the_current_hour() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T09:41:07Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let (from, to) = window(now, 7);
        assert_eq!(to.to_rfc3339(), "2026-01-10T10:00:00+00:00");
        assert_eq!(from.to_rfc3339(), "2026-01-03T10:00:00+00:00");
    }
}
