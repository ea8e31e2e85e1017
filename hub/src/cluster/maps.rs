//! Keeps every hub's gateway maps current: a change made through one hub's API is
//! announced on the NATS subject `mimamori.edge.maps`, and every other hub reloads what
//! it names from PostgreSQL ([`crate::edge::maps::reload`]).
//!
//! Announcements are plain NATS messages, not kept anywhere: a hub cut off from NATS may
//! miss some, so each time its connection is made again it reloads every map.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Cluster;
use crate::edge::maps::{reload, MapChange};
use crate::edge::EdgeCtx;

const SUBJECT: &str = "mimamori.edge.maps";

#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The hub that made the change, which has reloaded already.
    from: String,
    change: MapChange,
}

/// Tells the other hubs to reload what `change` names. A hub that misses it (cut off from
/// NATS now) reloads everything when it is back.
pub async fn announce(cluster: &Cluster, change: MapChange) {
    let notice = Notice {
        from: cluster.config.node_id.clone(),
        change,
    };
    let body = match serde_json::to_vec(&notice) {
        Ok(b) => b,
        Err(e) => return warn!(error = %e, "map change not encodable"),
    };
    if let Err(e) = cluster.client.publish(SUBJECT, body.into()).await {
        warn!(error = %e, "map change not announced; the other hubs reload on reconnecting");
    }
}

/// Applies the other hubs' changes to this hub's maps, and reloads them all after every
/// reconnection to NATS, for as long as the hub runs.
pub async fn follow(cluster: Cluster, edge: Arc<EdgeCtx>) -> anyhow::Result<()> {
    let mut notices = cluster.client.subscribe(SUBJECT).await?;
    // Set when a reload failed (the store was down): everything is read again shortly.
    let mut behind = false;
    loop {
        let change = tokio::select! {
            notice = notices.next() => match notice {
                Some(msg) => match serde_json::from_slice::<Notice>(&msg.payload) {
                    Ok(n) if n.from == cluster.config.node_id => continue,
                    Ok(n) => n.change,
                    Err(e) => {
                        warn!(error = %e, "unreadable map change skipped");
                        continue;
                    }
                },
                None => anyhow::bail!("the map-change subscription ended"),
            },
            () = cluster.reconnected.notified() => MapChange::All,
            () = tokio::time::sleep(super::TICK), if behind => MapChange::All,
        };
        match reload(&edge, &change).await {
            Ok(()) => {
                behind = behind && change != MapChange::All;
                info!(?change, "gateway maps reloaded after a change elsewhere");
            }
            Err(e) => {
                behind = true;
                warn!(?change, error = %e, "cannot reload gateway maps; reading them all again shortly");
            }
        }
    }
}
