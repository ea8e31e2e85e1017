//! The native protocol adapter: `watch/v1/{device_id}/{kind}` with JSON payloads.

use chrono::{DateTime, Utc};
use mimamori_protocol::native::{parse_native, RejectReason, Rejection};
use mimamori_protocol::topic::split_device_topic;
use mimamori_protocol::DeviceEvent;

use super::DeviceCtx;

/// Validates one native message of `device`.
pub fn classify(
    device: &DeviceCtx,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
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
    fn topics_are_checked_before_payloads() {
        let bad = classify(&dev(), "watch/v1/dev-a/motion/extra", b"{}", Utc::now());
        assert_eq!(bad.map_err(|r| r.reason), Err(RejectReason::BadTopic));
        let other = classify(&dev(), "watch/v1/dev-b/motion", b"{}", Utc::now());
        assert_eq!(
            other.map_err(|r| r.reason),
            Err(RejectReason::NotAuthorized)
        );
    }
}
