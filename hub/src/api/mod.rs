//! The HTTP API under `/api/v1` and the dashboard's files at `/`.
//!
//! Every call but login, health, metrics and LINE's webhook (signed with the LINE
//! channel secret instead) needs a bearer token; roles decide
//! what a caller may do, and a family user sees only their own residents. Every
//! change made through the API is written to the audit trail.

pub mod activity;
pub mod alerts;
pub mod auth;
pub mod ble;
pub mod card;
pub mod cluster;
pub mod contacts;
pub mod devices;
pub mod echonet;
pub mod error;
pub mod gateways;
pub mod headers;
pub mod line;
pub mod lorawan;
pub mod osmand;
pub mod pauses;
pub mod privacy;
pub mod push;
pub mod replay;
pub mod residents;
pub mod serve;
pub mod system;
pub mod text;
pub mod totp;
pub mod users;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::edge::router::HubPublisher;
use crate::edge::EdgeCtx;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::pipeline::PipelineHandle;
use crate::store::{AuditEntry, Store};
use auth::AuthUser;
use error::{ApiError, ApiResult};

/// Largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Set in cluster mode.
    pub cluster: Option<crate::cluster::Cluster>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub pipeline: PipelineHandle,
    pub edge: Arc<EdgeCtx>,
    pub bus: Bus,
    pub publisher: HubPublisher,
    pub session_hours: u32,
    pub ready: Arc<AtomicBool>,
    /// Where a person's loss of access is announced to their open connections.
    pub revocations: crate::revocation::Revocations,
    /// Admission of HTTP connections, for `/healthz`.
    pub http_gate: Arc<crate::limits::Gate>,
    /// The LINE channel secret that signs LINE's webhook calls; `None` turns them away.
    pub line_secret: Option<Arc<crate::notify::line::Secret>>,
    /// The VAPID public key browsers subscribe with, and what a subscription may be.
    pub push: Arc<push::PushState>,
    /// The hosts webhook and ntfy contacts may reach.
    pub contact_hosts: Arc<crate::notify::hosts::HostPolicy>,
    /// Admins without one-time codes may do nothing but set them up.
    pub require_admin_totp: bool,
    /// Consent settings and the read audit.
    pub privacy: crate::privacy::Privacy,
}

impl AppState {
    /// Reloads the gateway maps a staff call changed, on this hub and, in cluster mode, on
    /// every other, so a gateway's messages are mapped alike whichever hub it reaches.
    pub(crate) async fn maps_changed(&self, change: crate::edge::maps::MapChange) -> ApiResult<()> {
        crate::edge::maps::reload(&self.edge, &change).await?;
        if let Some(cluster) = &self.cluster {
            crate::cluster::maps::announce(cluster, change).await;
        }
        Ok(())
    }
}

/// The whole HTTP application.
pub fn app(
    state: AppState,
    dashboard_dir: &std::path::Path,
    tiles_dir: Option<&std::path::Path>,
) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(totp::router())
        .merge(users::router())
        .merge(residents::router())
        .merge(devices::router())
        .merge(alerts::router())
        .merge(system::router())
        .merge(cluster::router())
        // -- more routers (issues 4, 6, 7) merge below this line --
        .merge(contacts::router())
        .merge(gateways::router())
        .merge(lorawan::router())
        .merge(ble::router())
        .merge(echonet::router())
        .merge(osmand::router())
        .merge(ws::router())
        .merge(activity::router())
        .merge(line::router())
        .merge(push::router())
        .merge(privacy::router())
        .merge(pauses::router())
        .merge(replay::router())
        .fallback(|| async { ApiError::NotFound("no such API endpoint".into()) })
        .layer(axum::middleware::map_response(headers::no_store));
    let index = dashboard_dir.join("index.html");
    let files = ServeDir::new(dashboard_dir).fallback(ServeFile::new(index));
    let mut site = Router::new().nest("/api/v1", api);
    if let Some(tiles) = tiles_dir {
        // Offline map tiles: a missing tile is a 404, never the dashboard's index page.
        site = site.nest_service("/tiles", ServeDir::new(tiles));
    }
    site.fallback_service(files)
        .layer(axum::middleware::map_response(headers::protective))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(state)
}

/// The span of one request: method and path only. The query is left out because
/// OsmAnd devices put their secret in it, and tokens may travel there for WebSockets.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// Writes one staff or admin action to the audit trail.
pub async fn audit(
    st: &AppState,
    caller: &AuthUser,
    action: &str,
    target: String,
    details: serde_json::Value,
) -> ApiResult<()> {
    let details = (!details.is_null()).then_some(details);
    st.store
        .audit(&AuditEntry {
            at: st.clock.now(),
            actor: caller.name().to_string(),
            action: action.to_string(),
            target,
            details,
        })
        .await?;
    Ok(())
}
