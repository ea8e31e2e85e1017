//! Attacks against the real hub, and the bounds that now hold.

use anyhow::{anyhow, Result};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// The largest resident set the process has had, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// 64 concurrent wrong logins, for unknown users and for the admin, cannot make the hub
/// run 64 Argon2 computations at once: it checks two at a time, answers 429 with
/// `Retry-After` to what does not fit in its short queue, and its memory stays bounded.
/// The right password still works afterwards.
#[tokio::test]
async fn a_flood_of_wrong_logins_cannot_exhaust_memory() -> Result<()> {
    let hub = TestHub::start().await?;
    let pid = hub.pid().ok_or_else(|| anyhow!("hub not running"))?;
    let before = peak_rss_mib(pid)?;
    let url = hub.url("/auth/login");
    let attempts = (0..64).map(|n| {
        let http = hub.http.clone();
        let url = url.clone();
        let username = if n % 2 == 0 {
            format!("nobody-{n}")
        } else {
            "admin".into()
        };
        async move {
            http.post(&url)
                .json(&json!({"username": username, "password": format!("wrong password {n}")}))
                .send()
                .await
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut refused = 0;
    let mut busy = 0;
    for a in answers {
        let a = a?;
        match a.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(
                    a.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                busy += 1;
            }
            other => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(refused + busy, 64);
    assert!(busy > 0, "the queue is short: some were told to come back");
    let peak = peak_rss_mib(pid)?;
    assert!(
        peak - before < 100.0,
        "peak RSS grew by {:.0} MiB (from {before:.0} to {peak:.0})",
        peak - before
    );
    assert!(peak < 300.0, "peak RSS {peak:.0} MiB");
    hub.login("admin", ADMIN_PASSWORD).await?;
    Ok(())
}

/// The same bound on MQTT: 32 CONNECTs naming unknown people at once get "bad user name
/// or password" or, past the short queue, "server unavailable" — and the hub's memory
/// stays bounded.
#[tokio::test]
async fn a_flood_of_mqtt_connects_with_made_up_users_cannot_exhaust_memory() -> Result<()> {
    let hub = TestHub::start().await?;
    let pid = hub.pid().ok_or_else(|| anyhow!("hub not running"))?;
    let before = peak_rss_mib(pid)?;
    let port = hub.mqtt_port;
    let attempts = (0..32).map(|n| async move {
        mqtt_connect(
            port,
            &format!("flood-{n}"),
            &format!("someone-{n}"),
            "guess",
        )
        .await
    });
    for answer in futures_util::future::join_all(attempts).await {
        match answer {
            Err(MqttRefusal::Refused(
                rumqttc::ConnectReturnCode::BadUserNamePassword
                | rumqttc::ConnectReturnCode::ServiceUnavailable,
            )) => {}
            Err(MqttRefusal::Refused(other)) => panic!("unexpected CONNACK {other:?}"),
            Err(MqttRefusal::Other(e)) => panic!("no CONNACK: {e}"),
            Ok(_) => panic!("a made-up user was let in"),
        }
    }
    let peak = peak_rss_mib(pid)?;
    assert!(
        peak - before < 100.0,
        "peak RSS grew by {:.0} MiB",
        peak - before
    );
    Ok(())
}
