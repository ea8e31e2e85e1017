//! Ingest: turns what a device published into a validated [`DeviceEvent`] or a
//! counted, dead-lettered rejection, and hands it to the pipeline.
//!
//! Classification runs on the connection's own task, so a flood of bad messages
//! from one device costs that device's task, not the hub's single writer. Each
//! adapter is a module beside this one and yields the same events, so nothing
//! downstream knows where a reading came from: [`native`] (`watch/v1/…`),
//! [`zigbee2mqtt`] (`zigbee2mqtt/{gateway}/…`), [`chirpstack`] (`application/…`, the
//! LoRaWAN devices of [`lorawan`]), [`ble`] sightings (`espresense/…` and the native
//! `watch/v1/{receiver}/sighting`), [`echonet`] (`echonetlite2mqtt/{gateway}/…`), [`owntracks`] (`owntracks/{device}/…`) over MQTT,
//! and [`osmand`] over HTTP; [`tts`] for the uplinks the hub's own client takes from
//! The Things Stack. The topic's first level picks the adapter.

pub mod ble;
pub mod chirpstack;
pub mod echonet;
pub mod lorawan;
pub mod native;
pub mod osmand;
pub mod owntracks;
pub mod tts;
pub mod zigbee2mqtt;

use std::sync::Arc;

use chrono::{DateTime, Utc};
pub(crate) use mimamori_protocol::native::check_size;
use mimamori_protocol::native::{RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::RejectedRow;

/// The device a message came from, as its CONNECT established.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCtx {
    pub id: String,
    pub resident_id: i64,
    pub kind: DeviceKind,
}

/// The prelude every adapter of a client's topics shares: only devices of `kind` publish
/// `what` ("Zigbee2MQTT messages"), and no payload is larger than the native protocol's.
pub(crate) fn check_publisher(
    device: &DeviceCtx,
    kind: DeviceKind,
    what: &str,
    payload: &[u8],
) -> Result<(), Rejection> {
    if device.kind != kind {
        return Err(Rejection::new(
            RejectReason::NotAuthorized,
            format!(
                "{} is a {} device; only {} devices publish {what}",
                device.id,
                device.kind.as_str(),
                kind.as_str()
            ),
        ));
    }
    check_size(payload)
}

/// The rest of `topic` below a device's own `base` (given without its last `/`), or the
/// refusal that names the base the device may publish under.
pub(crate) fn below<'t>(topic: &'t str, base: &str, device_id: &str) -> Result<&'t str, Rejection> {
    topic
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::NotAuthorized,
                format!("{device_id} may publish only under {base}/"),
            )
        })
}

/// What became of one message.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Item {
    Accepted(DeviceEvent),
    Rejected(RejectedRow),
    /// Valid but of no use to the rules (e.g. Zigbee2MQTT bridge messages): nothing is stored.
    Ignored,
}

/// An item on its way to the pipeline; `ack` fires once it is durably stored.
#[derive(Debug)]
pub struct Envelope {
    pub item: Item,
    pub ack: Option<oneshot::Sender<bool>>,
    /// Its place in the cluster's event log; 0 on a single hub.
    pub seq: u64,
}

/// Bytes of a refused payload kept in the dead-letter table.
const DEAD_LETTER_EXCERPT: usize = 512;

/// The handle through which the edge and the HTTP adapters feed the pipeline.
///
/// Two lanes: an SOS press decides an alert by itself, so it goes on the urgent lane,
/// which the pipeline takes first and commits on its own instead of behind the readings
/// queued before it. Every other item takes the bulk lane, in order: a will must not
/// overtake the device's last messages (they would resolve it as "reported again").
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Envelope>,
    urgent: mpsc::Sender<Envelope>,
    clock: Arc<dyn Clock>,
    zigbee: zigbee2mqtt::ZigbeeMap,
    lorawan: lorawan::LoraMap,
    ble: ble::BleMap,
    echonet: echonet::EchonetMap,
    /// How old a reading's `ts` may be before the message is refused.
    max_age: chrono::Duration,
    /// How many dead letters of unauthenticated requests are kept, and how many not.
    anonymous: Arc<std::sync::Mutex<AnonymousLetters>>,
}

/// Unauthenticated requests cost nothing to send: a flood of them is kept as a sample
/// of [`ANONYMOUS_PER_MINUTE`] a minute, the next kept one saying how many were not.
#[derive(Default)]
struct AnonymousLetters {
    window_start: Option<DateTime<Utc>>,
    kept: u32,
    dropped: u64,
}

/// Dead letters of unauthenticated requests kept per minute.
pub const ANONYMOUS_PER_MINUTE: u32 = 60;

impl AnonymousLetters {
    /// Whether to keep one now; `Some(n)` with the number left out before it.
    fn admit(&mut self, now: DateTime<Utc>) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now - start >= chrono::Duration::minutes(1));
        if fresh {
            self.window_start = Some(now);
            self.kept = 0;
        }
        if self.kept >= ANONYMOUS_PER_MINUTE {
            self.dropped += 1;
            return None;
        }
        self.kept += 1;
        Some(std::mem::take(&mut self.dropped))
    }
}

/// Whether an item decides an alert at once, whatever else the batch holds.
pub fn is_urgent(item: &Item) -> bool {
    matches!(item, Item::Accepted(ev) if ev.reading == Reading::Sos)
}

