//! Rules and the alert lifecycle, driven through the real hub over MQTT with
//! thresholds of seconds.

use std::time::Duration;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use reqwest::Method;
use rumqttc::{LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::helpers::*;

const HOME: (f64, f64) = (35.7074, 139.6638);
const WAIT: Duration = Duration::from_secs(30);

/// Rules that make every timer fire within seconds.
fn quick_rules(threshold_s: u64) -> Value {
    json!({
        "inactivity": {"day_threshold_s": threshold_s, "night_threshold_s": threshold_s, "morning_deadline": null},
        "offline": {"motion_s": 3600, "gps_s": 3600, "door_s": 3600, "button_s": 3600}
    })
}

fn time(v: &Value) -> Result<DateTime<Utc>> {
    let s = v.as_str().ok_or_else(|| anyhow!("not a time: {v}"))?;
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

#[tokio::test]
async fn inactivity_opens_at_its_threshold_and_resolves_when_motion_resumes() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub
        .resident(json!({"name": "Suzuki Ume", "rules": quick_rules(2)}))
        .await?;
    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"bathroom"}"#,
    )
    .await?;
    let last = hub
        .readings(rid)
        .await?
        .first()
        .map(|r| r["ts"].clone())
        .unwrap_or_default();

    let alert = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["details"]["threshold_s"], 2);
    assert_eq!(alert["details"]["room"], "bathroom");
    let late = time(&alert["opened_at"])? - time(&last)?;
    assert_eq!(
        late.num_milliseconds(),
        2000,
        "opened exactly at the threshold, not when a timer happened to poll"
    );

    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(resolved["resolved_by"], "hub");
    assert!(
        resolved["resolution"]
            .as_str()
            .unwrap_or_default()
            .starts_with("condition_cleared"),
        "{resolved}"
    );
    Ok(())
}

#[tokio::test]
async fn sqlite_inactivity_timer_survives_sigkill_and_fires_once_at_its_deadline() -> Result<()> {
    inactivity_timer_survives_sigkill(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_inactivity_timer_survives_sigkill_and_fires_once_at_its_deadline() -> Result<()> {
    if skip_postgres("postgres_inactivity_timer_survives_sigkill_and_fires_once_at_its_deadline") {
        return Ok(());
    }
    inactivity_timer_survives_sigkill(Backend::Postgres).await
}

async fn inactivity_timer_survives_sigkill(backend: Backend) -> Result<()> {
    // A short restart grace: the overdue deadline fires a second after the start, still
    // stamped with its own instant.
    let mut hub = TestHub::start_with(backend, &["--restart-grace-s", "1"]).await?;
    let rid = hub
        .resident(json!({"name": "Kato Sen", "rules": quick_rules(8)}))
        .await?;
    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"living room"}"#,
    )
    .await?;
    let motion_at = time(&hub.readings(rid).await?[0]["ts"])?;
    hub.kill().await?;
    assert!(
        Utc::now() < motion_at + chrono::Duration::seconds(8),
        "killed before the deadline"
    );
    hub.restart().await?;

    let alert = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    let opened = time(&alert["opened_at"])?;
    assert_eq!(
        (opened - motion_at).num_milliseconds(),
        8000,
        "deadline kept from the stored motion time"
    );
    // A second restart must not open the same episode again.
    hub.restart().await?;
    let again = hub.alerts(rid).await?;
    assert_eq!(
        again.iter().filter(|a| a["kind"] == "inactivity").count(),
        1,
        "{again:?}"
    );
    Ok(())
}

#[tokio::test]
async fn open_alerts_stay_open_across_sigkill() -> Result<()> {
    let mut hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ito Kiku"})).await?;
    let button = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &button).await?;
    mqtt.publish_acked(&topic(&button, "sos"), "{}").await?;
    let alert = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    hub.kill().await?;
    hub.restart().await?;
    let after = hub.alerts(rid).await?;
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0]["id"].clone(), after[0]["state"].clone()),
        (alert["id"].clone(), json!("open"))
    );
    Ok(())
}

