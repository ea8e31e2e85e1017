//! Creating simulated residents in the hub: the resident, a safe zone around the home and a
//! device for each role, keeping the MQTT credentials the hub issues. For `--as zigbee2mqtt`
//! each Zigbee sensor is also mapped, by friendly name, to its hub device on the home's gateway.

use anyhow::Result;
use mimamori_protocol::api::{LatLon, NewDevice, NewResident};
use rand::Rng;

use mimamori_protocol::gateway::{
    NewBleTag, NewEchonetDevice, NewLorawanDevice, NewReceiver, NewZigbeeDevice,
};

use crate::client::{
    dev_eui, echonet_id, friendly_name, tag_id, Carrier, Client, HOME_RANGE_M, HOME_ROOM,
    TOWN_PLACE, TOWN_RANGE_M,
};
use crate::fleet::{Fleet, FleetDevice, FleetResident, FORMAT_VERSION};
use crate::home::{self, HomeGeo, Role};
use crate::hub::HubApi;

pub const TIMEZONE: &str = "Asia/Tokyo";

/// Creates one resident with its zone and devices. Rules stay at the hub's real-time
/// defaults until a run sets its own.
pub async fn resident(
    api: &HubApi,
    name: String,
    geo: HomeGeo,
    roles: &[Role],
    client: Client,
) -> Result<FleetResident> {
    let body = NewResident {
        name: name.clone(),
        timezone: Some(TIMEZONE.into()),
        home: Some(geo.home),
        rules: None,
    };
    let r = api.create_resident(&body).await?;
    api.create_zone(r.id, &geo.zone).await?;
    let mut all = roles.to_vec();
    all.extend(client.extra_roles(roles));
    let mut devices = Vec::with_capacity(all.len());
    for role in &all {
        let created = api
            .create_device(&NewDevice {
                resident_id: r.id,
                kind: client.kind_of(*role),
                name: role.label(),
                room: None,
                role: None,
            })
            .await?;
        devices.push(FleetDevice {
            id: created.id,
            kind: created.kind,
            role: *role,
            name: created.name,
            mqtt: created.mqtt,
            friendly_name: None,
        });
    }
    map_zigbee(api, client, &mut devices).await?;
    register_lorawan(api, client, &devices).await?;
    map_echonet(api, client, &devices).await?;
    register_ble(api, client, &geo, &devices).await?;
    Ok(FleetResident {
        id: r.id,
        name,
        timezone: TIMEZONE.into(),
        geo,
        devices,
    })
}

/// Maps every Zigbee device of a home to its hub device on the home's gateway.
async fn map_zigbee(api: &HubApi, client: Client, devices: &mut [FleetDevice]) -> Result<()> {
    let Some(gateway) = devices
        .iter()
        .find(|d| client.carrier(d.role) == Carrier::Zigbee2mqttBridge)
        .map(|d| d.id.clone())
    else {
        return Ok(());
    };
    for d in devices
        .iter_mut()
        .filter(|d| client.carrier(d.role) == Carrier::Zigbee)
    {
        let name = friendly_name(d.role);
        api.map_zigbee(
            &gateway,
            &NewZigbeeDevice {
                friendly_name: name.clone(),
                device_id: d.id.clone(),
                sos_actions: None,
                ok_actions: None,
            },
        )
        .await?;
        d.friendly_name = Some(name);
    }
    Ok(())
}

/// Registers every LoRaWAN device of a home by its DevEUI on the home's gateway, with the
/// field mapping's defaults (the simulated codec uses the default names).
async fn register_lorawan(api: &HubApi, client: Client, devices: &[FleetDevice]) -> Result<()> {
    let Some(gateway) = devices
        .iter()
        .find(|d| client.carrier(d.role) == Carrier::ChirpstackBridge)
    else {
        return Ok(());
    };
    for d in devices
        .iter()
        .filter(|d| client.carrier(d.role) == Carrier::Lorawan)
    {
        let body = NewLorawanDevice {
            dev_eui: dev_eui(&d.id),
            device_id: d.id.clone(),
            fields: None,
            profile: None,
        };
        api.register_lorawan(&gateway.id, &body).await?;
    }
    Ok(())
}

