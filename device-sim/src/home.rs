//! A simulated home: which devices it has and what each one watches, its safe zone, and the
//! resident's name. Homes in ward programmes have PIR sensors in the rooms that matter, a door
//! contact at the entrance, a gateway box, an SOS pendant, and sometimes a GPS tracker.

use mimamori_protocol::api::LatLon;
use mimamori_protocol::zone::{Circle, GeoJsonPolygon, NewZone};
use mimamori_protocol::DeviceKind;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::geo::{self, Xy};

/// A room with a PIR motion sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Room {
    Bedroom,
    Kitchen,
    Bathroom,
    LivingRoom,
}

impl Room {
    pub const ALL: [Room; 4] = [
        Room::Bedroom,
        Room::Kitchen,
        Room::Bathroom,
        Room::LivingRoom,
    ];

    /// The `room` field of the sensor's motion messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Room::Bedroom => "bedroom",
            Room::Kitchen => "kitchen",
            Room::Bathroom => "bathroom",
            Room::LivingRoom => "living_room",
        }
    }
}

/// What a device in a home does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A PIR motion sensor in a room.
    Motion(Room),
    /// The contact sensor on the entrance door.
    EntranceDoor,
    /// The home's gateway box (mains powered, always on).
    Gateway,
    /// The SOS pendant.
    Button,
    /// The GPS tracker the resident carries (under `--as ble`, a BLE tag instead).
    Tracker,
    /// The ESPresense node at home that hears the resident's tag (`--as ble`).
    HomeReceiver,
    /// The town's watch-over app on volunteers' phones, which hears the tag outside and
    /// sends the phone's own position with each sighting (`--as ble`).
    TownReceiver,
}

impl Role {
    /// The device kind the hub registers for this role.
    pub fn kind(self) -> DeviceKind {
        match self {
            Role::Motion(_) => DeviceKind::Motion,
            Role::EntranceDoor => DeviceKind::Door,
            Role::Gateway => DeviceKind::Gateway,
            Role::Button => DeviceKind::Button,
            Role::Tracker => DeviceKind::Gps,
            Role::HomeReceiver | Role::TownReceiver => DeviceKind::Receiver,
        }
    }

    /// The device's name in the hub.
    pub fn label(self) -> String {
        match self {
            Role::Motion(r) => format!("{} motion sensor", r.as_str().replace('_', " ")),
            Role::EntranceDoor => "entrance door sensor".into(),
            Role::Gateway => "home gateway".into(),
            Role::Button => "SOS pendant".into(),
            Role::Tracker => "GPS tracker".into(),
            Role::HomeReceiver => "home BLE receiver".into(),
            Role::TownReceiver => "volunteer app".into(),
        }
    }

    /// Always on, with no battery to report: the gateway box and the receivers.
    pub fn mains_powered(self) -> bool {
        matches!(
            self,
            Role::Gateway | Role::HomeReceiver | Role::TownReceiver
        )
    }

    /// Every device of a home, with or without a tracker.
    pub fn home_set(with_tracker: bool) -> Vec<Role> {
        let mut roles: Vec<Role> = Room::ALL.into_iter().map(Role::Motion).collect();
        roles.extend([Role::EntranceDoor, Role::Gateway, Role::Button]);
        if with_tracker {
            roles.push(Role::Tracker);
        }
        roles
    }
}

/// Where a home is and the safe zone around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomeGeo {
    pub home: LatLon,
    /// Every point this close to home lies inside the safe zone; normal outings stay well within.
    pub safe_radius_m: f64,
    /// The zone as registered with the hub.
    pub zone: NewZone,
    /// Bearing of the street grid around the home, in radians.
    pub street_bearing: f64,
}

