//! The alert core end to end: no SOS press is swallowed after a staff resolve, the
//! escalation ladder reaches real receivers in order until someone acknowledges, quiet
//! hours hold a notice until they end, and the service-level report, on both backends.

use std::time::Duration;

use anyhow::{anyhow, Result};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::notify::{add_contact, deliveries, Receiver};

fn id_of(v: &Value) -> Result<i64> {
    v["id"].as_i64().ok_or_else(|| anyhow!("no id in {v}"))
}

/// Epoch milliseconds `secs_ago` seconds before now: a press's own timestamp.
fn ms_ago(secs_ago: i64) -> i64 {
    (chrono::Utc::now() - chrono::Duration::seconds(secs_ago)).timestamp_millis()
}

/// Press, resolve ("pressed by mistake"), press again 5 s later: a new alert opens.
/// Then presses 40 s apart by their own clock: the first opens again after a resolve,
/// the rest join that live alert.
async fn no_press_is_swallowed(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub.resident(json!({"name": "Ito Haru"})).await?;
    let button = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &button).await?;
    let sos = topic(&button, "sos");
    mqtt.publish_acked(&sos, json!({ "ts": ms_ago(10) }).to_string())
        .await?;
    let first = id_of(
        &hub.wait_alert(rid, "sos", "open", Duration::from_secs(10))
            .await?,
    )?;
    hub.expect(
        Method::POST,
        &format!("/alerts/{first}/resolve"),
        Some(json!({"note": "pressed by mistake"})),
        200,
    )
    .await?;
    mqtt.publish_acked(&sos, json!({ "ts": ms_ago(5) }).to_string())
        .await?;
    let second = id_of(
        &hub.wait_alert(rid, "sos", "open", Duration::from_secs(10))
            .await?,
    )?;
    assert_ne!(second, first, "a press after a resolve is a new alert");

    hub.expect(
        Method::POST,
        &format!("/alerts/{second}/resolve"),
        None,
        200,
    )
    .await?;
    for secs_ago in [160, 120, 80, 40] {
        mqtt.publish_acked(&sos, json!({ "ts": ms_ago(secs_ago) }).to_string())
            .await?;
    }
    let third = hub
        .wait_alert(rid, "sos", "open", Duration::from_secs(10))
        .await?;
    assert!(id_of(&third)? > second);
    let live: Vec<Value> = hub
        .alerts(rid)
        .await?
        .into_iter()
        .filter(|a| a["state"] != "resolved")
        .collect();
    assert_eq!(live.len(), 1, "the later presses joined it: {live:?}");
    let history = hub
        .expect(
            Method::GET,
            &format!("/alerts/{}", id_of(&third)?),
            None,
            200,
        )
        .await?;
    let pressed_again = history["history"].as_array().map_or(0, |h| {
        h.iter().filter(|e| e["note"] == "pressed again").count()
    });
    assert_eq!(pressed_again, 3);
    Ok(())
}

#[tokio::test]
async fn no_press_is_swallowed_after_a_resolve() -> Result<()> {
    no_press_is_swallowed(Backend::Sqlite).await
}

#[tokio::test]
async fn no_press_is_swallowed_after_a_resolve_postgres() -> Result<()> {
    if skip_postgres("no_press_is_swallowed_after_a_resolve_postgres") {
        return Ok(());
    }
    no_press_is_swallowed(Backend::Postgres).await
}

/// A second-scale ladder: family at once, supervisor after 2 s, the care centre after
/// 4 s, reminders every 3 s, unanswered at 6 s.
const LADDER: &str = r#"
[notify]
notify_retry_base_ms = 100

[notify.ladder.critical]
steps = [{ after_s = 0, tier = 1 }, { after_s = 2, tier = 2 }, { after_s = 4, tier = 3 }]
remind_every_s = 3
unanswered_after_s = 6
"#;

/// A hub on the second-scale ladder; its config file lives as long as the folder.
async fn ladder_hub(backend: Backend) -> Result<(TestHub, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, LADDER)?;
    let config = config.display().to_string();
    Ok((
        TestHub::start_with(backend, &["--config", &config]).await?,
        dir,
    ))
}