/// Maps every ECHONET Lite device of a home, by the id echonetlite2mqtt names it by, to its
/// hub device on the home's gateway.
async fn map_echonet(api: &HubApi, client: Client, devices: &[FleetDevice]) -> Result<()> {
    let Some(gateway) = devices
        .iter()
        .find(|d| client.carrier(d.role) == Carrier::EchonetBridge)
    else {
        return Ok(());
    };
    for d in devices
        .iter()
        .filter(|d| client.carrier(d.role) == Carrier::Echonet)
    {
        let body = NewEchonetDevice {
            echonet_id: echonet_id(d.role, &d.id),
            device_id: d.id.clone(),
            activity_above_w: None,
        };
        api.map_echonet(&gateway.id, &body).await?;
    }
    Ok(())
}

/// Gives the home's tag its id, the home's ESPresense node its room and place at the home,
/// and the volunteers' app its range (it sends its own position).
async fn register_ble(
    api: &HubApi,
    client: Client,
    geo: &HomeGeo,
    devices: &[FleetDevice],
) -> Result<()> {
    for d in devices {
        match client.carrier(d.role) {
            Carrier::Tag => {
                let tag = NewBleTag {
                    tag_id: tag_id(&d.id),
                };
                api.register_tag(&d.id, &tag).await?;
            }
            Carrier::Espresense => {
                let node = NewReceiver {
                    place: "home".into(),
                    room: Some(HOME_ROOM.into()),
                    lat: Some(geo.home.lat),
                    lon: Some(geo.home.lon),
                    range_m: Some(HOME_RANGE_M),
                };
                api.put_receiver(&d.id, &node).await?;
            }
            _ if d.role == Role::TownReceiver => {
                let app = NewReceiver {
                    place: TOWN_PLACE.into(),
                    room: None,
                    lat: None,
                    lon: None,
                    range_m: Some(TOWN_RANGE_M),
                };
                api.put_receiver(&d.id, &app).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What `provision` makes.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub residents: usize,
    pub centre: LatLon,
    pub spread_m: f64,
    pub gps_share: f64,
    pub polygon_share: f64,
    pub seed: u64,
    pub client: Client,
}

/// Creates the whole fleet, reporting each resident as it is made.
pub async fn fleet(
    api: &HubApi,
    rng: &mut impl Rng,
    spec: &FleetSpec,
    hub: &str,
    mqtt: &str,
    mut made: impl FnMut(&FleetResident),
) -> Result<Fleet> {
    let mut residents: Vec<FleetResident> = Vec::with_capacity(spec.residents);
    for _ in 0..spec.residents {
        let name = unique_name(rng, |n| residents.iter().any(|r| r.name == n));
        let geo = home::place_home(rng, spec.centre, spec.spread_m, spec.polygon_share);
        let roles = Role::home_set(rng.gen_bool(spec.gps_share.clamp(0.0, 1.0)));
        let r = resident(api, name, geo, &roles, spec.client).await?;
        made(&r);
        residents.push(r);
    }
    Ok(Fleet {
        version: FORMAT_VERSION,
        hub: hub.into(),
        mqtt: mqtt.into(),
        centre: spec.centre,
        seed: spec.seed,
        client: spec.client,
        residents,
        scenario_residents: Default::default(),
    })
}

/// A resident name that `taken` says nobody has yet: redrawn a few times, then numbered.
pub fn unique_name(rng: &mut impl Rng, taken: impl Fn(&str) -> bool) -> String {
    let mut name = home::resident_name(rng);
    for _ in 0..20 {
        if !taken(&name) {
            return name;
        }
        name = home::resident_name(rng);
    }
    let base = name.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{base} {n}");
        n += 1;
    }
    name
}
