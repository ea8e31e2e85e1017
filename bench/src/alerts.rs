//! Alert latency under load: SOS presses from many distinct buttons while background
//! traffic runs, timed from the publish to the `alert` frame on a WebSocket client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use device_sim::load::{self, LoadConfig, Mix};
use device_sim::mqtt::DeviceLogin;
use futures_util::StreamExt;
use mimamori_protocol::topic::{device_topic, MessageKind};
use rumqttc::{Event, Packet, QoS};
use serde::Serialize;
use serde_json::Value;

use crate::process::HubProcess;
use crate::stats::Quantiles;

#[derive(Debug, Clone, Serialize)]
pub struct AlertLatency {
    pub background_rate: f64,
    pub background_sustained: bool,
    pub alerts_sent: usize,
    pub alerts_seen: usize,
    pub latency_ms: Option<Quantiles>,
    /// The part from the pipeline's taking of the press (the alert's `opened_at`: the
    /// rules engine opens an SOS at its `now`) to the frame: the press's commit and the
    /// WebSocket. The rest is the publisher, the wire, the edge and any wait in the
    /// pipeline's queue.
    pub in_hub_ms: Option<Quantiles>,
}

/// When each device pressed, and how long its alert frame took.
#[derive(Default)]
struct Timings {
    pressed: HashMap<String, Instant>,
    latencies_ms: Vec<f64>,
    in_hub_ms: Vec<f64>,
}

/// Presses each button once, `presses_per_s` at a time, during `background` load, and
/// times each press to its `alert` frame on a WebSocket client of the hub.
pub async fn measure(
    hub: &HubProcess,
    token: &str,
    buttons: &[DeviceLogin],
    load: &Background<'_>,
) -> Result<AlertLatency> {
    let timings = Arc::new(Mutex::new(Timings::default()));
    let ws_url = format!("{}?token={token}", hub.url("/ws").replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .context("cannot open the WebSocket")?;
    let (_sink, mut frames) = ws.split();
    let reader = {
        let timings = timings.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = frames.next().await {
                let Ok(text) = msg.into_text() else { continue };
                record(&timings, &text);
            }
        })
    };
    let result = press_all(&timings, buttons, load).await;
    reader.abort();
    result
}

/// The same presses and background load against the bare broker, timed from the publish
/// to a plain subscriber's copy of the press: what any MQTT path costs on this machine
/// under this load, the baseline of [`measure`].
pub async fn measure_broker(
    broker: std::net::SocketAddr,
    buttons: &[DeviceLogin],
    load: &Background<'_>,
) -> Result<AlertLatency> {
    let timings = Arc::new(Mutex::new(Timings::default()));
    let (client, mut eventloop) = crate::ingest::connect_client(
        broker.ip().to_string(),
        broker.port(),
        "sos-subscriber",
        None,
        100,
    )
    .await?;
    let pattern = device_topic("+", MessageKind::Sos);
    client.subscribe(pattern, QoS::AtLeastOnce).await?;
    // The subscription must be in place before the first press.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow!("the SOS subscriber lost the broker: {e}")),
            }
        }
    })
    .await
    .context("no SUBACK from the bare broker in 10 s")??;
    let reader = {
        let timings = timings.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    if let Some(device) = p.topic.split('/').rev().nth(1) {
                        arrived(&timings, device, None);
                    }
                }
            }
        })
    };
    let result = press_all(&timings, buttons, load).await;
    reader.abort();
    result
}

/// The background traffic during the presses.
pub struct Background<'a> {
    pub devices: &'a [DeviceLogin],
    pub rate: f64,
    pub presses_per_s: f64,
}

/// Connects the buttons, starts the background load, presses each button once and waits
/// for every press to be seen (or 30 s).
async fn press_all(
    timings: &Arc<Mutex<Timings>>,
    buttons: &[DeviceLogin],
    load: &Background<'_>,
) -> Result<AlertLatency> {
    let mut links = Vec::with_capacity(buttons.len());
    for b in buttons {
        let creds = (b.device_id.as_str(), b.password.as_str());
        let (client, mut eventloop) =
            crate::ingest::connect_client(b.host.clone(), b.port, &b.device_id, Some(creds), 10)
                .await?;
        let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        links.push((b.device_id.clone(), client, task));
    }
    let press_time = Duration::from_secs_f64(buttons.len() as f64 / load.presses_per_s);
    let bg = tokio::spawn(load::run_mix(
        LoadConfig {
            devices: load.devices.to_vec(),
            rate: load.rate,
            duration: press_time + Duration::from_secs(4),
            progress: false,
        },
        Mix::WARD,
    ));
    // Let the background load reach its rate before the first press.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / load.presses_per_s));
    for (device_id, client, _) in &links {
        tick.tick().await;
        lock(timings)?
            .pressed
            .insert(device_id.clone(), Instant::now());
        client
            .publish(
                device_topic(device_id, MessageKind::Sos),
                QoS::AtLeastOnce,
                false,
                "{}",
            )
            .await?;
    }
    let bg = bg.await??;
    let all_seen = || {
        lock(timings)
            .map(|t| t.latencies_ms.len() >= buttons.len())
            .unwrap_or(true)
    };
    crate::ingest::wait_for(all_seen, Duration::from_secs(30)).await;
    for (_, client, task) in links {
        let _ = client.try_disconnect();
        task.abort();
    }
    let mut t = lock(timings)?;
    let bg_ok = bg.errors == 0 && bg.connect_errors == 0 && bg.acked == bg.sent;
    Ok(AlertLatency {
        background_rate: load.rate,
        background_sustained: bg_ok,
        alerts_sent: buttons.len(),
        alerts_seen: t.latencies_ms.len(),
        latency_ms: Quantiles::of(&mut t.latencies_ms),
        in_hub_ms: Quantiles::of(&mut t.in_hub_ms),
    })
}

fn lock(t: &Mutex<Timings>) -> Result<std::sync::MutexGuard<'_, Timings>> {
    t.lock().map_err(|_| anyhow!("timing table poisoned"))
}

/// Notes the latency of the first open SOS frame of each pressed device.
fn record(timings: &Mutex<Timings>, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if frame["type"] != "alert" || frame["alert"]["kind"] != "sos" {
        return;
    }
    let Some(device) = frame["alert"]["device_id"].as_str() else {
        return;
    };
    let opened = frame["alert"]["opened_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    arrived(timings, device, opened);
}

/// Notes the latency of a press's first sighting, and the part after `opened`, if given.
fn arrived(
    timings: &Mutex<Timings>,
    device: &str,
    opened: Option<chrono::DateTime<chrono::FixedOffset>>,
) {
    let now = chrono::Utc::now();
    if let Ok(mut t) = timings.lock() {
        if let Some(pressed) = t.pressed.remove(device) {
            t.latencies_ms
                .push(pressed.elapsed().as_secs_f64() * 1000.0);
            if let Some(opened) = opened {
                let in_hub = now.signed_duration_since(opened);
                t.in_hub_ms
                    .push(in_hub.num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
}
