//! Keeps OwnTracks phones told of their resident's safe zones.
//!
//! A phone names itself only in its topics (`owntracks/{device_id}/{phone}`), so the
//! edge learns the phone's command topic when it subscribes to it, and then publishes
//! the resident's zones there as a retained `setWaypoints`: retained, so that the
//! router hands it over whether the subscription or the publish reaches it first.
//! When zones change, every known phone of the resident gets `clearWaypoints` and
//! the new list. Which phones are known lives in memory: after a restart each phone
//! subscribes again when it reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mimamori_protocol::DeviceKind;
use tracing::{debug, warn};

use super::router::HubPublisher;
use crate::ingest::owntracks;
use crate::store::Store;

pub struct Waypoints {
    store: Arc<dyn Store>,
    publisher: HubPublisher,
    /// device id -> phone name, from the phone's subscription to its command topic.
    phones: Mutex<HashMap<String, String>>,
}

impl Waypoints {
    pub fn new(store: Arc<dyn Store>, publisher: HubPublisher) -> Self {
        Waypoints {
            store,
            publisher,
            phones: Mutex::new(HashMap::new()),
        }
    }

    /// A phone subscribed to its command topic: remember it and send its zones.
    pub async fn phone_subscribed(&self, device_id: &str, resident_id: i64, phone: &str) {
        self.lock().insert(device_id.to_string(), phone.to_string());
        self.send(device_id, phone, resident_id, false).await;
    }

    /// A resident's zones changed: tell each of their phones that is known.
    pub async fn zones_changed(&self, resident_id: i64) {
        let devices = match self.store.list_devices(Some(&[resident_id])).await {
            Ok(d) => d,
            Err(e) => {
                return warn!(resident = resident_id, error = %e, "cannot list phones to update their waypoints")
            }
        };
        let phones: Vec<(String, String)> = {
            let known = self.lock();
            devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Gps)
                .filter_map(|d| known.get(&d.id).map(|p| (d.id.clone(), p.clone())))
                .collect()
        };
        for (device_id, phone) in phones {
            self.send(&device_id, &phone, resident_id, true).await;
        }
    }

    async fn send(&self, device_id: &str, phone: &str, resident_id: i64, clear_first: bool) {
        let zones = match self.store.list_zones(resident_id).await {
            Ok(z) => z,
            Err(e) => {
                return warn!(resident = resident_id, error = %e, "cannot read zones for waypoints")
            }
        };
        let topic = owntracks::cmd_topic(device_id, phone);
        if clear_first {
            self.publisher
                .publish(topic.clone(), owntracks::clear_waypoints());
        }
        debug!(device = device_id, zones = zones.len(), "waypoints sent");
        self.publisher
            .publish_retained(topic, owntracks::set_waypoints(&zones));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map is still a consistent map: every update is a single insert.
        self.phones.lock().unwrap_or_else(|p| p.into_inner())
    }
}
