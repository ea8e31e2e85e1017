//! Who is connected, and which topics they may publish and subscribe to.
//!
//! Pure functions, so every rule is unit-tested. A device may publish and subscribe
//! only under its own prefix `watch/v1/{device_id}/`; staff and admins may read
//! everything under `watch/v1/` but publish nothing; a family member may read only
//! the alerts topic of their own residents.

use mimamori_protocol::api::Role;
use mimamori_protocol::topic::{alerts_topic, device_prefix};
use mimamori_protocol::DeviceKind;

/// An authenticated MQTT client.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Device {
        id: String,
        resident_id: i64,
        kind: DeviceKind,
    },
    User {
        username: String,
        role: Role,
        resident_ids: Vec<i64>,
    },
}

impl Principal {
    /// The name the client is known by in logs and the connection registry.
    pub fn name(&self) -> &str {
        match self {
            Principal::Device { id, .. } => id,
            Principal::User { username, .. } => username,
        }
    }

    /// Whether this client may publish on `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        if topic.is_empty() || topic.contains(['+', '#']) {
            return false;
        }
        match self {
            Principal::Device { id, .. } => topic.starts_with(&device_prefix(id)),
            Principal::User { .. } => false,
        }
    }

    /// Whether this client may subscribe to `filter` (a shared `$share/group/` prefix is looked through).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let Some(filter) = unshare(filter) else {
            return false;
        };
        if filter.is_empty() {
            return false;
        }
        match self {
            Principal::Device { id, .. } => filter.starts_with(&device_prefix(id)),
            Principal::User {
                role: Role::Admin | Role::Staff,
                ..
            } => filter.starts_with("watch/v1/"),
            Principal::User {
                role: Role::Family,
                resident_ids,
                ..
            } => resident_ids.iter().any(|rid| filter == alerts_topic(*rid)),
        }
    }
}

/// The filter inside a shared subscription `$share/{group}/{filter}`; other filters as they are.
fn unshare(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f),
        None => Some(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Principal {
        Principal::Device {
            id: id.into(),
            resident_id: 1,
            kind: DeviceKind::Motion,
        }
    }

    fn user(role: Role, residents: &[i64]) -> Principal {
        Principal::User {
            username: "u".into(),
            role,
            resident_ids: residents.to_vec(),
        }
    }

    #[test]
    fn a_device_publishes_only_under_its_own_prefix() {
        let d = device("dev-a");
        assert!(d.may_publish("watch/v1/dev-a/motion"));
        assert!(!d.may_publish("watch/v1/dev-b/motion"));
        assert!(!d.may_publish("watch/v1/dev-ab/motion"));
        assert!(!d.may_publish("watch/v1/dev-a"));
        assert!(!d.may_publish("watch/v1/alerts/1"));
        assert!(!d.may_publish("watch/v1/dev-a/+"));
    }

    #[test]
    fn a_device_cannot_read_other_devices() {
        let d = device("dev-a");
        assert!(d.may_subscribe("watch/v1/dev-a/#"));
        assert!(!d.may_subscribe("watch/v1/+/gps"));
        assert!(!d.may_subscribe("#"));
        assert!(!d.may_subscribe("$share/g/watch/v1/dev-b/#"));
    }

    #[test]
    fn users_read_by_role_and_never_publish() {
        let staff = user(Role::Staff, &[]);
        assert!(staff.may_subscribe("watch/v1/#"));
        assert!(staff.may_subscribe("$share/workers/watch/v1/alerts/+"));
        assert!(!staff.may_subscribe("#"));
        assert!(!staff.may_publish("watch/v1/dev-a/sos"));
        let family = user(Role::Family, &[7]);
        assert!(family.may_subscribe("watch/v1/alerts/7"));
        assert!(!family.may_subscribe("watch/v1/alerts/8"));
        assert!(!family.may_subscribe("watch/v1/alerts/+"));
        assert!(!family.may_subscribe("$share/x"));
    }
}
