//! A resident's export for a disclosure request: every row the hub stores about them,
//! as JSON lines in a zip with a manifest, streamed as it is read so that neither the
//! hub nor the client holds it whole.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use mimamori_protocol::api::Resident;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use super::zip::{ZipError, ZipStream};
use crate::store::{Store, StoreError};

/// Readings read from the store at a time.
const PAGE: i64 = 1_000;
/// Bytes gathered before they are sent on.
const CHUNK: usize = 64 * 1024;
/// Chunks that may wait for a slow client.
const QUEUE: usize = 8;

pub type Chunk = Result<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the client went away")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The archive's bytes as a stream, and a receiver of how many rows it held once done
/// (nothing if it failed).
pub fn stream(
    store: Arc<dyn Store>,
    resident: Resident,
    by: String,
    now: DateTime<Utc>,
) -> (
    impl Stream<Item = Chunk> + Send,
    tokio::sync::oneshot::Receiver<usize>,
) {
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUE);
    let (done, rows) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let id = resident.id;
        let mut w = Writer {
            tx,
            zip: ZipStream::new(now),
            buf: Vec::new(),
            files: Vec::new(),
        };
        match w.all(store.as_ref(), resident, &by, now).await {
            Ok(n) => {
                let _ = done.send(n);
            }
            Err(Stop::Gone) => {}
            Err(e) => {
                warn!(resident = id, error = %e, "export failed");
                let _ = w.tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (body, rows)
}

#[derive(Serialize)]
struct File {
    name: &'static str,
    rows: usize,
}

struct Writer {
    tx: mpsc::Sender<Chunk>,
    zip: ZipStream,
    buf: Vec<u8>,
    files: Vec<File>,
}

impl Writer {
    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Stop> {
        self.tx
            .send(Ok(Bytes::from(bytes)))
            .await
            .map_err(|_| Stop::Gone)
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        let data = std::mem::take(&mut self.buf);
        if !data.is_empty() {
            let out = self.zip.data(data)?;
            self.send(out).await?;
        }
        Ok(())
    }

    async fn line(&mut self, row: &impl Serialize) -> Result<(), Stop> {
        serde_json::to_writer(&mut self.buf, row)?;
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn begin(&mut self, name: &'static str) -> Result<(), Stop> {
        let header = self.zip.begin(name)?;
        self.send(header).await?;
        self.files.push(File { name, rows: 0 });
        Ok(())
    }

    async fn end(&mut self) -> Result<(), Stop> {
        self.flush().await?;
        let descriptor = self.zip.end()?;
        self.send(descriptor).await
    }

    /// One file of JSON lines.
    async fn file<T: Serialize>(
        &mut self,
        name: &'static str,
        rows: impl IntoIterator<Item = T>,
    ) -> Result<(), Stop> {
        self.begin(name).await?;
        let mut n = 0;
        for row in rows {
            self.line(&row).await?;
            n += 1;
        }
        self.count(n);
        self.end().await
    }

    fn count(&mut self, n: usize) {
        if let Some(f) = self.files.last_mut() {
            f.rows = n;
        }
    }

    async fn readings(&mut self, store: &dyn Store, id: i64) -> Result<(), Stop> {
        self.begin("readings.jsonl").await?;
        let (mut after, mut n) = (0, 0);
        loop {
            let page = store.readings_page(id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for r in &page {
                self.line(r).await?;
            }
            n += page.len();
        }
        self.count(n);
        self.end().await
    }

    async fn all(
        &mut self,
        store: &dyn Store,
        resident: Resident,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, Stop> {
        let id = resident.id;
        self.file("resident.jsonl", [resident]).await?;
        self.file("consents.jsonl", store.consents(id).await?)
            .await?;
        self.file("devices.jsonl", store.list_devices(Some(&[id])).await?)
            .await?;
        self.file("geofences.jsonl", store.list_zones(id).await?)
            .await?;
        self.file("contacts.jsonl", store.list_contacts(id).await?)
            .await?;
        self.readings(store, id).await?;
        let hours = store.activity_rolled_up(id).await?;
        self.file(
            "activity_hourly.jsonl",
            hours
                .into_iter()
                .map(|(hour, count)| serde_json::json!({"hour": hour, "count": count})),
        )
        .await?;
        let alerts = store.alerts_of(id).await?;
        let mut history = Vec::new();
        for a in &alerts {
            for h in store.alert_history(a.id).await? {
                history.push(serde_json::json!({"alert_id": a.id, "event": h}));
            }
        }
        self.file("alerts.jsonl", alerts).await?;
        self.file("alert_history.jsonl", history).await?;
        let deliveries = store.deliveries_of(id).await?;
        self.file(
            "deliveries.jsonl",
            deliveries
                .into_iter()
                .map(|(alert_id, d)| serde_json::json!({"alert_id": alert_id, "delivery": d})),
        )
        .await?;
        let state = store.rule_state(id).await?;
        self.file(
            "rule_state.jsonl",
            state.map(|s| {
                serde_json::from_str::<serde_json::Value>(&s)
                    .unwrap_or(serde_json::Value::String(s))
            }),
        )
        .await?;
        self.file("dead_letters.jsonl", store.dead_letters_of(id).await?)
            .await?;
        self.file("access_log.jsonl", store.access_log(id, i64::MAX).await?)
            .await?;
        let audit = store.audit_of(id).await?;
        self.file(
            "audit.jsonl",
            audit.into_iter().map(|a| {
                serde_json::json!({"at": a.at, "actor": a.actor, "action": a.action, "target": a.target, "details": a.details})
            }),
        )
        .await?;
        let rows = self.files.iter().map(|f| f.rows).sum();
        let manifest = serde_json::json!({
            "format": "mimamori-export/1",
            "resident_id": id,
            "exported_at": now,
            "exported_by": by,
            "hub_version": env!("CARGO_PKG_VERSION"),
            "files": self.files,
            "rows": rows,
            "not_included": [
                "webhook signing secrets of the resident's contacts",
                "accounts of the family members who watch the resident (their own data)",
                "audit entries about devices, contacts and alerts, which name them by id only"
            ],
        });
        let header = self.zip.begin("manifest.json")?;
        self.send(header).await?;
        self.buf = serde_json::to_vec_pretty(&manifest)?;
        self.flush().await?;
        let zip = std::mem::replace(&mut self.zip, ZipStream::new(now));
        let tail = zip.finish()?;
        self.send(tail).await?;
        Ok(rows)
    }
}