impl Ingest {
    pub fn new(
        tx: mpsc::Sender<Envelope>,
        urgent: mpsc::Sender<Envelope>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Ingest {
            tx,
            urgent,
            clock,
            zigbee: zigbee2mqtt::ZigbeeMap::default(),
            lorawan: lorawan::LoraMap::default(),
            ble: ble::BleMap::default(),
            echonet: echonet::EchonetMap::default(),
            max_age: mimamori_protocol::native::MAX_AGE,
            anonymous: Arc::default(),
        }
    }

    /// Sets how old a reading's `ts` may be (`stale_timestamp` beyond).
    pub fn set_max_age(&mut self, max_age: chrono::Duration) {
        self.max_age = max_age;
    }

    /// The Zigbee2MQTT mappings every connection reads; the API replaces them on change.
    pub fn zigbee(&self) -> &zigbee2mqtt::ZigbeeMap {
        &self.zigbee
    }

    /// The LoRaWAN registrations every connection reads; the API replaces them on change.
    pub fn lorawan(&self) -> &lorawan::LoraMap {
        &self.lorawan
    }

    /// The BLE receivers and tags every connection reads; the API replaces them on change.
    pub fn ble(&self) -> &ble::BleMap {
        &self.ble
    }

    /// The ECHONET Lite mappings every connection reads; the API replaces them on change.
    pub fn echonet(&self) -> &echonet::EchonetMap {
        &self.echonet
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Validates a message a device published on `topic`.
    pub fn classify(&self, device: &DeviceCtx, topic: &str, payload: &[u8]) -> Item {
        let now = self.now();
        let root = topic.split('/').next().unwrap_or_default();
        let outcome = match root {
            zigbee2mqtt::ROOT => self.zigbee.classify(device, topic, payload, now),
            owntracks::ROOT => owntracks::classify(device, topic, payload, now),
            chirpstack::ROOT => chirpstack::classify(&self.lorawan, device, topic, payload, now),
            ble::ESPRESENSE_ROOT => self.ble.classify_espresense(device, topic, payload, now),
            echonet::ROOT => self.echonet.classify(device, topic, payload, now),
            _ if device.kind == DeviceKind::Receiver
                && topic.rsplit('/').next() == Some(ble::SIGHTING_KIND) =>
            {
                self.ble.classify_native(device, topic, payload, now)
            }
            _ => native::classify(device, topic, payload, now, self.max_age).map(Some),
        };

        match outcome {
            Ok(Some(ev)) => Item::Accepted(ev),
            Ok(None) => Item::Ignored,
            Err(r) => Item::Rejected(dead_letter(Some(&device.id), topic, payload, r, now)),
        }
    }

    /// A dead letter for a message refused before classification (e.g. an ACL violation).
    pub fn refuse(
        &self,
        who: Option<&str>,
        topic: &str,
        payload: &[u8],
        reason: RejectReason,
        detail: String,
    ) -> Item {
        Item::Rejected(dead_letter(
            who,
            topic,
            payload,
            Rejection::new(reason, detail),
            self.now(),
        ))
    }

    /// A dead letter for a request nobody authenticated, within the sampling of
    /// [`AnonymousLetters`]; `None` when this one is only counted.
    pub fn refuse_anonymous(
        &self,
        topic: &str,
        payload: &[u8],
        reason: RejectReason,
        detail: String,
    ) -> Option<Item> {
        let now = self.now();
        let left_out = self
            .anonymous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(now)?;
        let detail = match left_out {
            0 => detail,
            n => format!("{detail} (and {n} more unauthenticated refusals before it, not kept)"),
        };
        Some(self.refuse(None, topic, payload, reason, detail))
    }

    /// Queues an item; with `want_ack`, returns a receiver that fires once it is stored.
    /// Waits while the pipeline is full, which slows only the submitting connection.
    pub async fn submit(&self, item: Item, want_ack: bool) -> Option<oneshot::Receiver<bool>> {
        let (ack, rx) = if want_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let lane = if is_urgent(&item) {
            &self.urgent
        } else {
            &self.tx
        };
        if lane.send(Envelope { item, ack, seq: 0 }).await.is_err() {
            return None;
        }
        rx
    }
}

fn dead_letter(
    who: Option<&str>,
    topic: &str,
    payload: &[u8],
    r: Rejection,
    now: DateTime<Utc>,
) -> RejectedRow {
    let excerpt = &payload[..payload.len().min(DEAD_LETTER_EXCERPT)];
    RejectedRow {
        received_at: now,
        device_id: who.map(str::to_string),
        topic: topic.chars().take(256).collect(),
        reason: r.reason,
        detail: r.detail,
        payload: String::from_utf8_lossy(excerpt).into_owned(),
    }
}

#[cfg(test)]
mod anonymous_tests {
    use super::*;

    #[test]
    fn a_flood_of_anonymous_letters_is_sampled_and_the_next_kept_one_counts_the_rest() {
        let mut letters = AnonymousLetters::default();
        let t0 = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let kept = (0..1000).filter(|_| letters.admit(t0).is_some()).count();
        assert_eq!(kept, ANONYMOUS_PER_MINUTE as usize);
        let later = t0 + chrono::Duration::seconds(61);
        assert_eq!(
            letters.admit(later),
            Some(1000 - u64::from(ANONYMOUS_PER_MINUTE))
        );
        assert_eq!(letters.admit(later), Some(0));
    }
}
