//! Privacy by law (APPI, docs/privacy.md): consent decides whether a resident's devices
//! are heard, every read of a resident's data is logged ([`access`]), stored data is
//! purged by class when its period ends ([`retention`]), and everything of one resident
//! can be handed over in one file ([`export`], written by [`zip`]); secrets the hub
//! must use again are sealed at rest ([`seal`]).
//!
//! Consent itself is enforced by the pipeline, the one owner of the residents it
//! watches: it keeps the set of residents with a current consent beside their rules
//! and refuses the others' messages with reason `no_consent` (see
//! [`crate::pipeline`]).

pub mod access;
pub mod export;
pub mod retention;
pub mod seal;
pub mod zip;

/// What the API needs of privacy settings and services.
#[derive(Clone)]
pub struct Privacy {
    /// Whether a device may be registered for a resident without a current consent.
    pub devices_before_consent: bool,
    pub access: access::AccessLog,
    /// Seals webhook signing secrets before they are stored.
    pub secrets: std::sync::Arc<seal::Sealer>,
    /// The retention job: its settings, its last pass, and asking for one now.
    pub retention: retention::RetentionJob,
}

/// The privacy settings in force; by default devices wait for consent.
#[derive(Debug, Clone)]
pub struct PrivacyConfig {
    pub devices_before_consent: bool,
    pub retention: retention::Retention,
    /// How often retention runs by itself; `None`: only when an admin asks.
    pub retention_every: Option<std::time::Duration>,
    /// The key ring webhook signing secrets are sealed with, if one is configured.
    pub secrets: Option<std::sync::Arc<seal::Sealer>>,
    /// Whether reads go in the access log. No setting of the hub program turns this
    /// off; the benchmark's own build of it does, to measure what the log costs.
    pub read_audit: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            devices_before_consent: false,
            retention: retention::Retention::default(),
            retention_every: Some(retention::DEFAULT_EVERY),
            secrets: None,
            read_audit: true,
        }
    }
}