#[tokio::test]
async fn walking_out_of_the_safe_zone_raises_geofence_exit_and_coming_back_resolves_it(
) -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub
        .resident(json!({"name": "Yamada Taro", "home": {"lat": HOME.0, "lon": HOME.1}}))
        .await?;
    hub.expect(
        Method::POST,
        &format!("/residents/{rid}/geofences"),
        Some(json!({"name": "home", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 200}})),
        201,
    )
    .await?;
    let gps = hub.device(rid, "gps").await?;
    let mut mqtt = connect_device(&hub, &gps).await?;
    let fix =
        |lat: f64, acc: f64| json!({"lat": lat, "lon": HOME.1, "accuracy_m": acc}).to_string();
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0, 10.0))
        .await?;
    // ~450 m north: outside by far more than the accuracy; the first fix alone does not alert.
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0 + 0.004, 15.0))
        .await?;
    assert!(
        hub.alerts(rid).await?.is_empty(),
        "one outside fix is not enough"
    );
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0 + 0.0045, 15.0))
        .await?;
    let alert = hub.wait_alert(rid, "geofence_exit", "open", WAIT).await?;
    assert!(
        alert["details"]["distance_m"].as_f64().unwrap_or_default() > 200.0,
        "{alert}"
    );
    assert_eq!(alert["details"]["zone"], "home");
    // Staff keep seeing where the person goes while the alert is open.
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0 + 0.006, 12.0))
        .await?;
    eventually("position update on the open alert", WAIT, || async {
        let a = hub.alerts(rid).await.ok()?.into_iter().next()?;
        (a["details"]["lat"].as_f64()? > HOME.0 + 0.0055).then_some(())
    })
    .await?;
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0, 8.0))
        .await?;
    mqtt.publish_acked(&topic(&gps, "gps"), fix(HOME.0 + 0.0001, 8.0))
        .await?;
    let resolved = hub
        .wait_alert(rid, "geofence_exit", "resolved", WAIT)
        .await?;
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(hub.alerts(rid).await?.len(), 1, "one episode, one alert");
    Ok(())
}

