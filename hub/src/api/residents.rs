//! Residents, their rule settings and their safe zones.

use std::str::FromStr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use mimamori_protocol::api::{LatLon, NewResident, Resident, Role};
use mimamori_protocol::card::ResidentCard;
use mimamori_protocol::zone::{NewZone, Zone};
use mimamori_protocol::{DeviceKind, RuleSettings};
use mimamori_rules::SafeZone;
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::card;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{audit, AppState};
use crate::pipeline::Command;
use crate::privacy::access::Read;
use crate::store::{NewResidentRow, StoreError, StoredReading};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/residents", post(create).get(list))
        .route("/residents/{id}", get(one).patch(patch).delete(remove))
        .route(
            "/residents/{id}/geofences",
            post(create_zone).get(list_zones),
        )
        .route("/residents/{id}/readings", get(readings))
        .route("/geofences/{id}", delete(remove_zone))
}

pub const DEFAULT_TIMEZONE: &str = "Asia/Tokyo";

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<NewResident>,
) -> ApiResult<(StatusCode, Json<Resident>)> {
    caller.require_staff()?;
    let row = NewResidentRow {
        name: valid_name(&req.name)?,
        timezone: valid_timezone(req.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE))?,
        home: req.home.map(valid_point).transpose()?,
        rules: merge_rules(&RuleSettings::default(), req.rules.as_ref())?,
        created_at: st.clock.now(),
    };
    let resident = st.store.create_resident(&row).await?;
    st.pipeline.send(Command::Reload(resident.id)).await;
    audit(
        &st,
        &caller,
        "resident.create",
        format!("resident/{}", resident.id),
        serde_json::json!({"name": resident.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(resident)))
}

async fn list(State(st): State<AppState>, caller: AuthUser) -> ApiResult<Json<Vec<Resident>>> {
    Ok(Json(
        st.store.list_residents(caller.scope().as_deref()).await?,
    ))
}

/// One resident with their card (as much of it as the caller may see).
#[derive(Debug, Serialize)]
struct ResidentWithCard {
    #[serde(flatten)]
    resident: Resident,
    card: ResidentCard,
}

async fn one(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ResidentWithCard>> {
    caller.check_resident(id)?;
    let resident = found(&st, id).await?;
    let card = card::shown_to(&caller, st.store.resident_card(id).await?);
    Ok(Json(ResidentWithCard { resident, card }))
}

/// The resident, or 404; a failing database stays a 500.
async fn found(st: &AppState, id: i64) -> ApiResult<Resident> {
    st.store.resident(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("no resident {id}")),
        other => other.into(),
    })
}

/// A partial update: fields left out stay; `rules` is merged into the current settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResidentPatch {
    name: Option<String>,
    timezone: Option<String>,
    #[serde(default, deserialize_with = "some_or_null")]
    home: Option<Option<LatLon>>,
    rules: Option<serde_json::Value>,
    /// Merged into the current card; see [`card::patched`].
    card: Option<serde_json::Value>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<LatLon>>, D::Error> {
    Option::<LatLon>::deserialize(d).map(Some)
}

