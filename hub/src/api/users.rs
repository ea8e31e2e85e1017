//! User accounts: admins create staff and family users; a family user is tied to
//! the residents they may see.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use mimamori_protocol::api::{NewUser, Role, User};

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", post(create).get(list))
        .route("/users/{id}", delete(remove))
        .route("/users/{id}/password", post(reset_password))
}

async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require(&[Role::Admin])?;
    validate_username(&req.username)?;
    crate::security::check_password_policy(&req.username, &req.password)
        .map_err(ApiError::Invalid)?;
    if req.role == Role::Family && req.resident_ids.is_empty() {
        return Err(ApiError::Invalid(
            "a family user needs the resident_ids they may see".into(),
        ));
    }
    let hash = st
        .edge
        .passwords
        .hash(req.password.clone())
        .await
        .map_err(|_| ApiError::Busy)??;
    let user = st
        .store
        .create_user(
            &req.username,
            &hash,
            req.role,
            &req.resident_ids,
            st.clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) if m.starts_with("resident") => {
                ApiError::Invalid(m)
            }
            other => other.into(),
        })?;
    audit(&st, &caller, "user.create", format!("user/{}", user.id), serde_json::json!({"username": user.username, "role": user.role, "resident_ids": user.resident_ids})).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn list(State(st): State<AppState>, caller: AuthUser) -> ApiResult<Json<Vec<User>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(st.store.list_users().await?))
}

async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    if id == caller.user.id {
        return Err(ApiError::Conflict(
            "you cannot delete your own account".into(),
        ));
    }
    let gone = st
        .store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.id == id);
    st.store.delete_user(id).await?;
    if let Some(u) = gone {
        st.revocations.user(u.id, &u.username);
    }
    audit(
        &st,
        &caller,
        "user.delete",
        format!("user/{id}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

/// An admin gives a user a new password; every session of that user ends.
async fn reset_password(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<NewPassword>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let user = user_by_id(&st, id).await?;
    let ended = super::auth::set_password(&st, &user, req.password).await?;
    audit(
        &st,
        &caller,
        "user.password_reset",
        format!("user/{id}"),
        serde_json::json!({ "sessions_ended": ended }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The user with this id, for an admin's action on them.
pub(super) async fn user_by_id(st: &AppState, id: i64) -> ApiResult<User> {
    st.store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))
}

fn validate_username(name: &str) -> ApiResult<()> {
    let ok = (3..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "username must be 3 to 64 characters: letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}
