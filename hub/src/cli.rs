//! The command line of the `hub` binary, kept in the library so that test and
//! tool binaries can start exactly the same program.

use clap::Parser;

use crate::config::{Cli, Command, DEFAULT_CONFIG};

/// Parses the command line and runs the hub until SIGINT or SIGTERM.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::DefaultConfig) = cli.command {
        print!(
            "{DEFAULT_CONFIG}{}",
            crate::notify::config::DEFAULT_NOTIFY_CONFIG
        );
        return std::process::ExitCode::SUCCESS;
    }
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.resolve()?;
    let hub = crate::Hub::build(config).await?;
    // One line on stdout that people and tests can read the bound ports from.
    let tls = hub
        .mqtt_tls_addr()
        .map(|a| format!(" mqtts={a}"))
        .unwrap_or_default();
    println!(
        "mimamori hub ready: http=http://{} mqtt={}{tls}",
        hub.http_addr(),
        hub.mqtt_addr()
    );
    hub.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
