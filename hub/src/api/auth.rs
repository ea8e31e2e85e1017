//! Logins, bearer tokens and roles: who is calling, and what they may see.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Duration;
use mimamori_protocol::api::{LoginRequest, LoginResponse, Role, User};

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::security;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
}

/// The authenticated caller of a request, and the token they used.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    token_hash: String,
}

impl AuthUser {
    /// Refuses the call unless the caller has one of these roles.
    pub fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} user may not do this",
                self.user.role.as_str()
            )))
        }
    }

    /// Staff and admins: the daily work of care.
    pub fn require_staff(&self) -> ApiResult<()> {
        self.require(&[Role::Admin, Role::Staff])
    }

    /// The residents this caller may see; `None` means every resident.
    pub fn scope(&self) -> Option<Vec<i64>> {
        match self.user.role {
            Role::Family => Some(self.user.resident_ids.clone()),
            Role::Admin | Role::Staff => None,
        }
    }

    /// Whether the caller may see this resident. Out-of-scope residents answer 404,
    /// so a family member cannot learn who else is watched.
    pub fn check_resident(&self, resident_id: i64) -> ApiResult<()> {
        match self.scope() {
            Some(ids) if !ids.contains(&resident_id) => {
                Err(ApiError::NotFound(format!("no resident {resident_id}")))
            }
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.user.username
    }
}

/// The token of a request: `Authorization: Bearer …`, or `?token=…` for WebSockets,
/// which browsers cannot give headers.
fn token_of(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        return h
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string());
    }
    let query = parts.uri.query()?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = token_of(parts).ok_or(ApiError::Unauthorized)?;
        let token_hash = security::hash_token(&token);
        let user = state
            .store
            .session_user(&token_hash, state.clock.now())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(AuthUser { user, token_hash })
    }
}

async fn login(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let record = st.store.user_by_name(&req.username).await?;
    let hash = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| security::decoy_password_hash().to_string());
    let ok = st
        .edge
        .passwords
        .verify(req.password, hash)
        .await
        .map_err(|_| ApiError::Busy)?;
    let Some(record) = record.filter(|_| ok) else {
        tracing::info!(username = %req.username, "login refused");
        return Err(ApiError::Unauthorized);
    };
    let token = security::random_secret();
    let expires_at = st.clock.now() + Duration::hours(i64::from(st.session_hours));
    st.store
        .create_session(&security::hash_token(&token), record.user.id, expires_at)
        .await?;
    Ok(Json(LoginResponse {
        token,
        role: record.user.role,
        expires_at,
    }))
}

async fn logout(State(st): State<AppState>, user: AuthUser) -> ApiResult<axum::http::StatusCode> {
    st.store.delete_session(&user.token_hash).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn me(user: AuthUser) -> Json<User> {
    Json(user.user)
}