/// A home placed at random within `spread_m` of `centre`, with a circle zone or, for a
/// `polygon_share` of homes, an irregular polygon (a neighbourhood drawn on a map).
pub fn place_home(
    rng: &mut impl Rng,
    centre: LatLon,
    spread_m: f64,
    polygon_share: f64,
) -> HomeGeo {
    let r = spread_m * rng.gen_range(0.0f64..1.0).sqrt();
    let home = geo::offset(
        centre,
        Xy::polar(r, rng.gen_range(0.0..std::f64::consts::TAU)),
    );
    let safe_radius_m = rng.gen_range(220.0..420.0f64).round();
    let zone = if rng.gen_bool(polygon_share.clamp(0.0, 1.0)) {
        polygon_zone(rng, home, safe_radius_m)
    } else {
        circle_zone(home, safe_radius_m)
    };
    HomeGeo {
        home,
        safe_radius_m,
        zone,
        street_bearing: rng.gen_range(0.0..std::f64::consts::FRAC_PI_2),
    }
}

pub fn circle_zone(home: LatLon, radius_m: f64) -> NewZone {
    NewZone {
        name: "around home".into(),
        polygon: None,
        circle: Some(Circle {
            lat: home.lat,
            lon: home.lon,
            radius_m,
        }),
    }
}

/// A ten-sided polygon whose vertices lie 1.1–1.4 × `inner_m` from home. With ten evenly spaced
/// vertices every edge then stays more than `inner_m` from home, so the circle of radius
/// `inner_m` lies inside it (the closest edge, both ends at 1.1, is 1.1·cos 18° ≈ 1.05 away).
pub fn polygon_zone(rng: &mut impl Rng, home: LatLon, inner_m: f64) -> NewZone {
    const N: usize = 10;
    let mut ring: Vec<Vec<f64>> = (0..N)
        .map(|i| {
            let angle = std::f64::consts::TAU * i as f64 / N as f64;
            let p = geo::offset(home, Xy::polar(inner_m * rng.gen_range(1.1..1.4), angle));
            vec![p.lon, p.lat]
        })
        .collect();
    ring.push(ring[0].clone());
    NewZone {
        name: "neighbourhood".into(),
        polygon: Some(GeoJsonPolygon {
            kind: "Polygon".into(),
            coordinates: vec![ring],
        }),
        circle: None,
    }
}

const FAMILY: [&str; 16] = [
    "Sato",
    "Suzuki",
    "Takahashi",
    "Tanaka",
    "Watanabe",
    "Ito",
    "Yamamoto",
    "Nakamura",
    "Kobayashi",
    "Kato",
    "Yoshida",
    "Yamada",
    "Sasaki",
    "Yamaguchi",
    "Matsumoto",
    "Inoue",
];
const GIVEN: [&str; 16] = [
    "Hanako", "Kazuko", "Sachiko", "Fumiko", "Toshiko", "Michiko", "Yoshiko", "Setsuko", "Hiroshi",
    "Takeshi", "Shigeru", "Isamu", "Kiyoshi", "Minoru", "Osamu", "Saburo",
];

/// A plausible name for a resident of a Tokyo ward.
pub fn resident_name(rng: &mut impl Rng) -> String {
    let family = FAMILY.choose(rng).copied().unwrap_or("Sato");
    let given = GIVEN.choose(rng).copied().unwrap_or("Hanako");
    format!("{family} {given}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Distance from the origin to the segment a–b.
    fn seg_dist(a: Xy, b: Xy) -> f64 {
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let t = (-(a.x * dx + a.y * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
        Xy::new(a.x + t * dx, a.y + t * dy).norm()
    }

    #[test]
    fn polygon_zones_contain_their_safe_circle() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let h = place_home(
                &mut rng,
                LatLon {
                    lat: 35.7074,
                    lon: 139.6638,
                },
                1500.0,
                1.0,
            );
            let ring = &h
                .zone
                .polygon
                .as_ref()
                .map(|p| p.coordinates[0].clone())
                .unwrap_or_default();
            assert_eq!(ring.len(), 11);
            let pts: Vec<Xy> = ring
                .iter()
                .map(|c| {
                    geo::local(
                        h.home,
                        LatLon {
                            lat: c[1],
                            lon: c[0],
                        },
                    )
                })
                .collect();
            for w in pts.windows(2) {
                assert!(seg_dist(w[0], w[1]) > h.safe_radius_m, "edge too close");
            }
        }
    }
}
