//! The SQL of cluster mode: the hubs' heartbeats, the partition leases and the leases of
//! the jobs that run on one hub at a time, in PostgreSQL.
//!
//! Every time here is read from the database's clock (`clock_timestamp()`), never from a
//! hub's, so two hubs whose clocks disagree still agree on when a lease ran out. A lease
//! changes owner only by a compare-and-set on its row, which also raises its token;
//! [`super::Fence`] checks that token inside every commit of the owner's pipeline.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreResult;

/// The database's clock in epoch milliseconds.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A partition's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseRow {
    pub part: i64,
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at: i64,
    pub applied_seq: i64,
}

/// A hub of the cluster as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub http_addr: String,
    pub mqtt_addr: String,
    pub started_at: i64,
    pub last_seen: i64,
}

/// The lease of a job that runs on one hub at a time.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SingletonRow {
    pub name: String,
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at: i64,
}

/// The leases and the nodes, read at one moment of the database's clock.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub now_ms: i64,
    pub nodes: Vec<NodeRow>,
    pub leases: Vec<LeaseRow>,
    pub singletons: Vec<SingletonRow>,
}

/// A lease this hub holds: the token its commits must carry and where its log starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub part: u32,
    pub token: i64,
    pub applied_seq: u64,
}

/// Cluster-mode SQL on a small pool of its own, so lease renewals never queue behind
/// ingest commits.
#[derive(Clone)]
pub struct LeaseStore {
    pool: PgPool,
}

impl LeaseStore {
    pub async fn connect(url: &str) -> anyhow::Result<LeaseStore> {
        let opts = PgConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await
            .context("cannot connect to PostgreSQL for the cluster leases")?;
        Ok(LeaseStore { pool })
    }

    /// Creates the lease rows of a new cluster, or checks that an existing one was made
    /// with the same number of partitions (the partition of a resident depends on it).
    pub async fn ensure_partitions(&self, partitions: u32) -> anyhow::Result<()> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM cluster_leases")
            .fetch_one(&self.pool)
            .await?;
        if count == 0 {
            let mut tx = self.pool.begin().await?;
            for part in 0..i64::from(partitions) {
                sqlx::query("INSERT INTO cluster_leases (part) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(part)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM cluster_leases")
            .fetch_one(&self.pool)
            .await?;
        anyhow::ensure!(
            count == i64::from(partitions),
            "this cluster was created with {count} partitions, not {partitions}: start every hub with --partitions {count}"
        );
        Ok(())
    }

    /// Says this hub is alive, with where it can be reached.
    pub async fn heartbeat(&self, node: &str, http: &str, mqtt: &str) -> StoreResult<()> {
        let q = format!(
            "INSERT INTO cluster_nodes (node_id, http_addr, mqtt_addr, started_at, last_seen) \
             VALUES ($1, $2, $3, {DB_NOW_MS}, {DB_NOW_MS}) \
             ON CONFLICT (node_id) DO UPDATE SET http_addr = $2, mqtt_addr = $3, last_seen = {DB_NOW_MS}"
        );
        sqlx::query(&q)
            .bind(node)
            .bind(http)
            .bind(mqtt)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every node and lease, with the database's time of reading.
    pub async fn view(&self) -> StoreResult<ClusterView> {
        let (now_ms,): (i64,) = sqlx::query_as(&format!("SELECT {DB_NOW_MS}"))
            .fetch_one(&self.pool)
            .await?;
        let nodes = sqlx::query_as(
            "SELECT node_id, http_addr, mqtt_addr, started_at, last_seen FROM cluster_nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let leases = sqlx::query_as(
            "SELECT part, owner, token, expires_at, applied_seq FROM cluster_leases ORDER BY part",
        )
        .fetch_all(&self.pool)
        .await?;
        let singletons = sqlx::query_as(
            "SELECT name, owner, token, expires_at FROM cluster_singletons ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ClusterView {
            now_ms,
            nodes,
            leases,
            singletons,
        })
    }

    /// Takes a partition that nobody holds or whose lease ran out; `None` if another hub
    /// was quicker or still holds it.
    pub async fn claim(
        &self,
        part: u32,
        node: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Granted>> {
        let q = format!(
            "UPDATE cluster_leases SET owner = $1, token = token + 1, expires_at = {DB_NOW_MS} + $2 \
             WHERE part = $3 AND (owner IS NULL OR expires_at < {DB_NOW_MS}) \
             RETURNING token, applied_seq"
        );
        let row: Option<(i64, i64)> = sqlx::query_as(&q)
            .bind(node)
            .bind(ttl_ms(ttl))
            .bind(i64::from(part))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(token, applied_seq)| Granted {
            part,
            token,
            applied_seq: u64::try_from(applied_seq).unwrap_or(0),
        }))
    }

