//! Dated pauses of a resident's watch rules: `POST`/`GET /residents/{id}/pauses` and
//! `DELETE /residents/{id}/pauses/{pid}`. Reading goes to the store; every change is a
//! command to the pipeline, which owns the rules state and writes the pause with it.
//!
//! Staff may set any pause. A family member may, like the family controls of the
//! commercial services, pause their own relative's rules for a visit or another
//! absence they arrange (`visit`, `other`) and remove the pauses they set; hospital and
//! short stays are care decisions and stay with staff. Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::api::Role;
use mimamori_protocol::pause::{NewPause, Pause, PauseReason};

use super::auth::AuthUser;
use super::error::{or_not_found, ApiError, ApiJson, ApiPath, ApiResult};
use super::AppState;
use crate::alerts::{PauseCommand, PauseError};
use crate::security;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/residents/{id}/pauses", post(create).get(list))
        .route("/residents/{id}/pauses/{pid}", delete(remove))
}

fn is_family(caller: &AuthUser) -> bool {
    caller.user.role == Role::Family
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<NewPause>,
) -> ApiResult<(StatusCode, Json<Pause>)> {
    caller.check_resident(id)?;
    if is_family(&caller) && !matches!(req.reason, PauseReason::Visit | PauseReason::Other) {
        return Err(ApiError::Forbidden(
            "a family user may set pauses for a visit or another absence; hospital and short stays are set by staff".into(),
        ));
    }
    req.validate().map_err(ApiError::Invalid)?;
    let note = req
        .note
        .as_deref()
        .map(|n| super::text::display_name("note", n, mimamori_protocol::pause::MAX_NOTE))
        .transpose()?;
    let pause = Pause {
        id: security::random_id("pause-", 12),
        resident_id: id,
        from: req.from,
        until: req.until,
        reason: req.reason,
        note,
        created_by: caller.name().to_owned(),
        created_at: st.clock.now(),
    };
    let pause = answer(st.pipeline.pause(PauseCommand::Add(pause)).await)?;
    Ok((StatusCode::CREATED, Json(pause)))
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Pause>>> {
    caller.check_resident(id)?;
    st.store
        .resident(id)
        .await
        .map_err(or_not_found(|| format!("no resident {id}")))?;
    Ok(Json(st.store.pauses(id).await?))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath((id, pid)): ApiPath<(i64, String)>,
) -> ApiResult<StatusCode> {
    caller.check_resident(id)?;
    let cmd = PauseCommand::Remove {
        resident_id: id,
        id: pid,
        actor: caller.name().to_owned(),
        only_by: is_family(&caller).then(|| caller.name().to_owned()),
    };
    answer(st.pipeline.pause(cmd).await)?;
    Ok(StatusCode::NO_CONTENT)
}

fn answer(result: Result<Pause, PauseError>) -> ApiResult<Pause> {
    result.map_err(|e| match e {
        PauseError::NotFound(what) => ApiError::NotFound(what),
        PauseError::Refused(why) => ApiError::Invalid(why),
        PauseError::NotStored | PauseError::Stopped => ApiError::Unavailable(
            "the pause could not be stored; nothing changed, try again".into(),
        ),
    })
}