/// A resident with a family member (tier 1), a supervisor (2) and the care centre (3),
/// each a webhook at `{prefix}/{name}`.
async fn resident_with_three_tiers(
    hub: &TestHub,
    rx: &Receiver,
    name: &str,
    prefix: &str,
) -> Result<i64> {
    let rid = hub.resident(json!({ "name": name })).await?;
    for (contact, relation, tier) in [
        ("family", "family", 1),
        ("supervisor", "supervisor", 2),
        ("centre", "other", 3),
    ] {
        add_contact(
            hub,
            rid,
            json!({"name": contact, "relation": relation, "tier": tier, "channel": "webhook",
                   "address": rx.url(&format!("{prefix}/{contact}"))}),
        )
        .await?;
    }
    Ok(rid)
}

fn events_of(rx: &Receiver, path: &str) -> Vec<String> {
    rx.seen(path)
        .iter()
        .map(|s| s.json()["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Every tier is told in order, reminders come until someone acknowledges, the alert
/// turns unanswered, and the acknowledgement stops it all.
async fn ladder_runs_until_acknowledged(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    let (hub, _config) = ladder_hub(backend).await?;
    let mut alerts = Vec::new();
    for who in ["ignored", "acked"] {
        let rid =
            resident_with_three_tiers(&hub, &rx, &format!("Resident {who}"), &format!("/{who}"))
                .await?;
        alerts.push(crate::notify::press_sos(&hub, rid).await?);
    }
    let (ignored, acked) = (alerts[0], alerts[1]);
    let unanswered = eventually(
        "the alert turns unanswered",
        Duration::from_secs(30),
        || async {
            let a = hub
                .expect(Method::GET, &format!("/alerts/{ignored}"), None, 200)
                .await
                .ok()?;
            (a["state"] == "unanswered").then_some(a)
        },
    )
    .await?;
    assert_eq!(
        (
            unanswered["escalated"].as_bool(),
            unanswered["tier"].as_i64()
        ),
        (Some(true), Some(3))
    );
    // The family heard first, then a reminder; the supervisor was told at 2 s.
    let family = eventually(
        "two reminders reach the family",
        Duration::from_secs(30),
        || async {
            let e = events_of(&rx, "/ignored/family");
            (e.len() >= 3).then_some(e)
        },
    )
    .await?;
    assert_eq!(family[..3], ["opened", "reminder", "reminder"]);
    let supervisor = events_of(&rx, "/ignored/supervisor");
    assert_eq!(supervisor.first().map(String::as_str), Some("escalated"));
    assert_eq!(
        events_of(&rx, "/ignored/centre")
            .first()
            .map(String::as_str),
        Some("escalated")
    );
    let first_family = rx.seen("/ignored/family")[0].json();
    assert_eq!(first_family["event"], "opened");

    hub.expect(Method::POST, &format!("/alerts/{ignored}/ack"), None, 200)
        .await?;
    let told = deliveries(&hub, ignored).await?.len();
    // Another alert's reminder proves the ladder's time has passed on.
    let _ = acked;
    hub.expect(Method::POST, &format!("/alerts/{acked}/ack"), None, 200)
        .await?;
    let rid3 = hub.resident(json!({"name": "Clock"})).await?;
    add_contact(&hub, rid3, json!({"name": "family", "relation": "family", "channel": "webhook", "address": rx.url("/clock/family")})).await?;
    crate::notify::press_sos(&hub, rid3).await?;
    eventually(
        "the clock resident's reminder",
        Duration::from_secs(30),
        || async {
            (events_of(&rx, "/clock/family")
                .iter()
                .any(|e| e == "reminder"))
            .then_some(())
        },
    )
    .await?;
    assert_eq!(
        deliveries(&hub, ignored).await?.len(),
        told,
        "nothing after the acknowledgement"
    );
    let history = hub
        .expect(Method::GET, &format!("/alerts/{ignored}"), None, 200)
        .await?;
    let actions: Vec<&str> = history["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    let ack_at = actions.iter().position(|a| *a == "acknowledged");
    assert!(ack_at.is_some_and(|i| !actions[i..]
        .iter()
        .any(|a| matches!(*a, "reminded" | "escalated"))));
    for wanted in [
        "opened",
        "escalated",
        "reminded",
        "unanswered",
        "acknowledged",
    ] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }

    let report = hub
        .expect(Method::GET, "/reports/response", None, 200)
        .await?;
    let critical = &report["severities"][0];
    assert_eq!(
        (critical["severity"].as_str(), critical["count"].as_i64()),
        (Some("critical"), Some(3))
    );
    assert_eq!(critical["acknowledged"], 2);
    assert!(critical["p95_ack_s"].as_f64().is_some_and(|s| s >= 6.0));
    let open: Vec<i64> = critical["unacknowledged"]
        .as_array()
        .map(|u| u.iter().filter_map(|a| a["id"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(open.len(), 1);
    assert!(
        hub.metric("mimamori_alert_ack_seconds_count{severity=\"critical\"}")
            .await?
            >= 2.0
    );
    Ok(())
}

#[tokio::test]
async fn the_ladder_climbs_and_reminds_until_acknowledged() -> Result<()> {
    ladder_runs_until_acknowledged(Backend::Sqlite).await
}

#[tokio::test]
async fn the_ladder_climbs_and_reminds_until_acknowledged_postgres() -> Result<()> {
    if skip_postgres("the_ladder_climbs_and_reminds_until_acknowledged_postgres") {
        return Ok(());
    }
    ladder_runs_until_acknowledged(Backend::Postgres).await
}

/// Quiet hours (in Tokyo) that started an hour ago and end at the next whole minute, or
/// the one after when this minute is nearly over.
fn quiet_hours_ending_soon() -> String {
    let now = chrono::Utc::now() + chrono::Duration::hours(9);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let margin = if now.timestamp() % 60 > 50 { 2 } else { 1 };
    format!(
        "{}-{}",
        fmt(now - chrono::Duration::hours(1)),
        fmt(now + chrono::Duration::minutes(margin))
    )
}

/// A low-battery notice raised during the family's quiet hours is held, and delivered
/// when they end.
async fn quiet_hours_notice_is_delivered_when_they_end(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub.resident(json!({"name": "Mori Aki"})).await?;
    add_contact(
        &hub,
        rid,
        json!({"name": "Mori Ken", "relation": "family", "channel": "webhook",
               "address": rx.url("/mori"), "quiet_hours": quiet_hours_ending_soon()}),
    )
    .await?;
    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "heartbeat"), r#"{"battery":5}"#)
        .await?;
    let alert = id_of(
        &hub.wait_alert(rid, "low_battery", "open", Duration::from_secs(10))
            .await?,
    )?;
    let held = hub
        .expect(Method::GET, &format!("/alerts/{alert}"), None, 200)
        .await?;
    assert!(held["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|e| e["action"] == "held")));
    assert!(
        held["deliveries"].as_array().is_some_and(Vec::is_empty),
        "held, not sent"
    );
    let seen = eventually(
        "the held notice after quiet hours",
        Duration::from_secs(150),
        || async {
            let s = rx.seen("/mori");
            (!s.is_empty()).then_some(s)
        },
    )
    .await?;
    assert_eq!(seen[0].json()["event"], "opened");
    assert_eq!(seen.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_quiet_hours_notice_arrives_when_they_end() -> Result<()> {
    quiet_hours_notice_is_delivered_when_they_end(Backend::Sqlite).await
}

#[tokio::test]
async fn a_quiet_hours_notice_arrives_when_they_end_postgres() -> Result<()> {
    if skip_postgres("a_quiet_hours_notice_arrives_when_they_end_postgres") {
        return Ok(());
    }
    quiet_hours_notice_is_delivered_when_they_end(Backend::Postgres).await
}

/// Staff actions beyond acknowledge and resolve: a note, an assignment, a snooze (refused
/// for a critical alert), each answered with the alert and audited.
#[tokio::test]
async fn notes_assignments_and_snoozes_are_commands_with_an_audit_trail() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Abe Rin"})).await?;
    let sos = crate::notify::press_sos(&hub, rid).await?;
    let noted = hub
        .expect(
            Method::POST,
            &format!("/alerts/{sos}/note"),
            Some(json!({"note": "calling her now"})),
            200,
        )
        .await?;
    assert_eq!(noted["state"], "open");
    let assigned = hub
        .expect(
            Method::POST,
            &format!("/alerts/{sos}/assign"),
            Some(json!({"to": "nurse-sato"})),
            200,
        )
        .await?;
    assert_eq!(assigned["assigned_to"], "nurse-sato");
    let (status, refusal) = hub
        .admin(
            Method::POST,
            &format!("/alerts/{sos}/snooze"),
            Some(json!({"minutes": 10})),
        )
        .await?;
    assert_eq!(status, 409, "{refusal}");
    assert!(refusal["message"]
        .as_str()
        .is_some_and(|m| m.contains("critical")));
    let (status, _) = hub
        .admin(Method::POST, &format!("/alerts/{sos}/note"), None)
        .await?;
    assert_eq!(status, 409, "a note needs text");

    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "heartbeat"), r#"{"battery":5}"#)
        .await?;
    let battery = id_of(
        &hub.wait_alert(rid, "low_battery", "open", Duration::from_secs(10))
            .await?,
    )?;
    let snoozed = hub
        .expect(
            Method::POST,
            &format!("/alerts/{battery}/snooze"),
            Some(json!({"minutes": 60})),
            200,
        )
        .await?;
    assert!(snoozed["snoozed_until"].is_string());
    hub.expect(Method::POST, &format!("/alerts/{sos}/resolve"), None, 200)
        .await?;
    let (status, again) = hub
        .admin(Method::POST, &format!("/alerts/{sos}/ack"), None)
        .await?;
    assert_eq!(status, 409);
    assert!(again["message"]
        .as_str()
        .is_some_and(|m| m.contains("already resolved")));
    let audit = hub
        .expect(Method::GET, "/audit?limit=20", None, 200)
        .await?;
    let actions: Vec<&str> = audit
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for wanted in [
        "alert.noted",
        "alert.assigned",
        "alert.snoozed",
        "alert.resolved",
    ] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
    Ok(())
}

/// A SIGKILL in the middle of a ladder: after the restart it goes on from where it stood
/// — the next step and reminders come, nothing already sent is decided again.
async fn a_killed_hub_resumes_the_ladder(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    let (mut hub, _config) = ladder_hub(backend).await?;
    let rid = resident_with_three_tiers(&hub, &rx, "Kato Ume", "").await?;
    let alert = crate::notify::press_sos(&hub, rid).await?;
    eventually(
        "the supervisor is told",
        Duration::from_secs(30),
        || async { (!rx.seen("/supervisor").is_empty()).then_some(()) },
    )
    .await?;
    hub.kill().await?;
    hub.restart().await?;
    eventually(
        "the care centre is told after the restart",
        Duration::from_secs(30),
        || async { (!rx.seen("/centre").is_empty()).then_some(()) },
    )
    .await?;
    eventually(
        "a reminder after the restart",
        Duration::from_secs(30),
        || async {
            events_of(&rx, "/family")
                .iter()
                .any(|e| e == "reminder")
                .then_some(())
        },
    )
    .await?;
    hub.expect(Method::POST, &format!("/alerts/{alert}/ack"), None, 200)
        .await?;
    let keys: Vec<String> = deliveries(&hub, alert)
        .await?
        .iter()
        .filter_map(|d| d["idempotency_key"].as_str().map(str::to_owned))
        .collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "no notification decided twice: {keys:?}"
    );
    // Delivery is at least once: a request the receiver saw just before the kill, but
    // whose answer the hub had not yet stored, is sent again after the restart with the
    // same Idempotency-Key. "Once" is one decision: every request a resend of one delivery.
    for (path, event, what) in [
        ("/family", "opened", "the family heard of the opening once"),
        (
            "/supervisor",
            "escalated",
            "the supervisor's step was taken once",
        ),
    ] {
        let sent: Vec<String> = rx
            .seen(path)
            .iter()
            .filter(|s| s.json()["event"] == event)
            .map(|s| s.header("Idempotency-Key").to_string())
            .collect();
        let one: std::collections::BTreeSet<&String> = sent.iter().collect();
        assert_eq!(one.len(), 1, "{what}: {sent:?}");
        assert!(
            keys.iter().any(|k| sent.contains(k)),
            "{what}: a stored delivery"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_hub_resumes_the_ladder_where_it_stood() -> Result<()> {
    a_killed_hub_resumes_the_ladder(Backend::Sqlite).await
}

#[tokio::test]
async fn a_killed_hub_resumes_the_ladder_where_it_stood_postgres() -> Result<()> {
    if skip_postgres("a_killed_hub_resumes_the_ladder_where_it_stood_postgres") {
        return Ok(());
    }
    a_killed_hub_resumes_the_ladder(Backend::Postgres).await
}
