//! The native protocol adapter: `watch/v1/{device_id}/{kind}` with JSON payloads.

use chrono::{DateTime, Utc};
use mimamori_protocol::native::{check_age, parse_native, RejectReason, Rejection};
use mimamori_protocol::topic::split_device_topic;
use mimamori_protocol::DeviceEvent;

use super::DeviceCtx;

/// Validates one native message of `device`; a `ts` more than `max_age` old is refused
/// (`stale_timestamp`). Gateways' own times (ChirpStack, The Things Stack) are the
/// network's clocks, not a device's, and are not aged here.
pub fn classify(
    device: &DeviceCtx,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    max_age: chrono::Duration,
) -> Result<DeviceEvent, Rejection> {
    let (id, kind) = split_device_topic(topic).ok_or_else(|| {
        Rejection::new(
            RejectReason::BadTopic,
            format!("topic {topic:?} is not watch/v1/{{device_id}}/{{kind}}"),
        )
    })?;
    if id != device.id {
        return Err(Rejection::new(
            RejectReason::NotAuthorized,
            format!("device {} may not publish as {id}", device.id),
        ));
    }
    let msg = parse_native(kind, payload, now)?;
    check_age(msg.ts, now, max_age)?;
    Ok(DeviceEvent {
        device_id: device.id.clone(),
        device_kind: device.kind,
        resident_id: device.resident_id,
        ts: msg.ts,
        received_at: now,
        reading: msg.reading,
        battery: msg.battery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::native::MAX_AGE;
    use mimamori_protocol::{DeviceKind, Reading};

    fn dev() -> DeviceCtx {
        DeviceCtx {
            id: "dev-a".into(),
            resident_id: 3,
            kind: DeviceKind::Motion,
        }
    }

    #[test]
    fn a_native_motion_becomes_an_event_of_the_resident() -> Result<(), Rejection> {
        let ev = classify(
            &dev(),
            "watch/v1/dev-a/motion",
            br#"{"motion":true,"room":"kitchen"}"#,
            Utc::now(),
            MAX_AGE,
        )?;
        assert_eq!(ev.resident_id, 3);
        assert_eq!(
            ev.reading,
            Reading::Motion {
                motion: true,
                room: Some("kitchen".into())
            }
        );
        Ok(())
    }

    #[test]
    fn a_motion_a_day_and_a_second_old_is_stale() {
        let now = Utc::now();
        let old = (now - MAX_AGE - chrono::Duration::seconds(1)).timestamp_millis();
        let payload = format!(r#"{{"ts":{old},"motion":true}}"#);
        let got = classify(
            &dev(),
            "watch/v1/dev-a/motion",
            payload.as_bytes(),
            now,
            MAX_AGE,
        );
        assert_eq!(got.map_err(|r| r.reason), Err(RejectReason::StaleTimestamp));
    }

    #[test]
    fn topics_are_checked_before_payloads() {
        let bad = classify(
            &dev(),
            "watch/v1/dev-a/motion/extra",
            b"{}",
            Utc::now(),
            MAX_AGE,
        );
        assert_eq!(bad.map_err(|r| r.reason), Err(RejectReason::BadTopic));
        let other = classify(&dev(), "watch/v1/dev-b/motion", b"{}", Utc::now(), MAX_AGE);
        assert_eq!(
            other.map_err(|r| r.reason),
            Err(RejectReason::NotAuthorized)
        );
    }
}