async fn patch(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<ResidentPatch>,
) -> ApiResult<Json<ResidentWithCard>> {
    caller.require_staff()?;
    let mut r = found(&st, id).await?;
    let mut resident_card = st.store.resident_card(id).await?;
    if let Some(patch) = &p.card {
        resident_card = card::patched(&resident_card, patch)?;
    }
    if let Some(name) = &p.name {
        r.name = valid_name(name)?;
    }
    if let Some(tz) = &p.timezone {
        r.timezone = valid_timezone(tz)?;
    }
    if let Some(home) = p.home {
        r.home = home.map(valid_point).transpose()?;
    }
    if let Some(rules) = &p.rules {
        r.rules = merge_rules(&r.rules, Some(rules))?;
        home_receivers_are_the_residents(&st, id, &r.rules).await?;
    }
    st.store.update_resident(&r).await?;
    if p.card.is_some() {
        st.store
            .put_resident_card(id, &resident_card, st.clock.now())
            .await?;
    }
    st.pipeline.send(Command::Reload(id)).await;
    if p.timezone.is_some() {
        st.bus.move_summaries();
    }
    let card_fields = p.card.as_ref().map(card::fields_of);
    let changed = serde_json::json!({"name": p.name, "timezone": p.timezone, "home": p.home, "rules": p.rules, "card": card_fields});
    audit(
        &st,
        &caller,
        "resident.update",
        format!("resident/{id}"),
        changed,
    )
    .await?;
    Ok(Json(ResidentWithCard {
        resident: r,
        card: resident_card,
    }))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let devices = st.store.list_devices(Some(&[id])).await?;
    let provisions = provision_records(&st, id).await?;
    let family: Vec<_> = st
        .store
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.role == Role::Family && u.resident_ids.contains(&id))
        .collect();
    st.store
        .delete_resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    for d in devices {
        st.edge.kick(&d.id);
    }
    // Their open connections carry the old list of residents: they reconnect with the new one.
    for u in family {
        st.revocations.user(u.id, &u.username);
    }
    st.pipeline.send(Command::Remove(id)).await;
    audit(
        &st,
        &caller,
        "resident.delete",
        format!("resident/{id}"),
        serde_json::json!({"provisions": provisions}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What was sent about a resident to whom, by which channel and when: the records of
/// provision to third parties the law keeps after the resident's data is erased.
async fn provision_records(st: &AppState, id: i64) -> ApiResult<Vec<serde_json::Value>> {
    Ok(st
        .store
        .deliveries_of(id)
        .await?
        .into_iter()
        .filter_map(|(_, d)| {
            let at = d.delivered_at?;
            Some(serde_json::json!({"at": at, "to": d.contact_name, "channel": d.channel, "event": d.event}))
        })
        .collect())
}

async fn create_zone(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(z): ApiJson<NewZone>,
) -> ApiResult<(StatusCode, Json<Zone>)> {
    caller.require_staff()?;
    st.store
        .resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    let name = valid_name(&z.name)?;
    let shape = z.shape().map_err(ApiError::Invalid)?;
    SafeZone::new(0, name.clone(), &shape).map_err(ApiError::Invalid)?;
    let zone = st
        .store
        .create_zone(id, &name, &shape, st.clock.now())
        .await?;
    st.pipeline.send(Command::Reload(id)).await;
    st.edge.waypoints.zones_changed(id).await;
    audit(
        &st,
        &caller,
        "geofence.create",
        format!("geofence/{}", zone.id),
        serde_json::json!({"resident_id": id, "name": name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(zone)))
}

async fn list_zones(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Zone>>> {
    caller.check_resident(id)?;
    Ok(Json(st.store.list_zones(id).await?))
}

async fn remove_zone(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    let zone = st
        .store
        .zone(id)
        .await
        .map_err(or_not_found(|| format!("no geofence {id}")))?;
    st.store.delete_zone(id).await?;
    st.pipeline.send(Command::Reload(zone.resident_id)).await;
    st.edge.waypoints.zones_changed(zone.resident_id).await;
    audit(
        &st,
        &caller,
        "geofence.delete",
        format!("geofence/{id}"),
        serde_json::json!({"resident_id": zone.resident_id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn readings(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<Json<Vec<StoredReading>>> {
    caller.check_resident(id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let readings = st.store.recent_readings(id, limit).await?;
    st.privacy
        .access
        .record(&caller.user, id, Read::Readings, readings.len());
    Ok(Json(readings))
}

fn valid_name(name: &str) -> ApiResult<String> {
    super::text::display_name("name", name, 200)
}

fn valid_timezone(tz: &str) -> ApiResult<String> {
    chrono_tz::Tz::from_str(tz)
        .map(|t| t.name().to_string())
        .map_err(|_| {
            ApiError::Invalid(format!(
                "timezone {tz:?} is not an IANA time zone such as \"Asia/Tokyo\""
            ))
        })
}

fn valid_point(p: LatLon) -> ApiResult<LatLon> {
    if p.lat.is_finite()
        && p.lon.is_finite()
        && (-90.0..=90.0).contains(&p.lat)
        && (-180.0..=180.0).contains(&p.lon)
    {
        Ok(p)
    } else {
        Err(ApiError::Invalid(format!(
            "home {{lat: {}, lon: {}}} is not a place on Earth",
            p.lat, p.lon
        )))
    }
}

/// The `tag_away` rule's home receivers must be receiver devices of this resident: a
/// station of the town's network is no home.
async fn home_receivers_are_the_residents(
    st: &AppState,
    resident_id: i64,
    rules: &RuleSettings,
) -> ApiResult<()> {
    for id in &rules.tag_away.receivers {
        let device = st.store.device(id).await.map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::Invalid(format!("tag_away.receivers: device {id} does not exist"))
            }
            other => other.into(),
        })?;
        if device.kind != DeviceKind::Receiver || device.resident_id != resident_id {
            return Err(ApiError::Invalid(format!(
                "tag_away.receivers: device {id} is not a receiver of resident {resident_id}"
            )));
        }
    }
    Ok(())
}

/// Applies a partial `rules` object to `base` (a JSON merge patch), then validates.
pub fn merge_rules(
    base: &RuleSettings,
    patch: Option<&serde_json::Value>,
) -> ApiResult<RuleSettings> {
    let mut value = serde_json::to_value(base).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(p) = patch {
        if !p.is_object() {
            return Err(ApiError::Invalid("rules must be an object".into()));
        }
        merge(&mut value, p);
    }
    let rules: RuleSettings =
        serde_json::from_value(value).map_err(|e| ApiError::Invalid(format!("rules: {e}")))?;
    rules.validate().map_err(ApiError::Invalid)?;
    Ok(rules)
}

/// A JSON merge patch: objects merge key by key, anything else replaces.
pub(super) fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_patches_merge_into_the_current_settings() -> Result<(), ApiError> {
        let base = RuleSettings::default();
        let patched = merge_rules(
            &base,
            Some(&serde_json::json!({"inactivity": {"day_threshold_s": 5}})),
        )?;
        assert_eq!(patched.inactivity.day_threshold_s, 5);
        assert_eq!(
            patched.inactivity.night_threshold_s,
            base.inactivity.night_threshold_s
        );
        let cleared = merge_rules(
            &base,
            Some(&serde_json::json!({"inactivity": {"morning_deadline": null}})),
        )?;
        assert_eq!(cleared.inactivity.morning_deadline, None);
        assert!(matches!(
            merge_rules(&base, Some(&serde_json::json!({"nope": 1}))),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            merge_rules(&base, Some(&serde_json::json!({"low_battery_pct": 99}))),
            Err(ApiError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn timezones_are_iana_names() {
        assert!(valid_timezone("Asia/Tokyo").is_ok());
        assert!(valid_timezone("Mars/Olympus").is_err());
    }
}
