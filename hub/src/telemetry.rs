//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as JSON
//! lines when `MIMAMORI_LOG_JSON=1`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    // rumqttd 0.20 logs every ordinary disconnect as an ERROR "no-connection id … is
    // already gone" from its router; the edge already logs connections, so that one
    // module is silenced rather than drown real errors.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rumqttd=warn,rumqttd::router::routing=off,sqlx=warn")
    });
    let json = std::env::var("MIMAMORI_LOG_JSON").is_ok_and(|v| v == "1");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests embedding several hubs) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
