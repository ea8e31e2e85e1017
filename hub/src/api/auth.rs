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
        .route("/auth/password", post(change_password))
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

/// The token of a request: `Authorization: Bearer …` only. A token in the URL ends
/// up in logs and browser history, so only the WebSocket (which browsers cannot give
/// headers) takes `?token=`, in [`super::ws`].
fn token_of(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
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
        // Inside the `/api/v1` nest the path has lost its prefix; either way `/auth/…`
        // (me, logout, the codes' setup) stays open to an admin who must still set up.
        let path = parts.uri.path().trim_start_matches("/api/v1");
        if super::totp::must_enrol(state, &user) && !path.starts_with("/auth/") {
            return Err(ApiError::Forbidden(
                "administrators must set up one-time codes first: POST /api/v1/auth/totp".into(),
            ));
        }
        Ok(AuthUser { user, token_hash })
    }
}

async fn login(
    State(st): State<AppState>,
    Peer(peer): Peer,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let Some(record) = check_password(&st, peer, &req.username, req.password).await? else {
        tracing::info!(username = %req.username.escape_debug(), %peer, "login refused");
        return Err(ApiError::Unauthorized);
    };
    if let Some(secret) = &record.totp_secret {
        second_factor(&st, peer, &record.user, secret, req.totp.as_deref()).await?;
    }
    // Only a whole login clears the counts: a right password with a wrong code must keep
    // adding up, or someone who has the password could guess codes for ever.
    st.edge.throttle.succeeded(peer, &req.username);
    let token = security::random_secret();
    let now = st.clock.now();
    let expires_at = now + Duration::hours(i64::from(st.session_hours));
    // Each login sweeps the sessions that ran out, so the table never grows without end.
    let purged = st.store.purge_sessions(now).await?;
    if purged > 0 {
        tracing::debug!(purged, "expired sessions deleted");
    }
    st.store
        .create_session(&security::hash_token(&token), record.user.id, expires_at)
        .await?;
    Ok(Json(LoginResponse {
        token,
        role: record.user.role,
        expires_at,
    }))
}

/// The user when `password` is theirs, `None` when it is not (or no such user); the
/// back-off comes first, and an unknown user costs no Argon2 (only the same wait). A
/// failure is counted here; the caller clears the counts once the whole check passed.
async fn check_password(
    st: &AppState,
    peer: std::net::IpAddr,
    username: &str,
    password: String,
) -> ApiResult<Option<crate::store::UserRecord>> {
    let now = std::time::Instant::now();
    if let Err(limited) = st.edge.throttle.check(peer, username, now) {
        st.metrics.limit_login("http", limited.by);
        return Err(ApiError::TooManyAttempts(limited.retry_after_secs()));
    }
    let Some(record) = st.store.user_by_name(username).await? else {
        st.edge.passwords.refuse_unknown().await;
        st.edge.throttle.failed(peer, username, now);
        return Ok(None);
    };
    let ok = st
        .edge
        .passwords
        .verify(password, record.password_hash.clone())
        .await
        .map_err(|_| ApiError::Busy)?;
    if !ok {
        st.edge.throttle.failed(peer, username, now);
        return Ok(None);
    }
    Ok(Some(record))
}

/// The one-time code of an account that has them: missing is `totp_required`; wrong or
/// already used counts as a failed login.
async fn second_factor(
    st: &AppState,
    peer: std::net::IpAddr,
    user: &User,
    secret: &str,
    code: Option<&str>,
) -> ApiResult<()> {
    let Some(code) = code else {
        return Err(ApiError::TotpRequired);
    };
    let fresh = match crate::totp::check(secret, code, st.clock.now()) {
        Some(step) => st.store.use_totp_step(user.id, step).await?,
        None => false,
    };
    if !fresh {
        st.edge
            .throttle
            .failed(peer, &user.username, std::time::Instant::now());
        tracing::info!(username = %user.username.escape_debug(), %peer, "login refused: one-time code");
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// A person changes their own password: every session of theirs ends (this one too)
/// and every live connection closes; they log in again with the new one.
async fn change_password(
    State(st): State<AppState>,
    Peer(peer): Peer,
    caller: AuthUser,
    ApiJson(req): ApiJson<PasswordChange>,
) -> ApiResult<axum::http::StatusCode> {
    let name = caller.user.username.clone();
    if check_password(&st, peer, &name, req.current_password)
        .await?
        .is_none()
    {
        return Err(ApiError::Forbidden("the current password is wrong".into()));
    }
    st.edge.throttle.succeeded(peer, &name);
    let ended = set_password(&st, &caller.user, req.new_password).await?;
    super::audit(
        &st,
        &caller,
        "user.password_change",
        format!("user/{}", caller.user.id),
        serde_json::json!({ "sessions_ended": ended }),
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Gives `user` a new password (after the policy), ends their sessions and closes their
/// live connections; returns how many sessions ended.
pub async fn set_password(st: &AppState, user: &User, password: String) -> ApiResult<u64> {
    security::check_password_policy(&user.username, &password).map_err(ApiError::Invalid)?;
    let hash = st
        .edge
        .passwords
        .hash(password)
        .await
        .map_err(|_| ApiError::Busy)??;
    let ended = st.store.set_password(user.id, &hash).await?;
    st.revocations.user(user.id, &user.username);
    Ok(ended)
}

/// The address a request came from (unspecified when served without one, as in unit tests).
pub struct Peer(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(Peer(peer))
    }
}

async fn logout(State(st): State<AppState>, user: AuthUser) -> ApiResult<axum::http::StatusCode> {
    st.store.delete_session(&user.token_hash).await?;
    st.revocations.session(&user.token_hash);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn me(user: AuthUser) -> Json<User> {
    Json(user.user)
}
