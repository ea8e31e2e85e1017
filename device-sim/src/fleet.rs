//! The fleet file: every simulated resident with their home, safe zone and the MQTT
//! credentials the hub issued for each device. `provision` writes it, `run` reads it, and
//! integrators can take credentials from it for devices of their own.
//!
//! With `run --same-residents` it also keeps the residents that played each scenario, so
//! that a demo played over and over stays the same neighbourhood.
//!
//! The file holds device secrets: it is written readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use mimamori_protocol::api::{LatLon, MqttCredentials};
use mimamori_protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::home::{HomeGeo, Role};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub version: u32,
    /// The hub's HTTP base address.
    pub hub: String,
    /// The hub's MQTT address, `host:port`.
    pub mqtt: String,
    pub centre: LatLon,
    pub seed: u64,
    /// The client the devices speak as (`--as`); files without it are native.
    #[serde(rename = "as", default)]
    pub client: Client,
    pub residents: Vec<FleetResident>,
    /// The residents `run --same-residents` plays each scenario with, by scenario name:
    /// created on the first such run, reused by every later one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scenario_residents: BTreeMap<String, FleetResident>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetResident {
    pub id: i64,
    pub name: String,
    pub timezone: String,
    pub geo: HomeGeo,
    pub devices: Vec<FleetDevice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetDevice {
    pub id: String,
    pub kind: DeviceKind,
    pub role: Role,
    pub name: String,
    pub mqtt: MqttCredentials,
    /// Its `friendly_name` on the home's Zigbee2MQTT gateway, when it is a Zigbee device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
}

impl FleetResident {
    pub fn roles(&self) -> Vec<Role> {
        self.devices.iter().map(|d| d.role).collect()
    }
}

impl Fleet {
    pub fn load(path: &Path) -> Result<Fleet> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the fleet file {}", path.display()))?;
        let fleet: Fleet = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fleet file", path.display()))?;
        if fleet.version != FORMAT_VERSION {
            bail!(
                "{} has format version {}, this simulator reads {FORMAT_VERSION}",
                path.display(),
                fleet.version
            );
        }
        Ok(fleet)
    }

    /// Writes the file with owner-only permissions, replacing any earlier one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .with_context(|| format!("cannot write the fleet file {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        Ok(())
    }
}
