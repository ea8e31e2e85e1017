//! Operations: health, metrics, dead letters and the audit trail.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use mimamori_protocol::api::{RejectedMessage, Role};
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::{ApiError, ApiQuery, ApiResult};
use super::AppState;
use crate::limits::GateStatus;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/rejected", get(rejected))
        .route("/audit", get(audit_log))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `degraded` (serving, but a listener is full or was in the last 30 s) or `unavailable`.
    pub status: String,
    pub store: String,
    pub mqtt_connections: usize,
    pub listeners: Listeners,
    /// Cluster mode: this hub's name, whether it reaches NATS, the partitions it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterHealth {
    pub node_id: String,
    pub nats: bool,
    pub partitions_owned: usize,
}

/// The admission state of each listener.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listeners {
    pub http: GateStatus,
    /// MQTT sockets whose CONNECT is not yet accepted.
    pub mqtt_pending: GateStatus,
    /// Every place for established MQTT connections (or people's share of them) is taken.
    pub mqtt_full: bool,
}

impl Listeners {
    fn saturated(&self) -> bool {
        self.http.saturated || self.mqtt_pending.saturated || self.mqtt_full
    }
}

/// 200 once the broker and store are ready (the hub only serves HTTP after both
/// started), "degraded" while a listener is saturated, 503 while the store does not
/// answer, or in cluster mode while NATS does not, so that a balancer sends devices to
/// another hub.
async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    let store_ok = st.store.ping().await.is_ok();
    let cluster = st.cluster.as_ref().map(|c| ClusterHealth {
        node_id: c.config.node_id.clone(),
        nats: c.nats_connected(),
        partitions_owned: c.owned_count(),
    });
    let cluster_ok = cluster.as_ref().is_none_or(|c| c.nats);
    let ready = st.ready.load(Ordering::Relaxed) && store_ok && cluster_ok;
    let listeners = Listeners {
        http: st.http_gate.status(),
        mqtt_pending: st.edge.pending.status(),
        mqtt_full: st.edge.saturated(),
    };
    let status = match (ready, listeners.saturated()) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    let body = Health {
        status: status.into(),
        store: st.store.backend().into(),
        mqtt_connections: st.edge.registry.len(),
        listeners,
        cluster,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Prometheus text; counters only, no personal data, so scrapers need no login.
async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn rejected(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<Json<Vec<RejectedMessage>>> {
    caller.require_staff()?;
    Ok(Json(
        st.store
            .list_rejected(q.limit.unwrap_or(100).clamp(1, 1000))
            .await?,
    ))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditItem {
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: Option<serde_json::Value>,
}

async fn audit_log(
    State(st): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<Json<Vec<AuditItem>>> {
    caller.require(&[Role::Admin])?;
    let entries = st
        .store
        .list_audit(q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(ApiError::from)?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditItem {
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                details: e.details,
            })
            .collect(),
    ))
}
