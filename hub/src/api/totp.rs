//! A person's second factor: setting up and removing their one-time codes (TOTP), and an
//! admin's reset for a lost phone. Logins check the code in [`super::auth`].
//!
//! Setting up takes two calls, so that nobody is locked out by a secret their app never
//! took: `POST /auth/totp` makes a secret and shows it once (with the `otpauth://` address
//! an app scans); `POST /auth/totp/confirm` with a code from the app puts it in force.
//! Staff and admins may have one; family users log in with their password alone.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mimamori_protocol::api::Role;
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::totp;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/totp", post(begin).delete(remove))
        .route("/auth/totp/confirm", post(confirm))
        .route("/users/{id}/totp/reset", post(reset))
}

#[derive(Debug, Serialize)]
struct Setup {
    /// Base32, for typing into an app by hand.
    secret: String,
    /// For a QR code or a link an app opens.
    otpauth_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

/// Makes a new secret waiting for its first code; an account that has one keeps it
/// until the new one is confirmed.
async fn begin(State(st): State<AppState>, caller: AuthUser) -> ApiResult<Json<Setup>> {
    caller.require_staff()?;
    let secret = totp::new_secret();
    st.store.set_totp_pending(caller.user.id, &secret).await?;
    Ok(Json(Setup {
        otpauth_url: totp::otpauth_url(&secret, caller.name()),
        secret,
    }))
}

/// Puts the waiting secret in force once a code of it is right.
async fn confirm(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<Code>,
) -> ApiResult<StatusCode> {
    caller.require_staff()?;
    let pending = st
        .store
        .totp(caller.user.id)
        .await?
        .pending
        .ok_or_else(|| {
            ApiError::Conflict("no setup is waiting: POST /api/v1/auth/totp first".into())
        })?;
    let step = totp::check(&pending, &req.code, st.clock.now())
        .ok_or_else(|| ApiError::Invalid("the code is not right for the new secret".into()))?;
    if !st.store.enable_totp(caller.user.id, step).await? {
        return Err(ApiError::Conflict(
            "the setup was replaced meanwhile".into(),
        ));
    }
    audit(
        &st,
        &caller,
        "user.totp_enable",
        format!("user/{}", caller.user.id),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A person removes their own second factor, proving it with a current code; every
/// session of theirs ends.
async fn remove(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<Code>,
) -> ApiResult<StatusCode> {
    let secret = st
        .store
        .totp(caller.user.id)
        .await?
        .secret
        .ok_or_else(|| ApiError::Conflict("this account has no one-time codes".into()))?;
    let step = totp::check(&secret, &req.code, st.clock.now())
        .ok_or_else(|| ApiError::Forbidden("the code is not right".into()))?;
    if !st.store.use_totp_step(caller.user.id, step).await? {
        return Err(ApiError::Forbidden("that code was used already".into()));
    }
    end_totp(
        &st,
        &caller,
        caller.user.id,
        &caller.user.username,
        "user.totp_disable",
    )
    .await
}

/// An admin removes a person's second factor (a lost phone); every session of theirs ends,
/// and they set it up again after logging in with their password.
async fn reset(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let user = super::users::user_by_id(&st, id).await?;
    end_totp(&st, &caller, id, &user.username, "user.totp_reset").await
}

async fn end_totp(
    st: &AppState,
    caller: &AuthUser,
    id: i64,
    username: &str,
    action: &str,
) -> ApiResult<StatusCode> {
    let ended = st.store.disable_totp(id).await?;
    st.revocations.user(id, username);
    audit(
        st,
        caller,
        action,
        format!("user/{id}"),
        serde_json::json!({ "sessions_ended": ended }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether this caller may only set up their second factor: an admin without one, when
/// the hub requires it of admins.
pub fn must_enrol(st: &AppState, caller: &mimamori_protocol::api::User) -> bool {
    st.require_admin_totp && caller.role == Role::Admin && !caller.totp
}
