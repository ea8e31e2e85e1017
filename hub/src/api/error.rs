//! The API's one error type: every failure is a JSON `{"error", "message"}` with the
//! right status. Internal and store failures are logged here and answered with a
//! generic message, so no detail of the database leaks to a caller.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mimamori_protocol::api::ErrorBody;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The password was right; this account also needs its one-time code (`totp`).
    #[error("this account needs a one-time code from its authenticator app (field totp)")]
    TotpRequired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the limit")]
    TooLarge,
    /// The hub cannot do it right now (its store refused a write); worth a retry.
    #[error("{0}")]
    Unavailable(String),
    /// Too many password checks are waiting; answered at once, with `Retry-After`.
    #[error("the hub is busy checking passwords; try again in a second")]
    Busy,
    /// Too many failed logins from this address or for this account; with `Retry-After`.
    #[error("too many failed logins; try again in {0} s")]
    TooManyAttempts(u64),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A store's "no such row" as a 404 saying what is missing; any other failure keeps its
/// kind, so an outage is never reported as "not found".
pub fn or_not_found(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> ApiError {
    when_missing(move || ApiError::NotFound(what()))
}

/// A store's "no such row" as the error `missing` makes (for a row named in a request's
/// body, a 422 rather than a 404); any other failure keeps its kind.
pub fn when_missing(missing: impl FnOnce() -> ApiError) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => missing(),
        other => other.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("no such resource".into()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Store(other),
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::TotpRequired => (StatusCode::UNAUTHORIZED, "totp_required"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ApiError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::Store(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store error");
                "the hub could not complete the request; it has been logged".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error.cause_chain = ?e, "internal error");
                "the hub could not complete the request; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut res = (
            status,
            Json(ErrorBody {
                error: code.to_string(),
                message,
            }),
        )
            .into_response();
        let retry_after = match &self {
            ApiError::TooManyAttempts(secs) => Some(secs.max(&1).to_string()),
            ApiError::Busy => Some("1".to_string()),
            _ => None,
        };
        if let Some(v) = retry_after.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Invalid(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// `Json` whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// `Path` whose rejections are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// `Query` whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_row_becomes_not_found_and_an_outage_stays_a_server_error() {
        let missing = or_not_found(|| "no resident 7".into())(StoreError::NotFound);
        assert!(matches!(&missing, ApiError::NotFound(m) if m == "no resident 7"));
        let outage =
            or_not_found(|| "no resident 7".into())(StoreError::Db(sqlx::Error::PoolTimedOut));
        assert_eq!(
            outage.status_and_code().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let named = when_missing(|| ApiError::Invalid("resident 7 does not exist".into()));
        assert_eq!(
            named(StoreError::NotFound).status_and_code().0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
