//! History for a fleet: the motion its residents' homes would have seen over the last days,
//! sent now with each reading's own past `ts`, so that the hub's rhythm chart and daily
//! summaries have a week to show before the first live day is played.
//!
//! Only motion is backdated. Readings with a past `ts` are stored and counted where they
//! happened, and the rules take the newest one as the last activity; doors, positions and
//! button presses from the past would replay situations (an exit at night, an SOS) that
//! nobody could act on any more. Each motion sensor connects with its own credentials and
//! publishes natively, whatever client the fleet speaks as live.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Timelike, Utc};
use mimamori_protocol::native::{MotionPayload, Timestamp};
use mimamori_protocol::topic::{device_topic, MessageKind};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetResident};
use crate::home::Role;
use crate::life::DAY;
use crate::mqtt::{Counters, DeviceLink, DeviceLogin, Speech};
use crate::scenario;
use crate::timeline::Msg;

/// A backdated reading: which device, its topic and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Backdated {
    pub device_id: String,
    pub topic: String,
    pub payload: String,
}

/// What a backfill sent.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillReport {
    pub residents: usize,
    pub days: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
}

/// The motion readings of one resident's last `days` up to `now`, in time order; pure: the
/// same seed and `now` give the same readings.
pub fn history(r: &FleetResident, seed: u64, days: f64, now: DateTime<Utc>) -> Vec<Backdated> {
    let span_ms = (days * DAY * 1000.0) as i64;
    let start = now - chrono::Duration::milliseconds(span_ms);
    let tz: chrono_tz::Tz = r.timezone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    let local = start.with_timezone(&tz);
    let start_tod = f64::from(local.num_seconds_from_midnight());
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(r.id as u64));
    let act = scenario::daily(&mut rng, &r.geo, &r.roles(), start_tod, days);
    let id_of: BTreeMap<Role, &str> = r.devices.iter().map(|d| (d.role, d.id.as_str())).collect();
    act.timeline
        .emissions
        .iter()
        .filter(|e| e.at >= 0.0 && e.at < days * DAY)
        .filter_map(|e| {
            let Msg::Motion { motion, room, .. } = &e.msg else {
                return None;
            };
            let id = id_of.get(&e.role)?;
            let ts = start + chrono::Duration::milliseconds((e.at * 1000.0) as i64);
            let payload = serde_json::to_string(&MotionPayload {
                ts: Some(Timestamp(ts)),
                motion: *motion,
                room: Some(room.clone()),
                battery: None,
            })
            .ok()?;
            Some(Backdated {
                device_id: (*id).to_string(),
                topic: device_topic(id, MessageKind::Motion),
                payload,
            })
        })
        .collect()
}

/// Sends the history of every resident of the fleet and waits for the hub's acks.
pub async fn run(
    fleet: &Fleet,
    mqtt_host: &str,
    mqtt_port: u16,
    days: f64,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<BackfillReport> {
    let counters = Arc::new(Counters::default());
    let mut set = JoinSet::new();
    for r in &fleet.residents {
        let mut by_device: BTreeMap<String, Vec<Backdated>> = BTreeMap::new();
        for b in history(r, seed, days, now) {
            by_device.entry(b.device_id.clone()).or_default().push(b);
        }
        for d in &r.devices {
            let Some(readings) = by_device.remove(&d.id) else {
                continue;
            };
            let login = DeviceLogin {
                host: mqtt_host.to_string(),
                port: mqtt_port,
                device_id: d.id.clone(),
                password: d.mqtt.password.clone(),
            };
            let (counters, speech) = (counters.clone(), Speech::native(&d.id));
            set.spawn(async move {
                let link = DeviceLink::connect(login, speech, counters).await?;
                for b in readings {
                    link.publish_to(&b.topic, b.payload, false).await?;
                }
                Ok::<_, anyhow::Error>(link)
            });
        }
    }
    let mut links = Vec::new();
    while let Some(done) = set.join_next().await {
        links.push(done??);
    }
    settle(&counters, Duration::from_secs(60)).await;
    for link in links {
        link.close().await;
    }
    Ok(BackfillReport {
        residents: fleet.residents.len(),
        days,
        sent: counters.sent.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
    })
}

/// Waits until the hub acknowledged what was sent, or `within` passed.
async fn settle(c: &Counters, within: Duration) {
    let until = Instant::now() + within;
    while c.acked.load(Ordering::Relaxed) + c.errors.load(Ordering::Relaxed)
        < c.sent.load(Ordering::Relaxed)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::{self, HomeGeo};
    use mimamori_protocol::api::{LatLon, MqttCredentials};

    fn resident(geo: HomeGeo) -> FleetResident {
        let devices = Role::home_set(false)
            .into_iter()
            .enumerate()
            .map(|(i, role)| crate::fleet::FleetDevice {
                id: format!("dev-{i}"),
                kind: role.kind(),
                role,
                name: role.label(),
                mqtt: MqttCredentials {
                    username: format!("dev-{i}"),
                    password: "secret".into(),
                    topic_prefix: format!("watch/v1/dev-{i}/"),
                },
                friendly_name: None,
            })
            .collect();
        FleetResident {
            id: 4,
            name: "Sato Hanako".into(),
            timezone: "Asia/Tokyo".into(),
            geo,
            devices,
        }
    }

    #[test]
    fn a_week_of_history_is_motion_every_day_and_all_in_the_past() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(3);
        let geo = home::place_home(
            &mut rng,
            LatLon {
                lat: 35.7,
                lon: 139.66,
            },
            1000.0,
            0.0,
        );
        let r = resident(geo);
        let now = DateTime::parse_from_rfc3339("2026-05-04T03:00:00Z")?.with_timezone(&Utc);
        let h = history(&r, 7, 7.0, now);
        assert_eq!(h, history(&r, 7, 7.0, now), "the same seed, the same week");
        let mut days = std::collections::BTreeSet::new();
        for b in &h {
            assert!(b.topic.ends_with("/motion"), "{}", b.topic);
            let v: serde_json::Value = serde_json::from_str(&b.payload)?;
            let ts = v["ts"].as_i64().unwrap_or(i64::MAX);
            assert!(ts < now.timestamp_millis(), "{ts} is not in the past");
            assert!(ts >= (now - chrono::Duration::days(7)).timestamp_millis());
            if v["motion"] == true {
                days.insert(ts / 86_400_000);
            }
        }
        assert!(days.len() >= 7, "motion on {} days only", days.len());
        Ok(())
    }
}
