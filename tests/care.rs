//! Care rules through the real hub: dated pauses set through the API and carried out by
//! the pipeline, and the entrance door telling when a resident without a tracker is out.

use std::time::Duration;

use anyhow::{anyhow, Result};
use chrono::{DateTime, SubsecRound, Utc};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

fn time(v: &Value) -> Result<DateTime<Utc>> {
    let s = v.as_str().ok_or_else(|| anyhow!("not a time: {v}"))?;
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

/// Inactivity after `threshold_s` by day and night; devices never go offline meanwhile.
fn quick_rules(threshold_s: u64) -> Value {
    json!({
        "inactivity": {"day_threshold_s": threshold_s, "night_threshold_s": threshold_s, "morning_deadline": null},
        "offline": {"motion_s": 3600, "door_s": 3600, "button_s": 3600}
    })
}

#[tokio::test]
async fn sqlite_a_hospital_stay_quiets_inactivity_and_its_end_restarts_the_timer() -> Result<()> {
    pauses_quiet_and_resume(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_a_hospital_stay_quiets_inactivity_and_its_end_restarts_the_timer() -> Result<()> {
    if skip_postgres("postgres_a_hospital_stay_quiets_inactivity_and_its_end_restarts_the_timer") {
        return Ok(());
    }
    pauses_quiet_and_resume(Backend::Postgres).await
}

async fn pauses_quiet_and_resume(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub
        .resident(json!({"name": "Kato Fumi", "rules": quick_rules(2)}))
        .await?;
    let pir = hub.device(rid, "motion").await?;
    let button = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &pir).await?;
    mqtt.publish_acked(
        &topic(&pir, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    let first = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;

    // Admitted to hospital: staff set the pause; the open alert is moot.
    let now = Utc::now().trunc_subsecs(0);
    let until = now + chrono::Duration::seconds(5);
    let body = json!({"from": now - chrono::Duration::seconds(1), "until": until,
                      "reason": "hospital", "note": "admitted to Nakano General"});
    let path = format!("/residents/{rid}/pauses");
    let pause = hub.expect(Method::POST, &path, Some(body), 201).await?;
    assert_eq!(pause["created_by"], "admin");
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(resolved["id"], first["id"]);
    assert_eq!(
        resolved["resolution"], "condition_cleared: rules paused (hospital)",
        "{resolved}"
    );
    // SOS is never paused.
    let mut pendant = connect_device(&hub, &button).await?;
    pendant.publish_acked(&topic(&button, "sos"), "{}").await?;
    hub.wait_alert(rid, "sos", "open", WAIT).await?;

    // The pause ends by the engine's own timer; the threshold counts from its end.
    let again = eventually("a new inactivity alert after the pause", WAIT, || async {
        let alerts = hub.alerts(rid).await.ok()?;
        alerts
            .into_iter()
            .find(|a| a["kind"] == "inactivity" && a["state"] == "open" && a["id"] != first["id"])
    })
    .await?;
    let after = time(&again["opened_at"])? - until;
    assert_eq!(after.num_milliseconds(), 2000, "{again}");

    let listed = hub.expect(Method::GET, &path, None, 200).await?;
    assert_eq!(listed[0]["id"], pause["id"]);
    assert_eq!(listed[0]["reason"], "hospital");
    let pid = pause["id"].as_str().unwrap_or_default();
    hub.expect(Method::DELETE, &format!("{path}/{pid}"), None, 204)
        .await?;
    hub.expect(Method::DELETE, &format!("{path}/{pid}"), None, 404)
        .await?;
    assert_eq!(hub.expect(Method::GET, &path, None, 200).await?, json!([]));
    let audit = hub
        .expect(Method::GET, "/audit?limit=20", None, 200)
        .await?;
    let actions: Vec<&str> = audit
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"pause.create"), "{actions:?}");
    assert!(actions.contains(&"pause.delete"), "{actions:?}");
    Ok(())
}

#[tokio::test]
async fn a_family_member_may_pause_for_a_visit_but_not_for_a_hospital_stay() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mori Kiyo"})).await?;
    let other = hub.resident(json!({"name": "Abe Tomi"})).await?;
    let daughter = hub.user("mori-daughter", "family", &[rid]).await?;
    let path = format!("/residents/{rid}/pauses");
    let from = Utc::now() + chrono::Duration::days(1);
    let visit = |reason: &str| {
        json!({"from": from, "until": from + chrono::Duration::days(3), "reason": reason,
               "note": "staying with us for the weekend"})
    };
    let (status, body) = hub
        .call(
            Some(&daughter),
            Method::POST,
            &path,
            Some(visit("hospital")),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    let (status, mine) = hub
        .call(Some(&daughter), Method::POST, &path, Some(visit("visit")))
        .await?;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["created_by"], "mori-daughter");
    let (status, _) = hub
        .call(
            Some(&daughter),
            Method::POST,
            &format!("/residents/{other}/pauses"),
            Some(visit("visit")),
        )
        .await?;
    assert_eq!(
        status, 404,
        "another family's relative is not there for her"
    );
    // Staff's pause is staff's to remove; her own is hers.
    let staffs = hub
        .expect(Method::POST, &path, Some(visit("short_stay")), 201)
        .await?;
    let remove = |p: &Value| format!("{path}/{}", p["id"].as_str().unwrap_or_default());
    let (status, _) = hub
        .call(Some(&daughter), Method::DELETE, &remove(&staffs), None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = hub
        .call(Some(&daughter), Method::DELETE, &remove(&mine), None)
        .await?;
    assert_eq!(status, 204);
    // A pause that ends before it starts, or has already ended, is refused with a reason.
    let backwards =
        json!({"from": from, "until": from - chrono::Duration::hours(1), "reason": "visit"});
    let (status, body) = hub.admin(Method::POST, &path, Some(backwards)).await?;
    assert_eq!(status, 422, "{body}");
    let past = json!({"from": from - chrono::Duration::days(9), "until": from - chrono::Duration::days(8), "reason": "other"});
    let (status, body) = hub.admin(Method::POST, &path, Some(past)).await?;
    assert_eq!(status, 422, "{body}");
    Ok(())
}

#[tokio::test]
async fn out_through_the_entrance_door_waits_instead_of_alerting_inactivity() -> Result<()> {
    let hub = TestHub::start().await?;
    let mut rules = quick_rules(2);
    rules["away"] = json!({"confirm_s": 1, "max_s": 4});
    let rid = hub
        .resident(json!({"name": "Ueda Shizu", "rules": rules}))
        .await?;
    let created = hub
        .expect(
            Method::POST,
            "/devices",
            Some(
                json!({"resident_id": rid, "kind": "door", "name": "front door",
                        "room": "hall", "role": "entrance"}),
            ),
            201,
        )
        .await?;
    let door: DeviceCreated = serde_json::from_value(created)?;
    let shown = hub
        .expect(Method::GET, &format!("/devices/{}", door.id), None, 200)
        .await?;
    assert_eq!(
        (&shown["room"], &shown["role"]),
        (&json!("hall"), &json!("entrance"))
    );
    let pir = hub.device(rid, "motion").await?;
    let (status, body) = hub
        .admin(
            Method::PATCH,
            &format!("/devices/{}", pir.id),
            Some(json!({"role": "entrance"})),
        )
        .await?;
    assert_eq!(status, 422, "only a door is an entrance: {body}");

    let mut mqtt = connect_device(&hub, &door).await?;
    mqtt.publish_acked(&topic(&door, "door"), r#"{"open":true}"#)
        .await?;
    let opened_at = time(&hub.readings(rid).await?[0]["ts"])?;
    let away = hub.wait_alert(rid, "away_too_long", "open", WAIT).await?;
    assert_eq!(away["severity"], "high");
    assert_eq!(
        (time(&away["opened_at"])? - opened_at).num_milliseconds(),
        4000,
        "{away}"
    );
    // Out, so no inactivity alert since the door (one before it, while the test was
    // setting up, the door itself resolved).
    for a in hub.alerts(rid).await? {
        if a["kind"] == "inactivity" {
            assert!(time(&a["opened_at"])? < opened_at, "{a}");
        }
    }

    mqtt.publish_acked(&topic(&door, "door"), r#"{"open":true}"#)
        .await?;
    let back = hub
        .wait_alert(rid, "away_too_long", "resolved", WAIT)
        .await?;
    assert_eq!(
        back["resolution"],
        "condition_cleared: back through the entrance door"
    );
    Ok(())
}

#[tokio::test]
async fn the_resident_answers_are_you_ok_and_staff_are_told_only_without_an_answer() -> Result<()> {
    let hub = TestHub::start().await?;
    let mut rules = quick_rules(2);
    rules["check"] = json!({"enabled": true, "timeout_s": 2});
    let rid = hub
        .resident(json!({"name": "Noda Sato", "rules": rules}))
        .await?;
    let pir = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &pir).await?;
    let ask = topic(&pir, "cmd");
    mqtt.client
        .subscribe(ask.as_str(), rumqttc::QoS::AtLeastOnce)
        .await?;
    mqtt.next_matching(WAIT, |p| matches!(p, rumqttc::Packet::SubAck(_)))
        .await?;
    mqtt.publish_acked(
        &topic(&pir, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    let pending = hub.wait_alert(rid, "inactivity", "pending", WAIT).await?;
    let question = mqtt
        .next_matching(
            WAIT,
            |p| matches!(p, rumqttc::Packet::Publish(m) if m.topic == ask),
        )
        .await?;
    let rumqttc::Packet::Publish(question) = question else {
        return Err(anyhow!("not a publish"));
    };
    let body: Value = serde_json::from_slice(&question.payload)?;
    assert_eq!(
        body,
        json!({"ask": "are_you_ok", "alert_id": pending["id"]})
    );

    mqtt.publish_acked(&topic(&pir, "ok"), "{}").await?;
    let confirmed = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(confirmed["id"], pending["id"]);
    assert_eq!(
        (&confirmed["resolution"], &confirmed["resolved_by"]),
        (&json!("resident_confirmed"), &json!("resident"))
    );

    // Silent again from the answer, and this time nobody answers: staff see it open.
    let open = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    assert_ne!(open["id"], pending["id"]);
    let history = hub
        .expect(Method::GET, &format!("/alerts/{}", open["id"]), None, 200)
        .await?;
    let actions: Vec<&str> = history["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(actions, ["opened", "asked", "unconfirmed"], "{history}");
    Ok(())
}