    /// Extends the leases this hub holds with these tokens; returns the partitions still
    /// its own (a missing one was taken over).
    pub async fn renew(
        &self,
        node: &str,
        held: &[(u32, i64)],
        ttl: Duration,
    ) -> StoreResult<Vec<u32>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let parts: Vec<i64> = held.iter().map(|(p, _)| i64::from(*p)).collect();
        let tokens: Vec<i64> = held.iter().map(|(_, t)| *t).collect();
        let q = format!(
            "UPDATE cluster_leases l SET expires_at = {DB_NOW_MS} + $1 \
             FROM UNNEST($2::bigint[], $3::bigint[]) AS h(part, token) \
             WHERE l.part = h.part AND l.token = h.token AND l.owner = $4 \
             RETURNING l.part"
        );
        let rows: Vec<(i64,)> = sqlx::query_as(&q)
            .bind(ttl_ms(ttl))
            .bind(&parts)
            .bind(&tokens)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(p,)| u32::try_from(p).ok())
            .collect())
    }

    /// Gives a partition up at once, so another hub need not wait for the lease to run out.
    pub async fn release(&self, part: u32, node: &str, token: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE cluster_leases SET owner = NULL, expires_at = 0 WHERE part = $1 AND owner = $2 AND token = $3",
        )
        .bind(i64::from(part))
        .bind(node)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees every lease held under this node's name (by an earlier run of it).
    pub async fn release_all(&self, node: &str) -> StoreResult<u64> {
        let mut freed = 0;
        for table in ["cluster_leases", "cluster_singletons"] {
            let done = sqlx::query(&format!(
                "UPDATE {table} SET owner = NULL, expires_at = 0 WHERE owner = $1"
            ))
            .bind(node)
            .execute(&self.pool)
            .await?;
            freed += done.rows_affected();
        }
        Ok(freed)
    }

    /// Takes the lease of a job that nobody runs or whose holder's lease ran out; returns
    /// its new token, or `None` if another hub holds it.
    pub async fn claim_singleton(
        &self,
        name: &str,
        node: &str,
        ttl: Duration,
    ) -> StoreResult<Option<i64>> {
        let q = format!(
            "INSERT INTO cluster_singletons AS s (name, owner, token, expires_at) \
             VALUES ($1, $2, 1, {DB_NOW_MS} + $3) \
             ON CONFLICT (name) DO UPDATE SET owner = $2, token = s.token + 1, expires_at = {DB_NOW_MS} + $3 \
             WHERE s.owner IS NULL OR s.expires_at < {DB_NOW_MS} \
             RETURNING token"
        );
        let row: Option<(i64,)> = sqlx::query_as(&q)
            .bind(name)
            .bind(node)
            .bind(ttl_ms(ttl))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(token,)| token))
    }

    /// Extends the job leases this hub holds with these tokens; returns the jobs still its own.
    pub async fn renew_singletons(
        &self,
        node: &str,
        held: &[(String, i64)],
        ttl: Duration,
    ) -> StoreResult<Vec<String>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
        let tokens: Vec<i64> = held.iter().map(|(_, t)| *t).collect();
        let q = format!(
            "UPDATE cluster_singletons s SET expires_at = {DB_NOW_MS} + $1 \
             FROM UNNEST($2::text[], $3::bigint[]) AS h(name, token) \
             WHERE s.name = h.name AND s.token = h.token AND s.owner = $4 \
             RETURNING s.name"
        );
        let rows: Vec<(String,)> = sqlx::query_as(&q)
            .bind(ttl_ms(ttl))
            .bind(&names)
            .bind(&tokens)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Gives a job's lease up at once, so another hub may start it without waiting.
    pub async fn release_singleton(&self, name: &str, node: &str, token: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE cluster_singletons SET owner = NULL, expires_at = 0 WHERE name = $1 AND owner = $2 AND token = $3",
        )
        .bind(name)
        .bind(node)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}
