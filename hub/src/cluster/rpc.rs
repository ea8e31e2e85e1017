//! Commands across hubs: the API of any hub hands staff actions, status questions and
//! configuration changes to the pipeline of the partition they concern, on this hub or,
//! over a NATS request, on the hub that owns it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use mimamori_protocol::Alert;
use mimamori_rules::ResidentStatus;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::plan::partition_of;
use super::Cluster;
use crate::alerts::{PauseCommand, PauseError, Refusal, StaffCommand};
use crate::pipeline::{Command, PipelineHandle, StaffError};
use crate::store::{Store, StoreError};

/// A command for a partition's owner.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Staff(StaffCommand),
    Statuses(Vec<i64>),
    Reload(i64),
    Remove(i64),
    Pause(PauseCommand),
}

/// The owner's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Staff(Box<Result<Alert, StaffError>>),
    Statuses(Vec<ResidentStatus>),
    Pause(Result<mimamori_protocol::pause::Pause, PauseError>),
    Done,
}

fn subject(part: u32) -> String {
    format!("mimamori.rpc.{part}")
}

/// Answers requests for the partitions this hub owns; requests for others are left to
/// their owners (every hub hears every request, only the owner replies).
pub async fn serve(cluster: Cluster) -> anyhow::Result<()> {
    let mut requests = cluster.client.subscribe("mimamori.rpc.*").await?;
    while let Some(msg) = requests.next().await {
        let Some(part) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (Some(handle), Some(reply_to)) = (cluster.local(part), msg.reply.clone()) else {
            continue;
        };
        let client = cluster.client.clone();
        tokio::spawn(async move {
            let reply = match serde_json::from_slice::<Request>(&msg.payload) {
                Ok(req) => answer(&handle, req).await,
                Err(e) => return warn!(error = %e, "unreadable cluster request"),
            };
            if let Ok(body) = serde_json::to_vec(&reply) {
                let _ = client.publish(reply_to, body.into()).await;
            }
        });
    }
    Ok(())
}

async fn answer(handle: &PipelineHandle, req: Request) -> Reply {
    match req {
        Request::Staff(cmd) => Reply::Staff(Box::new(handle.staff(cmd).await)),
        Request::Statuses(ids) => Reply::Statuses(handle.statuses(ids).await),
        Request::Reload(id) => {
            handle.send(Command::Reload(id)).await;
            Reply::Done
        }
        Request::Remove(id) => {
            handle.send(Command::Remove(id)).await;
            Reply::Done
        }
        Request::Pause(cmd) => Reply::Pause(handle.pause(cmd).await),
    }
}

/// The API's pipeline handle in cluster mode: every command it sends is routed here.
pub fn dispatcher(cluster: Cluster, store: Arc<dyn Store>) -> PipelineHandle {
    let (handle, mut commands) = PipelineHandle::channel();
    tokio::spawn(async move {
        while let Some((cmd, done)) = commands.recv().await {
            let cluster = cluster.clone();
            let store = store.clone();
            tokio::spawn(async move {
                route(&cluster, store.as_ref(), cmd).await;
                let _ = done.send(());
            });
        }
        info!("cluster command dispatcher stopped");
    });
    handle
}

async fn route(cluster: &Cluster, store: &dyn Store, cmd: Command) {
    let parts = cluster.config.partitions;
    match cmd {
        Command::Reload(id) => {
            ask(cluster, partition_of(id, parts), Request::Reload(id)).await;
        }
        Command::Remove(id) => {
            ask(cluster, partition_of(id, parts), Request::Remove(id)).await;
        }
        Command::Statuses(ids, reply) => {
            let _ = reply.send(statuses(cluster, ids).await);
        }
        Command::Staff(cmd, reply) => {
            let _ = reply.send(staff(cluster, store, cmd).await);
        }
        Command::Pause(cmd, reply) => {
            let part = partition_of(cmd.resident_id(), parts);
            let answer = match ask(cluster, part, Request::Pause(cmd)).await {
                Some(Reply::Pause(result)) => result,
                _ => Err(PauseError::Stopped),
            };
            let _ = reply.send(answer);
        }
    }
}

async fn staff(
    cluster: &Cluster,
    store: &dyn Store,
    cmd: StaffCommand,
) -> Result<Alert, StaffError> {
    let resident = match store.alert(cmd.alert_id).await {
        Ok(alert) => alert.resident_id,
        Err(StoreError::NotFound) => return Err(StaffError::Refused(Refusal::NotLive)),
        Err(_) => return Err(StaffError::NotStored),
    };
    match ask(
        cluster,
        partition_of(resident, cluster.config.partitions),
        Request::Staff(cmd),
    )
    .await
    {
        Some(Reply::Staff(result)) => *result,
        _ => Err(StaffError::Stopped),
    }
}

async fn statuses(cluster: &Cluster, ids: Vec<i64>) -> Vec<ResidentStatus> {
    let mut by_part: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for id in ids {
        by_part
            .entry(partition_of(id, cluster.config.partitions))
            .or_default()
            .push(id);
    }
    let asks = by_part
        .into_iter()
        .map(|(part, ids)| ask(cluster, part, Request::Statuses(ids)));
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flat_map(|r| match r {
            Some(Reply::Statuses(s)) => s,
            _ => Vec::new(),
        })
        .collect()
}

/// Runs a request on the partition's owner: this hub's pipeline if it owns it, else a
/// NATS request; `None` if nobody answered (the partition is changing hands).
async fn ask(cluster: &Cluster, part: u32, req: Request) -> Option<Reply> {
    if let Some(handle) = cluster.local(part) {
        return Some(answer(&handle, req).await);
    }
    let body = serde_json::to_vec(&req).ok()?;
    match cluster.client.request(subject(part), body.into()).await {
        Ok(msg) => serde_json::from_slice(&msg.payload).ok(),
        Err(e) => {
            warn!(part, error = %e, "no owner answered a cluster request");
            None
        }
    }
}
