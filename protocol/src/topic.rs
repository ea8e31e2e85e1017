//! The native topic layout: `watch/v1/{device_id}/{kind}` for devices and
//! `watch/v1/alerts/{resident_id}` for the alerts the hub publishes.

/// Prefix of every native topic.
pub const ROOT: &str = "watch/v1";

/// What a device reports, from the last level of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Motion,
    Gps,
    Sos,
    Heartbeat,
    Door,
    /// `{"online": false}` as a device's MQTT will, `true` when it comes back.
    Status,
    /// The resident's "I'm OK", in answer to the hub's question.
    Ok,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] = [
        MessageKind::Motion,
        MessageKind::Gps,
        MessageKind::Sos,
        MessageKind::Heartbeat,
        MessageKind::Door,
        MessageKind::Status,
        MessageKind::Ok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Motion => "motion",
            MessageKind::Gps => "gps",
            MessageKind::Sos => "sos",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Door => "door",
            MessageKind::Status => "status",
            MessageKind::Ok => "ok",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The prefix under which a device may publish: `watch/v1/{device_id}/`.
pub fn device_prefix(device_id: &str) -> String {
    format!("{ROOT}/{device_id}/")
}

/// The topic a device publishes one kind of message on.
pub fn device_topic(device_id: &str, kind: MessageKind) -> String {
    format!("{ROOT}/{device_id}/{}", kind.as_str())
}

/// The topic on which the hub asks a device's wearer something (`{"ask":"are_you_ok"}`).
pub fn command_topic(device_id: &str) -> String {
    format!("{ROOT}/{device_id}/cmd")
}

/// The topic on which the hub publishes every change of a resident's alerts.
pub fn alerts_topic(resident_id: i64) -> String {
    format!("{ROOT}/alerts/{resident_id}")
}

/// A native device topic split into its parts; `None` when the topic is not
/// `watch/v1/{device_id}/{last}` with exactly those levels.
pub fn split_device_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (device, last) = rest.split_once('/')?;
    if device.is_empty() || last.is_empty() || last.contains('/') {
        return None;
    }
    Some((device, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_well_formed_device_topics() {
        assert_eq!(split_device_topic("watch/v1/d1/gps"), Some(("d1", "gps")));
        assert_eq!(split_device_topic("watch/v1/d1/gps/x"), None);
        assert_eq!(split_device_topic("watch/v1//gps"), None);
        assert_eq!(split_device_topic("watch/v2/d1/gps"), None);
        assert_eq!(split_device_topic("watch/v1/d1/"), None);
    }

    #[test]
    fn kinds_round_trip() {
        for k in MessageKind::ALL {
            assert_eq!(MessageKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(MessageKind::parse("temperature"), None);
    }
}