#[tokio::test]
async fn sos_presses_within_a_minute_join_one_critical_alert() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Watanabe Haru"})).await?;
    let button = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &button).await?;
    mqtt.publish_acked(&topic(&button, "sos"), "{}").await?;
    mqtt.publish_acked(&topic(&button, "sos"), "{}").await?;
    let alert = eventually("two presses on one alert", WAIT, || async {
        let a = hub
            .alerts(rid)
            .await
            .ok()?
            .into_iter()
            .find(|a| a["kind"] == "sos")?;
        (a["details"]["presses"] == 2).then_some(a)
    })
    .await?;
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["device_id"], button.id);
    assert_eq!(hub.alerts(rid).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_silent_device_goes_offline_and_comes_back() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub
        .resident(json!({"name": "Sato Fumi", "rules": {"offline": {"gps_s": 2}}}))
        .await?;
    let gps = hub.device(rid, "gps").await?;
    let mut mqtt = connect_device(&hub, &gps).await?;
    mqtt.publish_acked(&topic(&gps, "heartbeat"), "{}").await?;
    let alert = hub.wait_alert(rid, "device_offline", "open", WAIT).await?;
    assert_eq!(alert["device_id"], gps.id);
    assert_eq!(alert["severity"], "warning");
    mqtt.publish_acked(&topic(&gps, "heartbeat"), "{}").await?;
    hub.wait_alert(rid, "device_offline", "resolved", WAIT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_device_whose_connection_dies_is_offline_at_once_through_its_will() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Abe Toku"})).await?;
    let gw = hub.device(rid, "motion").await?;
    let mut opts = MqttOptions::new(gw.id.clone(), "127.0.0.1", hub.mqtt_port);
    opts.set_credentials(gw.id.clone(), gw.mqtt.password.clone());
    opts.set_last_will(LastWill::new(
        topic(&gw, "status"),
        r#"{"online":false}"#,
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    client
        .publish(topic(&gw, "heartbeat"), QoS::AtLeastOnce, false, "{}")
        .await?;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await?;
    // Dropping the event loop closes the socket without DISCONNECT, as a power cut would.
    drop(eventloop);
    drop(client);
    let alert = hub.wait_alert(rid, "device_offline", "open", WAIT).await?;
    assert_eq!(alert["device_id"], gw.id);
    Ok(())
}

#[tokio::test]
async fn low_battery_opens_below_the_threshold_and_resolves_five_points_above() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mori Chiyo"})).await?;
    let door = hub.device(rid, "door").await?;
    let mut mqtt = connect_device(&hub, &door).await?;
    mqtt.publish_acked(&topic(&door, "heartbeat"), r#"{"battery":12}"#)
        .await?;
    hub.wait_alert(rid, "low_battery", "open", WAIT).await?;
    mqtt.publish_acked(&topic(&door, "heartbeat"), r#"{"battery":18}"#)
        .await?;
    let still = hub.alerts(rid).await?;
    assert_eq!(still[0]["state"], "open", "18 % is not above 15 + 5");
    mqtt.publish_acked(&topic(&door, "heartbeat"), r#"{"battery":21}"#)
        .await?;
    hub.wait_alert(rid, "low_battery", "resolved", WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn sqlite_staff_acknowledge_and_resolve_with_a_trail_and_clear_refusals() -> Result<()> {
    staff_acknowledge_and_resolve(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_staff_acknowledge_and_resolve_with_a_trail_and_clear_refusals() -> Result<()> {
    if skip_postgres("postgres_staff_acknowledge_and_resolve_with_a_trail_and_clear_refusals") {
        return Ok(());
    }
    staff_acknowledge_and_resolve(Backend::Postgres).await
}

async fn staff_acknowledge_and_resolve(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub.resident(json!({"name": "Ogawa Tama"})).await?;
    let button = hub.device(rid, "button").await?;
    let staff = hub.user("nurse.sato", "staff", &[]).await?;
    let family = hub.user("son", "family", &[rid]).await?;
    let mut mqtt = connect_device(&hub, &button).await?;
    mqtt.publish_acked(&topic(&button, "sos"), "{}").await?;
    let id = hub.wait_alert(rid, "sos", "open", WAIT).await?["id"]
        .as_i64()
        .unwrap_or_default();

    let (status, _) = hub
        .call(
            Some(&family),
            Method::POST,
            &format!("/alerts/{id}/ack"),
            None,
        )
        .await?;
    assert_eq!(status, 403, "family may read, not act");
    let (status, seen) = hub
        .call(Some(&family), Method::GET, &format!("/alerts/{id}"), None)
        .await?;
    assert_eq!((status, seen["kind"].as_str()), (200, Some("sos")));

    let (status, acked) = hub
        .call(
            Some(&staff),
            Method::POST,
            &format!("/alerts/{id}/ack"),
            Some(json!({"note": "calling her now"})),
        )
        .await?;
    assert_eq!(
        (
            status,
            acked["state"].as_str(),
            acked["acknowledged_by"].as_str()
        ),
        (200, Some("acknowledged"), Some("nurse.sato"))
    );
    let (status, twice) = hub
        .call(
            Some(&staff),
            Method::POST,
            &format!("/alerts/{id}/ack"),
            None,
        )
        .await?;
    assert_eq!(status, 409);
    assert!(
        twice["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already acknowledged by nurse.sato"),
        "{twice}"
    );
    let (status, done) = hub
        .call(
            Some(&staff),
            Method::POST,
            &format!("/alerts/{id}/resolve"),
            Some(json!({"note": "she had pressed it by mistake"})),
        )
        .await?;
    assert_eq!(
        (status, done["resolution"].as_str()),
        (200, Some("she had pressed it by mistake"))
    );
    let (status, late) = hub
        .call(
            Some(&staff),
            Method::POST,
            &format!("/alerts/{id}/ack"),
            None,
        )
        .await?;
    assert_eq!(status, 409);
    assert!(
        late["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already resolved"),
        "{late}"
    );

    let full = hub
        .expect(Method::GET, &format!("/alerts/{id}"), None, 200)
        .await?;
    let trail: Vec<(String, String)> = full["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["actor"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("opened", "hub"),
        ("acknowledged", "nurse.sato"),
        ("resolved", "nurse.sato"),
    ];
    assert_eq!(trail, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    let filtered = hub
        .expect(
            Method::GET,
            &format!("/alerts?state=resolved&kind=sos&resident_id={rid}"),
            None,
            200,
        )
        .await?;
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn alerts_go_out_on_mqtt_to_integrators() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Hayashi Nobu"})).await?;
    let button = hub.device(rid, "button").await?;
    hub.user("integrator", "staff", &[]).await?;
    let mut sub = mqtt_connect(
        hub.mqtt_port,
        "alerts-sink",
        "integrator",
        &password_of("integrator"),
    )
    .await
    .map_err(|e| anyhow!("{e:?}"))?;
    sub.client
        .subscribe(format!("watch/v1/alerts/{rid}"), QoS::AtLeastOnce)
        .await?;
    sub.next_matching(WAIT, |p| matches!(p, Packet::SubAck(_)))
        .await?;
    let mut mqtt = connect_device(&hub, &button).await?;
    mqtt.publish_acked(&topic(&button, "sos"), "{}").await?;
    let Packet::Publish(p) = sub
        .next_matching(WAIT, |p| matches!(p, Packet::Publish(_)))
        .await?
    else {
        unreachable!()
    };
    let alert: Value = serde_json::from_slice(&p.payload)?;
    assert_eq!(
        (
            alert["kind"].as_str(),
            alert["state"].as_str(),
            alert["resident_id"].as_i64()
        ),
        (Some("sos"), Some("open"), Some(rid))
    );
    Ok(())
}

#[tokio::test]
async fn a_condition_cleared_by_a_settings_change_resolves_its_alert() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub
        .resident(json!({"name": "Ishii Masa", "rules": quick_rules(1)}))
        .await?;
    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "motion"), r#"{"motion":true}"#)
        .await?;
    hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    hub.expect(
        Method::PATCH,
        &format!("/residents/{rid}"),
        Some(json!({"rules": {"inactivity": {"enabled": false}}})),
        200,
    )
    .await?;
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert!(
        resolved["resolution"]
            .as_str()
            .unwrap_or_default()
            .contains("condition_cleared"),
        "{resolved}"
    );
    Ok(())
}
