//! The gateways' device maps the edge holds in memory — Zigbee2MQTT names, LoRaWAN
//! registrations, BLE receivers and tags, ECHONET Lite objects — and the one place they
//! are refreshed from the store.
//!
//! A staff call that changes a map names the change ([`MapChange`]); [`reload`] reads
//! what it touched back from the store into the maps. In cluster mode every hub holds
//! its own copy, so the change is also announced to the other hubs, which reload the
//! same way ([`crate::cluster::maps`]).

use serde::{Deserialize, Serialize};

use super::EdgeCtx;
use crate::store::StoreResult;

/// What changed in the store that a map mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "map", rename_all = "snake_case")]
pub enum MapChange {
    /// The Zigbee2MQTT names of one gateway.
    Zigbee {
        gateway: String,
    },
    /// The LoRaWAN registrations of one gateway.
    Lorawan {
        gateway: String,
    },
    BleReceivers,
    BleTags,
    Echonet,
    /// A device was deleted: it leaves every map, and its connections here close.
    DeviceRemoved {
        device: String,
    },
    /// Everything, as at start (and after a hub may have missed announcements).
    All,
}

/// Brings the maps `change` touched in line with the store.
pub async fn reload(edge: &EdgeCtx, change: &MapChange) -> StoreResult<()> {
    let (store, ingest) = (&edge.store, &edge.ingest);
    match change {
        MapChange::Zigbee { gateway } => {
            let rows = store.zigbee_devices(Some(gateway)).await?;
            ingest.zigbee().replace_gateway(gateway, &rows);
        }
        MapChange::Lorawan { gateway } => {
            let rows = store.lorawan_devices(Some(gateway)).await?;
            ingest.lorawan().replace_gateway(gateway, &rows);
        }
        MapChange::BleReceivers => ingest.ble().replace_receivers(&store.receivers().await?),
        MapChange::BleTags => ingest.ble().replace_tags(&store.ble_tags().await?),
        MapChange::Echonet => ingest
            .echonet()
            .replace_all(&store.echonet_devices(None).await?),
        MapChange::DeviceRemoved { device } => {
            edge.kick(device);
            ingest.zigbee().forget_device(device);
            ingest.lorawan().forget_device(device);
            ingest.ble().forget_device(device);
            ingest.echonet().forget_device(device);
        }
        MapChange::All => {
            ingest
                .zigbee()
                .replace_all(&store.zigbee_devices(None).await?);
            ingest
                .lorawan()
                .replace_all(&store.lorawan_devices(None).await?);
            ingest.ble().replace_receivers(&store.receivers().await?);
            ingest.ble().replace_tags(&store.ble_tags().await?);
            ingest
                .echonet()
                .replace_all(&store.echonet_devices(None).await?);
        }
    }
    Ok(())
}
