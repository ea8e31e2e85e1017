//! The baseline: a bare rumqttd configured as the hub's embedded router but without
//! authentication, as a process of its own so its CPU time is measured as the hub's is.
//! `mimamori-bench-broker 127.0.0.1:PORT`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(addr) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        eprintln!("usage: mimamori-bench-broker HOST:PORT");
        return ExitCode::FAILURE;
    };
    let mut broker = rumqttd::Broker::new(mimamori_bench::ingest::bare_config(addr));
    match broker.start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline broker stopped: {e}");
            ExitCode::FAILURE
        }
    }
}
