//! Cluster mode: several hubs share one NATS JetStream event log and one PostgreSQL
//! store, so that no single machine's death leaves residents unwatched.
//!
//! The single-node hub is one process: edge → ingest → pipeline → store. Cluster mode
//! cuts that chain at its one seam, the resident-keyed event:
//!
//! - every hub's **edge** is stateless: it authenticates against PostgreSQL and appends
//!   each accepted message to the JetStream stream `MIMAMORI_EVENTS`, on the subject of
//!   the resident's partition ([`plan::partition_of`]); the device's PUBACK waits for
//!   JetStream's acknowledgement ([`log`]);
//! - each **partition** is owned by one hub at a time under a lease in PostgreSQL with a
//!   fencing token ([`owner`]): the owner runs an ordinary [`crate::pipeline::Pipeline`]
//!   over that partition's residents, reading the log from the sequence its last commit
//!   reached; every commit carries the token and that sequence, in the same transaction
//!   as the readings and alerts, so an event is applied exactly once and a stale owner's
//!   late commit is refused;
//! - what a pipeline announces goes to the stream `MIMAMORI_LIVE`, which every hub
//!   follows into its WebSocket bus and its MQTT router ([`live`]), numbered by the
//!   stream's sequence, so a client may resume on any hub;
//! - staff commands and configuration changes reach the owner over NATS requests
//!   ([`rpc`]); changes to the gateways' device maps reach every hub's edge ([`maps`]);
//! - the jobs an installation runs once (The Things Stack's client, retention) run on one
//!   hub at a time, each under a lease of its own ([`singleton`]); the retention job's
//!   status and run requests from any hub's API are answered by its holder ([`jobs`]).

pub mod jobs;
pub mod live;
pub mod log;
pub mod maps;
pub mod owner;
pub mod plan;
pub mod rpc;
pub mod singleton;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_nats::connection::State;
use tokio::sync::Notify;

use crate::pipeline::PipelineHandle;
use crate::store::cluster::LeaseStore;

/// How long a lease lasts without renewal; a dead hub's partitions move after this.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often leases are renewed and the plan is run.
pub const TICK: Duration = Duration::from_secs(1);

/// Cluster settings, resolved.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nats_url: String,
    pub node_id: String,
    pub partitions: u32,
    pub replicas: usize,
}

impl ClusterConfig {
    /// `None` without a NATS URL (single-node mode); an error for settings that cannot work.
    pub fn from_settings(
        nats_url: Option<String>,
        node_id: Option<String>,
        partitions: Option<u32>,
        replicas: Option<usize>,
        database_url: &str,
    ) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(nats_url) = nats_url.filter(|u| !u.is_empty()) else {
            anyhow::ensure!(
                node_id.is_none() && partitions.is_none() && replicas.is_none(),
                "node_id, partitions and nats_replicas are cluster settings: they need nats_url"
            );
            return Ok(None);
        };
        anyhow::ensure!(
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://"),
            "cluster mode (nats_url) needs a PostgreSQL database_url shared by every hub, not {}",
            database_url.split(':').next().unwrap_or("?")
        );
        let node_id = match node_id.or_else(|| std::env::var("HOSTNAME").ok()) {
            Some(id) if valid_node_id(&id) => id,
            Some(id) => anyhow::bail!("node_id {id:?} must be 1-64 letters, digits, '-' or '_'"),
            None => anyhow::bail!("cluster mode needs a node_id (--node-id hub-1)"),
        };
        let partitions = partitions.unwrap_or(16);
        anyhow::ensure!(
            (1..=1024).contains(&partitions),
            "partitions must be between 1 and 1024"
        );
        let replicas = replicas.unwrap_or(1);
        anyhow::ensure!(
            (1..=5).contains(&replicas),
            "nats_replicas must be between 1 and 5"
        );
        Ok(Some(ClusterConfig {
            nats_url,
            node_id,
            partitions,
            replicas,
        }))
    }

    /// The NATS servers to try, from a comma-separated URL list.
    pub fn servers(&self) -> Vec<&str> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The partitions this hub owns now, each with its pipeline's handle.
pub type Owned = Arc<RwLock<std::collections::BTreeMap<u32, PipelineHandle>>>;

/// What every part of cluster mode shares on one hub.
#[derive(Clone)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub leases: LeaseStore,
    pub owned: Owned,
    /// Whether the last lease round could reach PostgreSQL.
    pub store_ok: Arc<AtomicBool>,
    /// Notified at every (re)connection to NATS: what was announced meanwhile is lost.
    pub reconnected: Arc<Notify>,
}

impl Cluster {
    /// Connects to NATS and the lease table, and creates the streams if they are missing.
    pub async fn connect(config: ClusterConfig, database_url: &str) -> anyhow::Result<Cluster> {
        let reconnected = Arc::new(Notify::new());
        let on_connect = reconnected.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("mimamori-{}", config.node_id))
            .event_callback(move |event| {
                let on_connect = on_connect.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        on_connect.notify_one();
                    }
                }
            })
            // A hub cut off from NATS must notice within a lease, not after a minute.
            .ping_interval(Duration::from_secs(2))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(config.servers())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))?;
        let js = async_nats::jetstream::new(client.clone());
        log::ensure_streams(&js, config.replicas).await?;
        let leases = LeaseStore::connect(database_url).await?;
        leases.ensure_partitions(config.partitions).await?;
        Ok(Cluster {
            config,
            client,
            js,
            leases,
            owned: Arc::default(),
            store_ok: Arc::new(AtomicBool::new(true)),
            reconnected,
        })
    }

    pub fn nats_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Healthy when both shared engines answer: a hub that lost either must not be sent
    /// devices by a balancer that checks `/api/v1/healthz`.
    pub fn healthy(&self) -> bool {
        self.nats_connected() && self.store_ok.load(Ordering::Relaxed)
    }

    /// The handle of a partition's pipeline, if this hub owns it.
    pub fn local(&self, part: u32) -> Option<PipelineHandle> {
        self.owned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&part)
            .cloned()
    }

    pub fn owned_count(&self) -> usize {
        self.owned.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_needs_postgres_and_a_node_id() {
        let pg = "postgres://h/db";
        assert!(
            ClusterConfig::from_settings(None, None, None, None, "sqlite:x")
                .is_ok_and(|c| c.is_none())
        );
        assert!(ClusterConfig::from_settings(
            Some("nats://n".into()),
            Some("a".into()),
            None,
            None,
            "sqlite:x"
        )
        .is_err());
        assert!(ClusterConfig::from_settings(None, Some("a".into()), None, None, pg).is_err());
        assert!(ClusterConfig::from_settings(
            Some("nats://n".into()),
            Some("a b".into()),
            None,
            None,
            pg
        )
        .is_err());
        assert!(ClusterConfig::from_settings(
            Some("nats://n".into()),
            Some("a".into()),
            Some(0),
            None,
            pg
        )
        .is_err());
        let c = ClusterConfig::from_settings(
            Some("nats://n".into()),
            Some("hub-1".into()),
            None,
            None,
            pg,
        );
        assert!(c.is_ok_and(|c| c.is_some_and(|c| c.partitions == 16 && c.replicas == 1)));
    }
}
