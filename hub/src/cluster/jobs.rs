//! The retention job's controls in cluster mode: the job runs on the hub that holds its
//! lease, so `GET /retention` and `POST /retention/run` on any hub are answered by that
//! hub over a NATS request. The answering side runs inside the job's own task, so only
//! the hub that runs the job answers, and it stops answering the moment the job stops.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Cluster;
use crate::privacy::retention::{JobStatus, RetentionJob};

const SUBJECT: &str = "mimamori.jobs.retention";

/// What the API asks of the retention job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Ask {
    Status,
    /// A pass now, as `POST /retention/run` asks on a single hub.
    Run,
}

/// The holder's answer: who it is, the job's status, and the pass a `Run` will be served by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub node: String,
    pub status: JobStatus,
    pub pass: Option<u64>,
}

/// Answers the API of every hub for as long as the job runs here; ends only if NATS
/// refuses the subscription.
pub async fn serve(client: async_nats::Client, node: String, job: RetentionJob) {
    let mut asks = match client.subscribe(SUBJECT).await {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "the retention job cannot take requests over NATS"),
    };
    while let Some(msg) = asks.next().await {
        let (Some(reply_to), Ok(ask)) = (msg.reply, serde_json::from_slice::<Ask>(&msg.payload))
        else {
            continue;
        };
        let pass = matches!(ask, Ask::Run).then(|| job.request());
        let answer = Answer {
            node: node.clone(),
            status: job.status(),
            pass,
        };
        if let Ok(body) = serde_json::to_vec(&answer) {
            let _ = client.publish(reply_to, body.into()).await;
        }
    }
}

/// Asks the hub that runs the retention job; `None` while no hub holds its lease (it
/// moves to another hub within a lease's time after its holder stops).
pub async fn ask(cluster: &Cluster, ask: Ask) -> Option<Answer> {
    let body = serde_json::to_vec(&ask).ok()?;
    match cluster.client.request(SUBJECT, body.into()).await {
        Ok(msg) => serde_json::from_slice(&msg.payload).ok(),
        Err(e) => {
            warn!(error = %e, "no hub answered for the retention job");
            None
        }
    }
}
