//! Web Push subscriptions: every signed-in user (staff, admin or family) may subscribe
//! their own browsers, list them and remove them; nobody sees or removes another's.
//!
//! A subscription only says where a user's notices go; which notices a user gets is
//! decided by the contacts of channel `push` that name them (see [`crate::notify::push`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use mimamori_protocol::contact::{NewPushSubscription, PushKey, PushSubscription};

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::{audit, AppState};
use crate::notify::push::{browser_keys, valid_endpoint, PushConfig};
use crate::store::StoreError;

/// What the API needs of the Web Push channel.
#[derive(Debug, Clone)]
pub struct PushState {
    /// The VAPID public key (base64url).
    pub public_key: String,
    pub cfg: PushConfig,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/push/key", get(key))
        .route("/push/subscriptions", get(list).post(subscribe))
        .route("/push/subscriptions/{id}", delete(unsubscribe))
}

async fn key(State(st): State<AppState>, _caller: AuthUser) -> Json<PushKey> {
    Json(PushKey {
        public_key: st.push.public_key.clone(),
    })
}

async fn subscribe(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiJson(req): ApiJson<NewPushSubscription>,
) -> ApiResult<(StatusCode, Json<PushSubscription>)> {
    let endpoint = valid_endpoint(req.endpoint.trim(), &st.push.cfg).map_err(ApiError::Invalid)?;
    browser_keys(&req.keys.p256dh, &req.keys.auth).map_err(ApiError::Invalid)?;
    let row = st
        .store
        .add_push_subscription(
            caller.user.id,
            endpoint.as_str(),
            req.keys.p256dh.trim(),
            req.keys.auth.trim(),
            st.push.cfg.max_per_user,
            st.clock.now(),
        )
        .await?;
    // The endpoint is a capability URL of the user's browser: only its origin is audited.
    audit(
        &st,
        &caller,
        "push.subscribe",
        format!("push_subscription/{}", row.id),
        serde_json::json!({"push_service": endpoint.origin().ascii_serialization()}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.public())))
}

async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
) -> ApiResult<Json<Vec<PushSubscription>>> {
    let rows = st.store.push_subscriptions(caller.user.id).await?;
    Ok(Json(rows.iter().map(|r| r.public()).collect()))
}

async fn unsubscribe(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    st.store
        .delete_push_subscription(id, caller.user.id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::NotFound(format!("you have no push subscription {id}"))
            }
            other => other.into(),
        })?;
    audit(
        &st,
        &caller,
        "push.unsubscribe",
        format!("push_subscription/{id}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
