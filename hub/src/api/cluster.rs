//! `GET /api/v1/cluster`: the hubs of a cluster, which partition each one owns and which
//! hub runs each once-per-installation job.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mimamori_protocol::api::Role;
use serde::Serialize;

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::cluster::plan::alive_nodes;
use crate::cluster::LEASE_TTL;

pub fn router() -> Router<AppState> {
    Router::new().route("/cluster", get(cluster))
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// `single` (one hub, the default) or `cluster`.
    pub mode: &'static str,
    /// The hub that answered.
    pub node_id: Option<String>,
    pub partitions: u32,
    /// Whether the answering hub reaches NATS and PostgreSQL.
    pub healthy: bool,
    pub nodes: Vec<NodeInfo>,
    pub leases: Vec<LeaseInfo>,
    pub jobs: Vec<JobInfo>,
}

#[derive(Debug, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub http_addr: String,
    pub mqtt_addr: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Reported within a lease.
    pub alive: bool,
}

#[derive(Debug, Serialize)]
pub struct LeaseInfo {
    pub partition: i64,
    /// `None` while the partition is changing hands.
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
    /// The last event-log sequence whose effects are committed.
    pub applied_seq: i64,
}

#[derive(Debug, Serialize)]
pub struct JobInfo {
    /// `tts` (The Things Stack's client) or `retention`.
    pub job: String,
    /// The hub running it; `None` while it is changing hands.
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

async fn cluster(State(st): State<AppState>, caller: AuthUser) -> ApiResult<Json<ClusterStatus>> {
    caller.require(&[Role::Admin])?;
    let Some(cluster) = &st.cluster else {
        return Ok(Json(ClusterStatus {
            mode: "single",
            node_id: None,
            partitions: 1,
            healthy: true,
            nodes: Vec::new(),
            leases: Vec::new(),
            jobs: Vec::new(),
        }));
    };
    let view = cluster
        .leases
        .view()
        .await
        .map_err(|e| ApiError::Unavailable(format!("PostgreSQL does not answer: {e}")))?;
    let me = &cluster.config.node_id;
    let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(5000);
    let alive = alive_nodes(&view, me, ttl);
    let now = view.now_ms;
    Ok(Json(ClusterStatus {
        mode: "cluster",
        node_id: Some(me.clone()),
        partitions: cluster.config.partitions,
        healthy: cluster.healthy(),
        nodes: view
            .nodes
            .into_iter()
            .map(|n| NodeInfo {
                alive: alive.contains(&n.node_id),
                id: n.node_id,
                http_addr: n.http_addr,
                mqtt_addr: n.mqtt_addr,
                started_at: crate::store::from_ms(n.started_at),
                last_seen: crate::store::from_ms(n.last_seen),
            })
            .collect(),
        leases: view
            .leases
            .into_iter()
            .map(|l| LeaseInfo {
                partition: l.part,
                owner: l.owner.filter(|_| l.expires_at >= now),
                token: l.token,
                expires_at: crate::store::from_ms(l.expires_at),
                applied_seq: l.applied_seq,
            })
            .collect(),
        jobs: view
            .singletons
            .into_iter()
            .map(|j| JobInfo {
                owner: j.owner.filter(|_| j.expires_at >= now),
                job: j.name,
                token: j.token,
                expires_at: crate::store::from_ms(j.expires_at),
            })
            .collect(),
    }))
}
